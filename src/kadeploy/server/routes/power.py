"""/power: power on/off (PUT) and power status (GET with nodes), as kapower3 sends them, and their polling."""

from __future__ import annotations

from typing import Any

from kadeploy.server.auth import Identity
from kadeploy.server.context import ServerContext
from kadeploy.operations import Operation
from kadeploy.server.routes.workflows import workflow_router


async def power_operation(ctx: ServerContext, who: Identity, params: dict[str, Any]) -> Operation:
    return await ctx.requests.power(who, params, status_only=False)


async def power_status(ctx: ServerContext, who: Identity, params: dict[str, Any]) -> Operation:
    return await ctx.requests.power(who, params, status_only=True)


router = workflow_router("power", create_method="PUT", create_summary="Launch a power on/off operation",
                         build=power_operation, build_on_list=power_status)
