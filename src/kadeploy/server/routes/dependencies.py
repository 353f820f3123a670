"""FastAPI dependencies shared by the routers: the server context and the caller.

`Context` is the `ServerContext` that `create_app` stored in `app.state.ctx`;
`Caller` is the authenticated `Identity` (HTTP 401 before the handler runs
when authentication fails). The access checks every resource repeats live here.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from kadeploy.server.auth import Identity
from kadeploy.server.context import ServerContext
from kadeploy.server.http import HTTPProblem


def server_context(request: Request) -> ServerContext:
    """The context of the application serving `request`."""
    ctx: ServerContext = request.app.state.ctx
    return ctx


Context = Annotated[ServerContext, Depends(server_context)]


async def caller(request: Request, ctx: Context) -> Identity:
    """Who sent `request`, by the configured authentication methods."""
    return await ctx.authenticator.authenticate(request)


Caller = Annotated[Identity, Depends(caller)]


def owner_or_admin(identity: Identity, owner: str) -> None:
    """A workflow's or a console's details are for its owner and the administrators (HTTP 403)."""
    if not identity.admin and identity.user != owner:
        raise HTTPProblem(403, f"Only {owner} and the administrators can access this workflow")


def admin_only(identity: Identity) -> None:
    """Rights are managed by administrators only (HTTP 403)."""
    if not identity.admin:
        raise HTTPProblem(403, "Only administrators can manage rights")
