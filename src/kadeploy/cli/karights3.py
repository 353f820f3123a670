"""karights3: grant, revoke and show deployment rights (reference 2.10, 9; admins only).

CLI room. `-a` → `POST /rights`, `-d` → `DELETE /rights/:user[/:node[/:part]]`,
`-l` → `GET /rights[/:user]`. As sbin/karights3, `-m '*'` and `-p '*'` add
nothing, and a request without nodes (or partitions) is about all of them:
the server's `rights_prepare` leaves `nodes` nil, which `rights_create` and
`rights_delete` read as every node. The listing is sbin/karights3's `print_headers`/`print_rights`
table, each line through `Client#debug` (prefixed `[server] ` with `-M`).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from kadeploy.cli import printing
from kadeploy.cli.common import (
    USER_NAME,
    OptionError,
    add_generic_options,
    new_parser,
    open_session,
    parse_or_finish,
    run_tool,
    with_dry_run,
)
from kadeploy.cli.optionparser import accept
from kadeploy.client.http import Connection
from kadeploy.client.nodes import collect_nodes
from kadeploy.client.session import GenericOptions


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("karights3", "Manage the users' rights on nodes (administrators)")
    add_generic_options(parser)
    group = parser.add_argument_group("karights3 options")
    group.add_argument("-a", "--add", action="store_const", const="add", dest="operation", help="Add some rights")
    group.add_argument("-d", "--delete", action="store_const", const="delete", dest="operation",
                       help="Delete some rights")
    group.add_argument("-l", "--list", "--show-rights", action="store_const", const="list", dest="operation",
                       help="Show the rights of a user")
    group.add_argument("-f", "--file", action="append", dest="node_files", metavar="MACHINELIST",
                       help="A file containing a list of nodes (- means stdin)")
    group.add_argument("-m", "--machine", action="append", dest="machines", metavar="MACHINE",
                       help="A node ('*' = all the nodes)")
    group.add_argument("-p", "--part", action="append", dest="parts", metavar="PARTNAME",
                       help="A partition, e.g. /dev/sda3 ('*' = all the partitions)")
    group.add_argument("-o", "--overwrite-rights", action="store_true",
                       help="Remove the rights of the other (non admin) users on these nodes")
    accept(group.add_argument("-u", "--user", metavar="USERNAME", help="The user"), USER_NAME)  # client.rb parse_user
    return parser


def targets(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """Nodes and partitions from the options; `*` adds none (sbin/karights3 `-m`/`-p`: `... if h != '*'`)."""
    machines = [machine for machine in args.machines or [] if machine.strip() != "*"]
    nodes = collect_nodes(machines, args.node_files)
    parts = [part.strip() for part in args.parts or [] if part.strip() and part.strip() != "*"]
    return nodes, parts


def check_options(args: argparse.Namespace, nodes: Sequence[str], parts: Sequence[str]) -> None:
    """sbin/karights3 `check_options`, with its messages (plus our user-name and node checks)."""
    if args.operation is None:
        raise OptionError("You must choose an operation")
    if args.operation == "list" and nodes:
        raise OptionError("Node list is useless when showing rights of a specific user")
    # no node is not an error for -a/-d: the operation is on all the nodes
    if args.operation in ("add", "delete") and not args.user:
        raise OptionError("You must choose a user")


def _row(user: str, node: str, parts: str) -> str:
    """sbin/karights3: `sprintf("%-15s %-41s %s\\n", user, node, parts)`."""
    return f"{user:<15} {node:<41} {parts}"


def list_lines(rights: dict[str, Any]) -> list[str]:
    """The header, its underline, then one row per (user, node) in the server's order, parts joined by `,`."""
    lines = [_row("User", "Node", "Partitions"), _row("####", "####", "##########")]
    for user, nodes in (rights or {}).items():
        for node, parts in (nodes or {}).items():
            rendered = ",".join(str(part) for part in parts) if isinstance(parts, list) else str(parts)
            lines.append(_row(str(user), str(node), rendered))
    return lines


def run_operation(connection: Connection, args: argparse.Namespace, nodes: list[str], parts: list[str],
                  generic: GenericOptions) -> list[str]:
    """Perform the operation on one server; returns the lines to print (none for a dry run, as Kadeploy3).

    As sbin/karights3 `prepare`/`run`: `nodes` and `partitions` are sent only when some were given.
    """
    if args.operation == "add":
        body: dict[str, Any] = {"username": args.user}
        if nodes:
            body["nodes"] = nodes
        if parts:
            body["partitions"] = parts
        if args.overwrite_rights:
            body["overwrite"] = True
        connection.post("/rights", with_dry_run(body, generic))
        return []
    if args.operation == "delete":
        params: dict[str, Any] = {}
        if nodes:
            params["nodes"] = nodes
        if parts:
            params["partitions"] = parts
        connection.delete(f"/rights/{quote(args.user, safe='')}", with_dry_run(params, generic))
        return []
    path = "/rights" + (f"/{quote(args.user, safe='')}" if args.user else "")
    answer = connection.get(path, with_dry_run(None, generic))
    return [] if generic.dry_run else list_lines(answer if isinstance(answer, dict) else {})


def body(argv: Sequence[str]) -> int:
    parsed = parse_or_finish(build_parser(), argv)
    if parsed is None:
        return 0
    args, generic = parsed
    nodes, parts = targets(args)
    check_options(args, nodes, parts)
    with open_session(generic) as session:
        for connection in session.connections:
            lines = run_operation(connection, args, nodes, parts, generic)
            if lines:
                name = connection.server.name if session.multi else None
                print(printing.debug("\n".join(lines), name), end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool(body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
