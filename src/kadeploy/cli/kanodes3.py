"""kanodes3: node states and running operations, printed as YAML (reference 2.8).

CLI room. `-s` → `GET /nodes` (optionally restricted to `-m/-f` nodes);
`-d/-r/-p/-c` → `GET /deployment|reboot|power|console[/wid]`; `-a` all of them.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from kadeploy import psych
from kadeploy.cli import printing
from kadeploy.cli.common import (
    OptionError,
    add_generic_options,
    add_node_options,
    new_parser,
    nodes_from_args,
    open_session,
    parse_or_finish,
    run_tool,
    with_dry_run,
)
from kadeploy.client.session import Session

STATUS_PATHS = {"deploy": "/deployment", "reboot": "/reboot", "power": "/power", "console": "/console"}


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("kanodes3", "Get information about nodes and running operations")
    add_generic_options(parser)
    add_node_options(parser)
    group = parser.add_argument_group("kanodes3 options")
    group.add_argument("-s", "--get-nodes-state", action="store_const", const="state", dest="operation",
                       help="Get the state of the nodes (state, last user, last environment)")
    group.add_argument("-d", "--get-deployments-status", action="store_const", const="deploy", dest="operation",
                       help="Get the status of running deployments")
    group.add_argument("-r", "--get-reboots-status", action="store_const", const="reboot", dest="operation",
                       help="Get the status of running reboot operations")
    group.add_argument("-p", "--get-powers-status", action="store_const", const="power", dest="operation",
                       help="Get the status of running power operations")
    group.add_argument("-c", "--get-consoles-status", action="store_const", const="console", dest="operation",
                       help="Get the status of open consoles")
    group.add_argument("-a", "--get-all-status", action="store_const", const="all", dest="operation",
                       help="Get the status of all running operations")
    group.add_argument("-w", "--workflow-id", metavar="WID", help="Only this workflow (with the status options)")
    return parser


def check_options(args: argparse.Namespace, nodes: Sequence[str]) -> None:
    if args.operation is None:
        raise OptionError("You must choose an operation")
    if args.operation != "state" and nodes:
        raise OptionError("Node list is useless when gathering statuses")
    if args.operation == "state" and args.workflow_id:
        raise OptionError("Workflow ID is useless when gathering node's states")
    if args.operation == "all" and args.workflow_id:
        raise OptionError("Workflow ID cannot be used with -a/--get-all-status")


def node_states(answer: Any) -> dict[str, Any]:
    """`GET /nodes` as Kadeploy3's `Nodes.get_states` hash: a node never deployed has nil (nodes.rb)."""
    states: dict[str, Any] = {}
    for node, state in (answer or {}).items():
        if isinstance(state, dict):
            environment = state.get("environment") or {}
            state = {"state": state.get("state"), "user": state.get("user"),
                     "environment": {key: environment.get(key) for key in ("name", "version", "user")}}
        states[str(node)] = state
    return states


def status_text(operation: str, answers: Sequence[Any]) -> str:
    """What Kadeploy3's kanodes3 prints for one server's answers (one per kind asked).

    A single kind is the server's own `to_yaml` of the Ruby objects it built
    (bin/kanodes3 `get(path,params,:yaml,false)`): the node states hash has
    string keys (common/nodes.rb `get_states`), workflow statuses have symbol
    keys (server/kaworkflow.rb `work_get`, server/kaconsole.rb `console_get`).
    `-a` is the client's `to_yaml` of the JSON answers concatenated: string keys.
    """
    if operation == "state":
        return psych.dump(node_states(answers[0]))
    if operation == "all":
        merged: list[Any] = []
        for answer in answers:
            merged += list(answer or [])
        return psych.dump(merged)
    return psych.dump(psych.symbolize_keys(answers[0]))


def gather(session: Session, args: argparse.Namespace, nodes: Sequence[str]) -> list[tuple[Any, list[Any]]]:
    """Each server's answers, in Kadeploy3's request order (deploy, reboot, power, console for -a)."""
    generic = session.options
    gathered: list[tuple[Any, list[Any]]] = []
    for connection in session.connections:
        if args.operation == "state":
            answer = connection.get("/nodes", with_dry_run({"nodes": list(nodes) or None}, generic))
            gathered.append((connection, [answer]))
            continue
        kinds = list(STATUS_PATHS) if args.operation == "all" else [args.operation]
        answers = []
        for kind in kinds:
            path = STATUS_PATHS[kind] + (f"/{args.workflow_id}" if args.workflow_id else "")
            answers.append(connection.get(path, with_dry_run(None, generic)))
        gathered.append((connection, answers))
    return gathered


def body(argv: Sequence[str]) -> int:
    parsed = parse_or_finish(build_parser(), argv)
    if parsed is None:
        return 0
    args, generic = parsed
    nodes = nodes_from_args(args)
    check_options(args, nodes)
    with open_session(generic) as session:
        gathered = gather(session, args, nodes)
        if generic.dry_run:  # Kadeploy3 prints nothing back from a dry run
            return 0
        for connection, answers in gathered:
            name = connection.server.name if session.multi else None
            print(printing.debug(status_text(args.operation, answers), name), end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool(body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
