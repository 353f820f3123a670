"""/metrics: the Prometheus exposition (counters of the registry, node states counted in the database)."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import func, select
from starlette.responses import PlainTextResponse, Response

from kadeploy.db.models import NodeRow
from kadeploy.server.routes.dependencies import Context

router = APIRouter()


@router.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
async def prometheus(ctx: Context) -> Response:
    counts = await ctx.database.run(lambda s: dict(s.execute(
        select(NodeRow.state, func.count()).group_by(NodeRow.state)).all()))
    return PlainTextResponse(ctx.metrics.render(counts), media_type="text/plain; version=0.0.4")
