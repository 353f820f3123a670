"""What every user tool shares: argparse with Kadeploy3's options and messages, error handling.

CLI room; imports `kadeploy.client`. Option names and wording follow
Kadeploy3's `client.rb` (reference 2.1, 2.2). A user mistake prints one line
on stderr and exits with the documented status, never a traceback.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import yaml

from kadeploy.cli.optionparser import OptionParseError, accept, normalize, ruby_pattern
from kadeploy.client.errors import EXIT_GENERIC, ClientError, exit_status_of
from kadeploy.client.export import is_local_file, local_path
from kadeploy.client.nodes import collect_nodes
from kadeploy.client.run import WorkflowOptions
from kadeploy.client.session import GenericOptions, Session
from kadeploy.errors import KadeployError

# client.rb's shared argument patterns (parse_env_user/parse_user, parse_env_version, parse_block_device,
# parse_deploy_part), declared on the options with optionparser.accept
USER_NAME = ruby_pattern(r"^\w+$")
NUMBER = ruby_pattern(r"^\d+$")
BLOCK_DEVICE = ruby_pattern(r"^[\w/]+$")
PARTITION_NUMBER = ruby_pattern(r"^\d*$")
PASSWORD_PROMPT = object()
KEY_DEFAULT = ""


class OptionError(ClientError):
    """A wrong option or option combination (Kadeploy3 exits 1 for those)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_GENERIC)


class KaArgumentParser(argparse.ArgumentParser):
    """argparse reading the command line as Kadeploy3's Ruby OptionParser does (`kadeploy.cli.optionparser`).

    Errors are reported as Kadeploy3 does (`Option parsing error: ...`, exit 1)
    instead of argparse's usage and exit 2.
    """

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        try:
            words = normalize(self, list(sys.argv[1:] if args is None else args))
        except OptionParseError as error:
            raise OptionError(f"Option parsing error: {error}") from None
        return super().parse_known_args(words, namespace)

    def error(self, message: str) -> NoReturn:
        raise OptionError(f"Option parsing error: {message}")


def new_parser(prog: str, description: str) -> KaArgumentParser:
    return KaArgumentParser(
        prog=prog,
        description=description,
        epilog="Contact: kadeploy3-users@lists.gforge.inria.fr",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # abbreviations are OptionParser's, resolved before argparse
    )


# -- generic options (2.1) -----------------------------------------------------------


def add_generic_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Generic options")
    group.add_argument("-v", "--version", action="store_true", dest="get_version", help="Get the server's version")
    group.add_argument("-I", "--server-info", action="store_true",
                       help="Get information about the server's configuration")
    group.add_argument("-M", "--multi-server", action="store_true", help="Activate the multi-server mode")
    group.add_argument("-H", "--debug-http", action=argparse.BooleanOptionalAction, default=False,
                       help="Debug HTTP communications with the server (can be redirected to the fd #4)")
    group.add_argument("-S", "--server", metavar="STRING", help="Specify the Kadeploy server to use")
    group.add_argument("--dry-run", action=argparse.BooleanOptionalAction, default=False,
                       help="Perform a dry run: the server checks the request as it would check the real one "
                            "(options, nodes, environment, files, rights, busy nodes) and answers the same "
                            "errors, but changes nothing and starts nothing; on success nothing is printed "
                            "(-H shows what the server would have done)")
    group.add_argument("--password", nargs="?", const=PASSWORD_PROMPT, default=None, metavar="PASSWORD",
                       help="Provide a password for HTTP Basic authentication (read from STDIN if not specified)")
    group.add_argument("--completion", choices=["bash"], help="Print a shell completion script and exit")


def with_dry_run(params: Mapping[str, Any] | None, generic: GenericOptions) -> dict[str, Any]:
    """A tool's request parameters, with `dry_run` under --dry-run (Kadeploy3 sends it with each tool's request)."""
    merged = dict(params or {})
    if generic.dry_run:
        merged["dry_run"] = True
    return merged


def generic_from_args(args: argparse.Namespace) -> GenericOptions:
    password = args.password
    if password is PASSWORD_PROMPT:
        if not sys.stdin.isatty():
            raise OptionError("Error: no password specified and invalid STDIN")
        password = getpass.getpass("Password: ")
    return GenericOptions(
        server=args.server,
        multi_server=args.multi_server,
        debug_http=args.debug_http,
        dry_run=args.dry_run,
        password=password,
        get_version=args.get_version,
        server_info=args.server_info,
    )


# -- node options ------------------------------------------------------------------------


def add_node_options(parser: argparse.ArgumentParser, group_title: str = "Nodes") -> None:
    group = parser.add_argument_group(group_title)
    group.add_argument("-f", "--file", action="append", dest="node_files", metavar="MACHINELIST",
                       help="A file containing a list of nodes (- means stdin)")
    group.add_argument("-m", "--machine", action="append", dest="machines", metavar="MACHINE",
                       help="The node to run on (ranges allowed: node-[1-4].site)")


def nodes_from_args(args: argparse.Namespace) -> list[str]:
    return collect_nodes(args.machines, args.node_files)


# -- workflow options (2.2) ---------------------------------------------------------------


def add_workflow_options(parser: argparse.ArgumentParser) -> None:
    add_node_options(parser, "Workflow options")
    group = parser.add_argument_group("Workflow output and behaviour")
    group.add_argument("-d", "--debug-mode", action=argparse.BooleanOptionalAction, default=False,
                       help="Activate the debug mode (can be redirected to the fd #3)")
    group.add_argument("-n", "--output-ko-nodes", metavar="FILENAME",
                       help="File that will contain the nodes on which the operation has not been correctly performed")
    group.add_argument("-o", "--output-ok-nodes", metavar="FILENAME",
                       help="File that will contain the nodes on which the operation has been correctly performed")
    group.add_argument("-s", "--script", metavar="FILE", help="Execute a script at the end of the operation")
    accept(group.add_argument("-V", "--verbose-level", metavar="VALUE", help="Verbose level (between 1 to 5)"),
           ruby_pattern(r"^[0-5]$"))  # client.rb parse_verbose
    group.add_argument("--write-workflow-id", metavar="FILE", help="Write the workflow id in a file")
    group.add_argument("--wait", action=argparse.BooleanOptionalAction, default=True,
                       help="Wait the end of the operation, set by default")
    group.add_argument("--force", action=argparse.BooleanOptionalAction, default=False,
                       help="Allow to deploy even on the nodes tagged as currently used")
    accept(group.add_argument("--breakpoint", metavar="STEP",
                              help="Set a breakpoint just before lauching the given micro-step (macrostep:microstep)"),
           ruby_pattern(r"^\w+(?::\w+)?$"))  # client.rb parse_breakpoint
    group.add_argument("--custom-steps", "--set-custom-operations", metavar="FILE", dest="custom_steps",
                       help="Add some custom operations defined in a file")
    group.add_argument("--hook", action=argparse.BooleanOptionalAction, default=False,
                       help="Ask the server to run its end-of-operation hook")
    extra = parser.add_argument_group("Beyond Kadeploy3")
    extra.add_argument("--json", metavar="FILE", dest="json_file",
                       help="Write a machine-readable result (per node state, step, error) to FILE (- = stdout)")
    extra.add_argument("--fail-on-ko", action="store_true",
                       help="Exit with status 1 when some nodes failed (Kadeploy3 exits 0)")
    extra.add_argument("--progress", action=argparse.BooleanOptionalAction, default=False,
                       help="Live progress display under the output, on a terminal only (off by default)")


def check_workflow_options(args: argparse.Namespace, nodes: Sequence[str]) -> None:
    """Kadeploy3's ClientWorkflow.check_options, with its messages."""
    if not nodes:
        raise OptionError("No node is chosen")
    ok_file, ko_file = args.output_ok_nodes, args.output_ko_nodes
    if ok_file and ok_file == ko_file:
        raise OptionError("The files used for the output of the OK and the KO nodes cannot be the same")
    if not args.wait and (ok_file or ko_file):
        raise OptionError("-o/--output-ok-nodes and/or -n/--output-ko-nodes cannot be used with --no-wait")
    if args.verbose_level is not None and not 1 <= int(args.verbose_level) <= 5:  # /^[0-5]$/ checked already
        raise OptionError("Invalid verbose level")
    if args.script is not None:
        script = Path(args.script)
        if not script.is_file() or not os.access(script, os.R_OK):
            raise OptionError(f"The file {args.script} cannot be read")
        if not os.access(script, os.X_OK):
            raise OptionError(f"The file {args.script} must be executable")
    for name in (ok_file, ko_file, args.write_workflow_id):
        if name:
            _check_output_file(name)


def _check_output_file(name: str) -> None:
    """Kadeploy3 creates -o/-n/--write-workflow-id files at parse time: fail early if it cannot."""
    try:
        Path(name).open("w").close()
    except OSError:
        raise OptionError(f"Cannot create the file '{name}'") from None


def workflow_params(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    """Generic launch parameters (reference 1.4) and the local files custom steps need."""
    params: dict[str, Any] = {}
    local_files: list[str] = []
    if args.debug_mode:
        params["debug"] = True
    if args.verbose_level is not None:
        params["verbose_level"] = int(args.verbose_level)
    if args.force:
        params["force"] = True
    if args.breakpoint:
        params["breakpoint"] = args.breakpoint
    if args.hook:
        params["hook"] = True
    if args.custom_steps:
        params["custom_operations"], local_files = load_custom_operations(args.custom_steps)
    return params, local_files


def workflow_options(args: argparse.Namespace, generic: GenericOptions) -> WorkflowOptions:
    return WorkflowOptions(
        wait=args.wait,
        dry_run=generic.dry_run,
        wid_file=args.write_workflow_id,
        ok_file=args.output_ok_nodes,
        ko_file=args.output_ko_nodes,
        json_file=args.json_file,
        script=str(Path(args.script).resolve()) if args.script else None,
        fail_on_ko=args.fail_on_ko,
        progress=args.progress,
        debug=args.debug_mode,
    )


# -- files -------------------------------------------------------------------------------


def read_text_file(name: str) -> str:
    try:
        return Path(name).read_text()
    except OSError:
        raise OptionError(f"The file {name} cannot be read") from None


def load_yaml_file(name: str) -> Any:
    text = read_text_file(name)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise OptionError(f"Invalid YAML file '{name}': {exc}".splitlines()[0]) from None


def file_reference(name: str) -> tuple[str, bool]:
    """A file argument as sent to the server: (reference, must_export). Local → absolute path."""
    if is_local_file(name):
        path = local_path(name)
        if not path.exists() or not os.access(path, os.R_OK):
            raise OptionError(f"The file {name} cannot be read")
        return str(path), True
    scheme = name.split("://", 1)[0].lower()
    if scheme not in ("server", "http", "https"):
        raise OptionError(f"Invalid protocol '{scheme}'")
    return name, False


def load_custom_operations(name: str) -> tuple[dict[str, Any], list[str]]:
    """--custom-steps: YAML {macro: {micro: {pre-ops|post-ops|substitute: [ops]}}}; local files exported."""
    data = load_yaml_file(name)
    if not isinstance(data, dict):
        raise OptionError(f"Invalid file format '{name}': a mapping of macro-steps is expected")
    local_files: list[str] = []
    for macro, micros in data.items():
        if not isinstance(micros, dict):
            raise OptionError(f"Invalid file format '{name}': [{macro}] must map micro-steps to operations")
        for micro, ops in micros.items():
            if not isinstance(ops, dict):
                raise OptionError(f"Invalid file format '{name}': [{macro}/{micro}] must be a mapping")
            for kind, actions in ops.items():
                if kind == "override":
                    continue
                if not isinstance(actions, list):
                    raise OptionError(f"Invalid file format '{name}': [{macro}/{micro}/{kind}] must be a list")
                for action in actions:
                    if isinstance(action, dict) and isinstance(action.get("file"), str):
                        reference, local = file_reference(action["file"])
                        action["file"] = reference
                        if local:
                            local_files.append(reference)
    return data, local_files


# -- PXE options (kadeploy3, kareboot3) ------------------------------------------------


def add_pxe_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument("-w", "--set-pxe-profile", metavar="FILE", help="Set the PXE profile (use with caution)")
    group.add_argument("--set-pxe-pattern", metavar="FILE",
                       help="File of 'hostname,value' lines substituted for NODE_SINGULARITY in the PXE profile")
    group.add_argument("-x", "--upload-pxe-files", metavar="FILES",
                       help="Upload a list of files (file1,file2,file3) to the PXE repository (prefix FILES_PREFIX--)")


def pxe_params(args: argparse.Namespace) -> tuple[dict[str, Any] | None, list[str]]:
    """`pxe: {profile, files, singularities}` and the PXE files to export."""
    if args.set_pxe_profile is None:
        if args.upload_pxe_files or args.set_pxe_pattern:
            raise OptionError("The PXE files and pattern options (-x, --set-pxe-pattern) need a PXE profile (-w)")
        return None, []
    pxe: dict[str, Any] = {"profile": read_text_file(args.set_pxe_profile)}
    local_files: list[str] = []
    if args.set_pxe_pattern:
        singularities: dict[str, str] = {}
        for lineno, line in enumerate(read_text_file(args.set_pxe_pattern).splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            node, sep, value = line.partition(",")
            if not sep:
                raise OptionError(f"{args.set_pxe_pattern}, line {lineno}: 'hostname,value' expected")
            singularities[node.strip()] = value.strip()
        pxe["singularities"] = singularities
    if args.upload_pxe_files:
        files = []
        for name in args.upload_pxe_files.split(","):
            reference, local = file_reference(name)
            files.append(reference)
            if local:
                local_files.append(reference)
        pxe["files"] = files
    return pxe, local_files


def key_reference(value: str | None) -> tuple[str | None, list[str]]:
    """-k [FILE]: the key file reference (default ~/.ssh/authorized_keys) and files to export."""
    if value is None:
        return None, []
    name = value or os.path.expanduser("~/.ssh/authorized_keys")
    reference, local = file_reference(name)
    return reference, [reference] if local else []


# -- running a tool ----------------------------------------------------------------------


def run_tool(body: Callable[[list[str]], int], argv: Sequence[str] | None = None) -> int:
    """Run a tool's body; every error a user can cause becomes one stderr line and an exit status."""
    try:
        return body(list(sys.argv[1:] if argv is None else argv))
    except (ClientError, KadeployError) as error:
        sys.stdout.flush()
        sys.stderr.write(f"{error}\n")
        sys.stderr.flush()
        return exit_status_of(error)
    except KeyboardInterrupt:
        sys.stderr.write("\nSIGINT trapped\n")
        return EXIT_GENERIC
    except BrokenPipeError:
        return EXIT_GENERIC


def print_lines(lines: Sequence[str]) -> None:
    for line in lines:
        print(line)


def open_session(generic: GenericOptions) -> Session:
    """Connect to the server(s) of client.conf (reachability checked)."""
    return Session(generic).open()


def version_or_info(session: Session, generic: GenericOptions) -> bool:
    """-v / -I: print and tell the caller to stop."""
    if generic.get_version:
        print_lines(session.version_lines())
        return True
    if generic.server_info:
        print_lines(session.info_lines())
        return True
    return False


def parse_or_finish(parser: argparse.ArgumentParser,
                    argv: Sequence[str]) -> tuple[argparse.Namespace, GenericOptions] | None:
    """Parse the command line; answer `--completion`, `-v` and `-I` (which end the tool) and return None then."""
    from kadeploy.cli.completion import bash_completion

    args = parser.parse_args(argv)
    if getattr(args, "completion", None):
        print(bash_completion(parser), end="")
        return None
    generic = generic_from_args(args)
    if generic.get_version and os.environ.get("KADEPLOY3_VERSION"):
        print(os.environ["KADEPLOY3_VERSION"])  # Kadeploy3's client answers -v so without a server
        return None
    if generic.get_version or generic.server_info:
        with open_session(generic) as session:
            version_or_info(session, generic)
        return None
    return args, generic


def workflow_tool(argv: Sequence[str], parser: argparse.ArgumentParser,
                  build_request: Callable[[argparse.Namespace], Any]) -> int:
    """The body of kadeploy3, kareboot3 and kapower3: options -> request -> polled workflows."""
    from kadeploy.client.run import run_workflows

    parsed = parse_or_finish(parser, argv)
    if parsed is None:
        return 0
    args, generic = parsed
    nodes = nodes_from_args(args)
    check_workflow_options(args, nodes)
    request = build_request(args)
    with open_session(generic) as session:
        return run_workflows(session, request, nodes, workflow_options(args, generic))
