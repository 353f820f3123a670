"""/nodes: the managed nodes and their deployment states (kanodes3)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from kadeploy.db import nodes as db_nodes
from kadeploy.nodeset import sort_key
from kadeploy.server.http import as_bool, as_list, read_params, render
from kadeploy.server.nodelists import site_nodes, unknown_nodes_error
from kadeploy.server.routes.dependencies import Caller, Context

router = APIRouter()


@router.get("/nodes", summary="Managed nodes and their states")
@router.get("/nodes/{node}", summary="One node's state")
async def nodes_get(request: Request, ctx: Context, who: Caller, node: str | None = None) -> Response:
    settings = ctx.settings
    params = await read_params(request)
    managed = sorted(settings.node_cluster, key=sort_key)
    if "list" in params and as_bool(params, "list"):
        return render(request, managed)
    if node:
        if node not in settings.node_cluster:
            raise unknown_nodes_error([node])
        wanted = [node]
    else:
        wanted = site_nodes(settings.node_cluster, as_list(params, "nodes") or []) or managed
    states = await ctx.database.run(lambda s: db_nodes.get_states(s, wanted))
    # Kadeploy3's order (nodes.rb `get_states`, kanodes.rb): known states sorted by hostname as
    # SQL sorts strings, then the nodes never operated on (null), in the order asked
    answer: dict[str, Any] = {n: states[n].to_api() for n in sorted(states) if n in wanted}
    answer.update({n: None for n in wanted if n not in states})
    return render(request, answer)
