"""/reboot: launch a reboot (kareboot3) and poll it; `-c` refuses nodes left by a destructive environment."""

from __future__ import annotations

from typing import Any

from kadeploy.db import nodes as db_nodes
from kadeploy.errors import ErrorCode, KadeployError
from kadeploy.nodeset import fold
from kadeploy.server.auth import Identity
from kadeploy.server.context import ServerContext
from kadeploy.operations import Operation, RebootRequest
from kadeploy.server.routes.workflows import workflow_router


async def reboot_operation(ctx: ServerContext, who: Identity, params: dict[str, Any]) -> Operation:
    op = await ctx.requests.reboot(who, params)
    if isinstance(op.options, RebootRequest) and op.options.check_destructive:
        # reference 2.5: `-c` refuses nodes whose last deployed environment was destructive
        states = await ctx.database.run(lambda s: db_nodes.get_states(s, op.hostnames))
        destructive = sorted(node for node, state in states.items() if state.destructive)
        if destructive:
            raise KadeployError(ErrorCode.DESTRUCTIVE_ENVIRONMENT,
                                "Cannot reboot since the last deployed environment was destructive "
                                f"on {fold(destructive)}")
    return op


router = workflow_router("reboot", create_method="POST", create_summary="Launch a reboot", build=reboot_operation)
