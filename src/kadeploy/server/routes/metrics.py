"""/metrics: the Prometheus exposition (counters of the registry, node states counted in the database).

Ours (Kadeploy3 has no such route), so it follows our rule rather than
Kadeploy3's: the administrators only, unless server.conf
`security/public_metrics` opens it to anyone who can reach the port (a
Prometheus scraper without credentials). The counters tell how busy the site
is and which operations fail: not for every user.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from sqlalchemy import func, select
from starlette.responses import PlainTextResponse, Response

from kadeploy.db.models import NodeRow
from kadeploy.server.http import HTTPProblem
from kadeploy.server.routes.dependencies import Context

router = APIRouter()


@router.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics (administrators, "
                                                                    "or anyone with security/public_metrics)")
async def prometheus(request: Request, ctx: Context) -> Response:
    if not ctx.settings.public_metrics:
        who = await ctx.authenticator.authenticate(request)
        if not who.admin:
            raise HTTPProblem(403, "Only administrators can read the metrics (server.conf security/public_metrics "
                                   "opens them)")
    counts = await ctx.database.run(lambda s: dict(s.execute(
        select(NodeRow.state, func.count()).group_by(NodeRow.state)).all()))
    return PlainTextResponse(ctx.metrics.render(counts), media_type="text/plain; version=0.0.4")
