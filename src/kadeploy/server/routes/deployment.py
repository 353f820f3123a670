"""/deployment: launch a deployment (kadeploy3) and poll it."""

from __future__ import annotations

from typing import Any

from kadeploy.server.auth import Identity
from kadeploy.server.context import ServerContext
from kadeploy.operations import Operation
from kadeploy.server.routes.workflows import workflow_router


async def deployment_operation(ctx: ServerContext, who: Identity, params: dict[str, Any]) -> Operation:
    return await ctx.requests.deployment(who, params)


router = workflow_router("deployment", create_method="POST", create_summary="Launch a deployment",
                         build=deployment_operation)
