"""Node lists in requests, bounded by the site (room `server`; imports nodeset, errors, settings).

Every route that takes a `nodes` parameter expands it here: a range may name at
most as many hostnames as the site has (counted before anything is expanded,
so `node-[1-1000000000].c1` is refused at once, error 2 naming the range), and
the error listing unknown nodes names the first few and how many more.
The launch routes (`kadeploy.server.requests.resolve_nodes`) call `site_nodes` with
`LAUNCH_FLOOR`, so that a handful of mistyped names on a small site is reported as
unknown nodes, the way Kadeploy3 words it, rather than as too many.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from kadeploy.errors import ErrorCode, KadeployError
from kadeploy.nodeset import expand_all, listed

LAUNCH_FLOOR = 1024
"""A deployment, reboot, power or console request may name at least this many hostnames."""

STATS_FLOOR = 1024
"""kastat3 may name retired nodes, absent from the configuration: its bound is at least this."""


def site_limit(node_cluster: Mapping[str, str], floor: int = 1) -> int:
    """How many hostnames one request may name: the site's node count (at least `floor`)."""
    return max(len(node_cluster), floor)


def expand_for_site(node_cluster: Mapping[str, str], patterns: Iterable[str], floor: int = 1) -> list[str]:
    """`patterns` expanded, refused (error 2) when they name more hostnames than the site has."""
    limit = site_limit(node_cluster, floor)
    return expand_all(patterns, limit, "this site has" if floor <= 1 else "one request may name here")


def unknown_nodes_error(unknown: list[str]) -> KadeployError:
    """Error 2 for nodes not managed here; long lists are cut (the message becomes an HTTP header)."""
    return KadeployError(ErrorCode.INVALID_NODELIST, f"The node(s) {listed(unknown)} do not exist")


def site_nodes(node_cluster: Mapping[str, str], patterns: Iterable[str], floor: int = 1) -> list[str]:
    """`patterns` expanded within the site's size (at least `floor`); error 2 if any hostname is not managed here."""
    hostnames = expand_for_site(node_cluster, patterns, floor)
    unknown = [host for host in hostnames if host not in node_cluster]
    if unknown:
        raise unknown_nodes_error(unknown)
    return hostnames
