"""kareboot3: reboot nodes, possibly into the deployment or a recorded environment (reference 2.5).

CLI room. Builds the `POST /reboot` body; Kadeploy3's rules are checked
before contacting the server.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from kadeploy.cli.common import (
    BLOCK_DEVICE,
    NUMBER,
    PARTITION_NUMBER,
    USER_NAME,
    OptionError,
    add_generic_options,
    add_pxe_options,
    add_workflow_options,
    key_reference,
    new_parser,
    pxe_params,
    run_tool,
    workflow_params,
    workflow_tool,
)
from kadeploy.cli.optionparser import accept
from kadeploy.client.run import WorkflowRequest

REBOOT_KINDS = ("set_pxe", "simple", "deploy_env", "recorded_env")
LEVELS = ("soft", "hard", "very_hard")


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("kareboot3", "Reboot nodes")
    add_generic_options(parser)
    add_workflow_options(parser)
    group = parser.add_argument_group("Reboot options")
    accept(group.add_argument("-b", "--block-device", metavar="BLOCKDEVICE",
                              help="Specify the block device to use"), BLOCK_DEVICE)
    group.add_argument("-c", "--check-destructive-tag", action="store_true",
                       help="Refuse to reboot nodes whose last deployed environment is destructive")
    group.add_argument("-e", "--env-name", metavar="ENVNAME", help="Name of the recorded environment")
    group.add_argument("-k", "--key", nargs="?", const="", default=None, metavar="FILE",
                       help="Public key to copy in the root's authorized_keys (deploy_env only)")
    group.add_argument("-l", "--op-level", choices=LEVELS, metavar="VALUE",
                       help="Operation's level (soft, hard, very_hard)")
    accept(group.add_argument("-p", "--partition-number", metavar="NUMBER",
                              help="Specify the partition number to use"), PARTITION_NUMBER)
    group.add_argument("-r", "--reboot-kind", choices=REBOOT_KINDS, default="simple", metavar="REBOOT_KIND",
                       help="Reboot kind (set_pxe, simple, deploy_env, recorded_env)")
    accept(group.add_argument("-u", "--env-user", metavar="USERNAME",
                              help="The user that owns the recorded environment"), USER_NAME)
    accept(group.add_argument("--env-version", metavar="NUMBER",
                              help="Version number of the recorded environment"), NUMBER)
    group.add_argument("--vlan", metavar="VLANID", help="Set the VLAN")
    add_pxe_options(group)
    group.add_argument("--reboot-classical-timeout", metavar="V",
                       help="Overload the default timeout for classical reboots ('n' = number of nodes)")
    group.add_argument("--secure", action=argparse.BooleanOptionalAction, default=False,
                       help="Use a secure connection to export files to the server")
    return parser


def check_reboot_rules(args: argparse.Namespace) -> None:
    """Kadeploy3's kareboot3 rules, with their messages."""
    kind = args.reboot_kind
    if kind == "set_pxe" and not args.set_pxe_profile:
        raise OptionError("The set_pxe reboot must be used with the -w option")
    if kind == "recorded_env":
        if not args.env_name:
            raise OptionError("An environment must be specified (-e) with the recorded_env reboot")
        if not args.partition_number:
            raise OptionError("A partition number must be specified (-p) with the recorded_env reboot")
    elif args.env_name or args.env_user or args.env_version is not None:
        raise OptionError("The -e, -u and --env-version options can only be used with the recorded_env reboot")
    if args.key is not None and kind != "deploy_env":
        raise OptionError("The -k option can only be used with the deploy_env reboot")


def build_request(args: argparse.Namespace) -> WorkflowRequest:
    check_reboot_rules(args)
    params, local_files = workflow_params(args)
    params["kind"] = args.reboot_kind
    if args.op_level:
        params["level"] = args.op_level
    if args.check_destructive_tag:
        params["check_destructive"] = True
    if args.env_name:
        environment: dict[str, Any] = {"kind": "database", "name": args.env_name}
        if args.env_user:
            environment["user"] = args.env_user
        if args.env_version is not None:  # the options' patterns were checked while parsing
            environment["version"] = int(args.env_version)
        params["environment"] = environment
    if args.partition_number:  # /^\d*$/: an empty -p sends none
        params["deploy_partition"] = int(args.partition_number)
    if args.block_device is not None:
        params["block_device"] = args.block_device
    pxe, pxe_files = pxe_params(args)
    if pxe is not None:
        params["pxe"] = pxe
        local_files += pxe_files
    key, key_files = key_reference(args.key)
    if key is not None:
        params["ssh_authorized_keys"] = key
        local_files += key_files
    if args.vlan:
        params["vlan"] = args.vlan
    if args.reboot_classical_timeout:
        params["timeout_reboot_classical"] = args.reboot_classical_timeout
    return WorkflowRequest("Reboot", "POST", "/reboot", params, list(dict.fromkeys(local_files)), args.secure)


def body(argv: Sequence[str]) -> int:
    return workflow_tool(argv, build_parser(), build_request)


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool(body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
