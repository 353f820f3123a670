"""Node ranges: "gdx-[1-12,20].site" <-> list of hostnames.

Built on ClusterShell's NodeSet for folding and expansion, with Kadeploy3's
hostname syntax check (`[A-Za-z0-9.-[],]`) and node-file parsing (comments,
blank lines). Imports nothing from other rooms.

A range is counted arithmetically (`count`) before it is expanded, and refused
when it names more hostnames than `limit` (by default `MAX_NODES`; the server
passes the number of nodes its site has): `node-[1-1000000000].c1` costs a
division, not a billion strings.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from ClusterShell.NodeSet import NodeSet, NodeSetParseError

from kadeploy.errors import ErrorCode, KadeployError

_HOSTNAME_PATTERN = re.compile(r"^[A-Za-z0-9.\-\[\],]+$")
_RANGE_ITEM = re.compile(r"^(\d+)(?:-(\d+)(?:/(\d+))?)?$")

MAX_NODES = 65536
"""Hostnames one expansion may produce when the caller states no bound (a site is smaller)."""

MAX_SHOWN = 10
"""Hostnames an error message lists before saying how many more there are."""


def _invalid(pattern: str, why: str) -> KadeployError:
    return KadeployError(ErrorCode.INVALID_NODELIST, f"Invalid node range {_shown(pattern)}: {why}")


def _shown(pattern: str, width: int = 80) -> str:
    """The pattern as an error names it: quoted, cut to `width` characters (patterns come from users)."""
    return repr(pattern if len(pattern) <= width else pattern[:width] + "...")


def _split_top(pattern: str) -> list[str]:
    """Split at the commas outside brackets (`a,b[1,2]` -> `a`, `b[1,2]`); brackets must pair, unnested."""
    parts: list[str] = []
    start, inside = 0, False
    for index, char in enumerate(pattern):
        if char == "[":
            if inside:
                raise _invalid(pattern, "nested '['")
            inside = True
        elif char == "]":
            if not inside:
                raise _invalid(pattern, "']' without '['")
            inside = False
        elif char == "," and not inside:
            parts.append(pattern[start:index])
            start = index + 1
    if inside:
        raise _invalid(pattern, "'[' without ']'")
    parts.append(pattern[start:])
    return parts


def _group_size(pattern: str, group: str) -> int:
    """How many values `1-10/2,20` names (overlaps counted twice: an upper bound is all we need)."""
    total = 0
    for item in group.split(","):
        match = _RANGE_ITEM.match(item)
        if not match:
            raise _invalid(pattern, f"{_shown(item, 30)} is not a number or a range a-b[/step]")
        try:
            first = int(match[1])
            last = int(match[2]) if match[2] is not None else first
            step = int(match[3]) if match[3] is not None else 1
        except ValueError:  # more digits than Python converts
            raise _invalid(pattern, "a bound has too many digits") from None
        if last < first or step < 1:
            raise _invalid(pattern, f"{_shown(item, 30)} is an empty range")
        total += (last - first) // step + 1
    return total


def count(pattern: str) -> int:
    """An upper bound on the hostnames `pattern` expands to, computed without expanding it.

    Exact unless the pattern names a hostname twice. Raises error 2 for a malformed range.
    """
    total = 0
    for element in _split_top(pattern.strip()):
        size = 1
        for group in re.findall(r"\[([^\]]*)\]", element):
            size *= _group_size(pattern, group)
        total += size
    return total


def _too_many(what: str, names: int, limit: int, limit_name: str) -> KadeployError:
    return KadeployError(ErrorCode.INVALID_NODELIST,
                         f"Invalid node range {what}: it names {names} nodes, more than {limit_name} ({limit})")


def expand(pattern: str, limit: int = MAX_NODES, limit_name: str = "one request may name") -> list[str]:
    """Expand one node pattern (`node-[1-4].c1.testbed`) into hostnames, in order.

    A pattern naming more than `limit` hostnames is refused (error 2, naming it) before any is made.
    """
    pattern = pattern.strip()
    if not pattern or not _HOSTNAME_PATTERN.match(pattern):
        raise KadeployError(ErrorCode.INVALID_NODELIST, f"Invalid node name or range: {_shown(pattern)}")
    if "[" not in pattern and "]" not in pattern:
        return [pattern]
    names = count(pattern)
    if names > limit:
        raise _too_many(_shown(pattern), names, limit, limit_name)
    try:
        return list(NodeSet(pattern))
    except NodeSetParseError as exc:
        raise _invalid(pattern, str(exc)) from None


def expand_all(patterns: Iterable[str], limit: int = MAX_NODES,
               limit_name: str = "one request may name") -> list[str]:
    """Expand several patterns; duplicates are dropped, first occurrence order kept.

    All of them together may name at most `limit` hostnames, counted before any is expanded.
    """
    patterns = [pattern.strip() for pattern in patterns]
    total = 0
    for pattern in patterns:
        if "[" in pattern or "]" in pattern:
            total += count(pattern) if _HOSTNAME_PATTERN.match(pattern) else 0
        else:
            total += 1
        if total > limit:
            what = _shown(pattern) if len(patterns) == 1 else f"list (up to {_shown(pattern)})"
            raise _too_many(what, total, limit, limit_name)
    seen: dict[str, None] = {}
    for pattern in patterns:
        for name in expand(pattern, limit, limit_name):
            seen.setdefault(name, None)
    return list(seen)


def listed(names: Sequence[str], shown: int = MAX_SHOWN) -> str:
    """`a, b, c` for an error message: at most `shown` names, then how many more (the list is a user's)."""
    if len(names) <= shown:
        return ", ".join(names)
    return f"{', '.join(names[:shown])} and {len(names) - shown} more"


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
