"""Node arguments of the tools: `-m` patterns, `-f` files, and the check against a server.

Client room. `-m node-[1-4].c1.testbed` is expanded client side (reference
2); `-f FILE` reads one node per line (`-` is stdin, `#` comments and blank
lines ignored). Before launching, nodes are matched against the server's
`GET /nodes?list=true`: exact names, or a short name that matches exactly one
managed FQDN (`node-1` → `node-1.c1.testbed`, Kadeploy3's "lazy" check made
unambiguous).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TextIO

from kadeploy.client.errors import EXIT_GENERIC, ClientError
from kadeploy.errors import ErrorCode, KadeployError
from kadeploy.nodeset import expand_all, parse_node_file


def read_node_file(name: str, stdin: TextIO | None = None) -> list[str]:
    """Nodes listed in file `name` (`-` = stdin)."""
    if name == "-":
        return parse_node_file((stdin or sys.stdin).read(), "standard input")
    path = Path(name)
    try:
        text = path.read_text()
    except OSError as exc:
        raise KadeployError(ErrorCode.INVALID_FILE, f"The file {name} cannot be read ({exc.strerror})") from None
    return parse_node_file(text, name)


def collect_nodes(machines: Sequence[str] | None, files: Sequence[str] | None, stdin: TextIO | None = None) -> list[str]:
    """All nodes named by `-m` and `-f`, expanded, duplicates dropped, order kept."""
    names: list[str] = list(expand_all(machines or []))
    for file_name in files or []:
        names.extend(read_node_file(file_name, stdin))
    return expand_all(names)


def resolve_nodes(requested: Iterable[str], managed: Iterable[str]) -> tuple[list[str], list[str]]:
    """Match requested names to managed hostnames: (resolved, unknown)."""
    managed_list = list(managed)
    managed_set = set(managed_list)
    resolved: list[str] = []
    unknown: list[str] = []
    for name in requested:
        if name in managed_set:
            resolved.append(name)
            continue
        candidates = [host for host in managed_list if host.startswith(name + ".")]
        if len(candidates) == 1:
            resolved.append(candidates[0])
        else:
            unknown.append(name)
    return list(dict.fromkeys(resolved)), unknown


def check_nodes(requested: Sequence[str], managed: Iterable[str], server_name: str) -> list[str]:
    """Resolved hostnames, or client.rb `launch`'s error naming the nodes the server does not manage
    ("The nodes a, b does not belongs to any server", its words, exit status 1)."""
    resolved, unknown = resolve_nodes(requested, managed)
    if unknown:
        raise ClientError(f"The nodes {', '.join(unknown)} does not belongs to any server", EXIT_GENERIC)
    return resolved
