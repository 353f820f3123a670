"""Node ranges: "gdx-[1-12,20].site" <-> list of hostnames.

Built on ClusterShell's NodeSet for folding and expansion, with Kadeploy3's
hostname syntax check (`[A-Za-z0-9.-[],]`) and node-file parsing (comments,
blank lines). Imports nothing from other rooms.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ClusterShell.NodeSet import NodeSet, NodeSetParseError

from kadeploy.errors import ErrorCode, KadeployError

_HOSTNAME_PATTERN = re.compile(r"^[A-Za-z0-9.\-\[\],]+$")


def expand(pattern: str) -> list[str]:
    """Expand one node pattern (`node-[1-4].c1.testbed`) into hostnames, in order."""
    pattern = pattern.strip()
    if not pattern or not _HOSTNAME_PATTERN.match(pattern):
        raise KadeployError(ErrorCode.INVALID_NODELIST, f"Invalid node name or range: {pattern!r}")
    if "[" not in pattern:
        return [pattern]
    try:
        return list(NodeSet(pattern))
    except NodeSetParseError as exc:
        raise KadeployError(ErrorCode.INVALID_NODELIST, f"Invalid node range {pattern!r}: {exc}") from None


def expand_all(patterns: Iterable[str]) -> list[str]:
    """Expand several patterns; duplicates are dropped, first occurrence order kept."""
    seen: dict[str, None] = {}
    for pattern in patterns:
        for name in expand(pattern):
            seen.setdefault(name, None)
    return list(seen)


def fold(nodes: Iterable[str]) -> str:
    """Fold hostnames into the shortest range notation (`node-[1-3].c1`)."""
    names = list(nodes)
    if not names:
        return ""
    return str(NodeSet.fromlist(names))


def parse_node_file(text: str, source: str = "node file") -> list[str]:
    """Parse a node file: one node (or range) per line, `#` comments and blank lines ignored."""
    patterns: list[str] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            patterns.extend(expand(line))
        except KadeployError as exc:
            raise KadeployError(ErrorCode.INVALID_NODELIST, f"{source}, line {lineno}: {exc.message}") from None
    return expand_all(patterns)


def sort_key(hostname: str) -> tuple:
    """Natural sort key so that node-2 comes before node-10."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", hostname))
