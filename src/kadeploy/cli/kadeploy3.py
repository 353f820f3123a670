"""kadeploy3: deploy an environment on nodes (reference 2.3).

CLI room. Builds the `POST /deployment` body from Kadeploy3's options and
hands it to `kadeploy.client.run`. Our additions: `--json`, `--fail-on-ko`,
`--progress`, `--resume`, `--retry-failed`, `--min-success`, `--completion`.
"""

from __future__ import annotations

import argparse
import copy
import re
from collections.abc import Sequence
from typing import Any

import httpx
import yaml

from kadeploy.cli.common import (
    BLOCK_DEVICE,
    NUMBER,
    PARTITION_NUMBER,
    USER_NAME,
    OptionError,
    add_generic_options,
    add_pxe_options,
    add_workflow_options,
    file_reference,
    key_reference,
    pxe_params,
    read_text_file,
    run_tool,
    workflow_params,
    workflow_tool,
)
from kadeploy.cli.optionparser import accept, ruby_pattern
from kadeploy.catalog.environment import parse_environment
from kadeploy.client.run import WorkflowRequest
from kadeploy.steps.macrosteps import DEPLOY_INTERFACES, MACROSTEPS

_IMPLEMENTATION = r"\w+:\d+:\d+"
FORCE_STEPS_PATTERN = re.compile(
    rf"^\w+\|{_IMPLEMENTATION}(,{_IMPLEMENTATION})*(&\w+\|{_IMPLEMENTATION}(,{_IMPLEMENTATION})*)*$"
)


def build_parser() -> argparse.ArgumentParser:
    from kadeploy.cli.common import new_parser

    parser = new_parser("kadeploy3", "Deploy an environment on nodes")
    add_generic_options(parser)
    add_workflow_options(parser)
    general = parser.add_argument_group("General options")
    general.add_argument("-a", "--env-file", metavar="ENVFILE", help="File containing the environment description")
    accept(general.add_argument("-b", "--block-device", metavar="BLOCKDEVICE",
                                help="Specify the block device to use"), BLOCK_DEVICE)
    accept(general.add_argument("-c", "--boot-partition", metavar="NUMBER",
                                help="Specify the number of the partition to boot on (use 0 to boot on the MBR)"),
           NUMBER)
    general.add_argument("-e", "--env-name", metavar="ENVNAME", help="Name of the recorded environment")
    general.add_argument("-k", "--key", nargs="?", const="", default=None, metavar="FILE",
                         help="Public key to copy in the root's authorized_keys (default ~/.ssh/authorized_keys)")
    accept(general.add_argument("-p", "--partition-number", metavar="NUMBER",
                                help="Specify the partition number to use"), PARTITION_NUMBER)
    general.add_argument("-r", "--reformat-tmp", metavar="FSTYPE",
                         help="Reformat the /tmp partition with the given filesystem type")
    accept(general.add_argument("-u", "--env-user", metavar="USERNAME",
                                help="The user that owns the recorded environment"), USER_NAME)
    accept(general.add_argument("--env-version", metavar="NUMBER",
                                help="Version number of the recorded environment"), NUMBER)
    general.add_argument("--vlan", metavar="VLANID", help="Set the VLAN")
    add_pxe_options(general)
    advanced = parser.add_argument_group("Advanced options")
    advanced.add_argument("--no-kexec", action="store_true", help="Perform classical reboots instead of kexecs")
    advanced.add_argument("--disable-bootloader-install", action="store_true",
                          help="Disable the automatic installation of a bootloader for a Linux based environment")
    advanced.add_argument("--disable-disk-partitioning", action="store_true", help="Disable the disk partitioning")
    advanced.add_argument("--reboot-classical-timeout", metavar="V",
                          help="Overload the default timeout for classical reboots ('n' = number of nodes)")
    advanced.add_argument("--reboot-kexec-timeout", metavar="V",
                          help="Overload the default timeout for kexec reboots ('n' = number of nodes)")
    accept(advanced.add_argument("--force-steps", metavar="STRING",
                                 help="Replace the automaton: Macro|Impl:retries:timeout[,...]&Macro|... "
                                      f"(implementations: {', '.join(MACROSTEPS.names())})"),
           ruby_pattern(r"^SetDeploymentEnv\|(?:\w+:\d+:\d+,?)+&BroadcastEnv\|(?:\w+:\d+:\d+,?)+"
                        r"&BootNewEnv\|(?:\w+:\d+:\d+,?)+$"))  # bin/kadeploy3's pattern
    advanced.add_argument("--secure", action=argparse.BooleanOptionalAction, default=False,
                          help="Use a secure connection to export files to the server")
    extra = parser.add_argument_group("Resume and automatic retries")
    extra.add_argument("--resume", metavar="WID", help="Resume the failed or breakpointed nodes of a deployment")
    extra.add_argument("--retry-failed", metavar="R", type=_non_negative_int,
                       help="Redeploy failed nodes up to R more times")
    extra.add_argument("--min-success", metavar="RATIO", type=_ratio,
                       help="Stop retrying once this fraction (0..1) of the nodes is deployed")
    return parser


def _non_negative_int(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"a non-negative integer is expected, got {value!r}")
    return int(value)


def _ratio(value: str) -> float:
    try:
        ratio = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number between 0 and 1 is expected, got {value!r}") from None
    if not 0.0 <= ratio <= 1.0:
        raise argparse.ArgumentTypeError(f"a number between 0 and 1 is expected, got {value!r}")
    return ratio


def parse_force_steps(text: str) -> dict[str, list[dict[str, Any]]]:
    """--force-steps into the `automata` parameter, with Kadeploy3's checks and messages."""
    if not FORCE_STEPS_PATTERN.match(text):
        raise OptionError(f"Invalid --force-steps value '{text}' (Macro|Impl:retries:timeout[,...][&...] expected)")
    automata: dict[str, list[dict[str, Any]]] = {}
    for macro_text in text.split("&"):
        macro, _, implementations = macro_text.partition("|")
        if macro not in DEPLOY_INTERFACES:
            raise OptionError(f"Invalid macrostep kind '{macro}'")
        if macro in automata:
            raise OptionError(f"The macrostep '{macro}' is given twice in --force-steps")
        steps = []
        for implementation in implementations.split(","):
            name, retries, timeout = implementation.split(":")
            if not name.startswith(macro) or name == macro:
                raise OptionError(f"Invalid macrostep instance '{name}'")
            steps.append({"name": name, "retries": int(retries), "timeout": int(timeout)})
        automata[macro] = steps
    return automata


def load_env_file(name: str) -> tuple[dict[str, Any], list[str]]:
    """-a: the anonymous environment description, validated locally; local files made absolute."""
    if name.startswith(("http://", "https://")):
        try:
            response = httpx.get(name, timeout=30.0, verify=False, follow_redirects=True)
        except httpx.HTTPError as exc:
            raise OptionError(f"Cannot fetch the environment file {name}: {exc}") from None
        if response.status_code != 200:
            raise OptionError(f"Cannot fetch the environment file {name}: HTTP {response.status_code}")
        text = response.text
    else:
        path = name[len("server://"):] if name.startswith("server://") else name
        path = path[len("local://"):] if path.startswith("local://") else path
        text = read_text_file(path)
    if "\x00" in text:
        raise OptionError(f"The file {name} should be in plain text format")
    try:
        description = yaml.safe_load(text)
    except yaml.YAMLError:
        raise OptionError(f"Invalid YAML file '{name}'") from None
    validate_environment(text, name)
    description = copy.deepcopy(description)
    local_files: list[str] = []

    def take(holder: dict[str, Any], key: str) -> None:
        value = holder.get(key)
        if isinstance(value, str) and value:
            reference, local = file_reference(value)
            holder[key] = reference
            if local:
                local_files.append(reference)

    take(description["image"], "file")
    if isinstance(description.get("preinstall"), dict):
        take(description["preinstall"], "archive")
    for postinstall in description.get("postinstalls") or []:
        if isinstance(postinstall, dict):
            take(postinstall, "archive")
    return description, local_files


def validate_environment(text: str, source: str) -> None:
    """Local check of an environment description (reference 4), before bothering the server.

    The catalog room's parser is the one authority: it raises KadeployError
    INVALID_ENVIRONMENT naming the field.
    """
    parse_environment(text, source)


def build_request(args: argparse.Namespace) -> WorkflowRequest:
    """The POST /deployment body (reference 1.4) for parsed options."""
    params, local_files = workflow_params(args)
    if args.env_file and args.env_name:
        raise OptionError("You must choose only one environment (-a or -e)")
    if args.env_file:
        description, env_files = load_env_file(args.env_file)
        params["environment"] = {"kind": "anonymous", **description}
        local_files += env_files
    elif args.env_name:
        environment: dict[str, Any] = {"kind": "database", "name": args.env_name}
        if args.env_user:  # the options' patterns were checked while parsing
            environment["user"] = args.env_user
        if args.env_version is not None:
            environment["version"] = int(args.env_version)
        params["environment"] = environment
    elif not args.resume:
        raise OptionError("You must choose an environment")
    if args.block_device is not None:
        params["block_device"] = args.block_device
    if args.partition_number:  # /^\d*$/: an empty -p sends none
        params["deploy_partition"] = int(args.partition_number)
    if args.boot_partition is not None:
        params["boot_partition"] = int(args.boot_partition)
    key, key_files = key_reference(args.key)
    if key is not None:
        params["ssh_authorized_keys"] = key
        local_files += key_files
    if args.reformat_tmp:
        params["reformat_tmp_partition"] = args.reformat_tmp
    if args.vlan:
        params["vlan"] = args.vlan
    pxe, pxe_files = pxe_params(args)
    if pxe is not None:
        params["pxe"] = pxe
        local_files += pxe_files
    if args.no_kexec:
        params["disable_kexec"] = True
    if args.disable_bootloader_install:
        params["disable_bootloader_install"] = True
    if args.disable_disk_partitioning:
        params["disable_disk_partitioning"] = True
    if args.reboot_classical_timeout:
        params["timeout_reboot_classical"] = args.reboot_classical_timeout
    if args.reboot_kexec_timeout:
        params["timeout_reboot_kexec"] = args.reboot_kexec_timeout
    if args.force_steps:
        params["automata"] = parse_force_steps(args.force_steps)
    if args.resume:
        params["resume"] = args.resume
    if args.retry_failed is not None:
        params["retry_failed"] = args.retry_failed
    if args.min_success is not None:
        params["min_success"] = args.min_success
    return WorkflowRequest(
        operation="Deployment",
        method="POST",
        path="/deployment",
        params=params,
        local_files=list(dict.fromkeys(local_files)),
        secure_export=args.secure,
    )


def body(argv: Sequence[str]) -> int:
    return workflow_tool(argv, build_parser(), build_request)


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool(body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
