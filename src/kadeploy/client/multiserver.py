"""`-M` multi-server mode: send each node to the server that owns it (reference 10).

Client room. Kadeploy3 federates sites only in the client: every server's
`GET /nodes?list=true` tells which nodes it manages; requested nodes are
dispatched accordingly, a node no server owns is an error (exit 1), and servers that
own none of the nodes are not contacted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from kadeploy.client.errors import EXIT_GENERIC, ClientError
from kadeploy.client.nodes import resolve_nodes


def dispatch(requested: Sequence[str], server_nodes: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Map server name → its share of the requested nodes (servers in config order).

    A node managed by several servers goes to the first one (as Kadeploy3's
    loop does); nodes owned by none raise INVALID_NODELIST.
    """
    remaining = list(requested)
    shares: dict[str, list[str]] = {}
    for server, managed in server_nodes.items():
        if not remaining:
            break
        resolved, unknown = resolve_nodes(remaining, managed)
        if resolved:
            shares[server] = resolved
        remaining = unknown
    if remaining:  # client.rb `launch`: its words, exit status 1
        raise ClientError(f"The nodes {', '.join(remaining)} does not belongs to any server", EXIT_GENERIC)
    return shares
