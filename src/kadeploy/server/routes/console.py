"""/console: open, list, inspect and close consoles on nodes (kaconsole3)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import PlainTextResponse, Response

from kadeploy import psych
from kadeploy.errors import ErrorCode, KadeployError
from kadeploy.server import dryrun
from kadeploy.server.http import as_str, read_params, render
from kadeploy.server.routes.dependencies import Caller, Context, owner_or_admin
from kadeploy.server.workflows import new_wid

router = APIRouter()


@router.post("/console", summary="Open a console on a node")
async def console_create(request: Request, ctx: Context, who: Caller) -> Response:
    params = await read_params(request)
    dry_run = dryrun.requested(params)
    node = as_str(params, "node")
    if not node:
        raise KadeployError(ErrorCode.MISSING_OPTION, "No node given (parameter node)")
    if node not in ctx.settings.node_cluster:
        raise KadeployError(ErrorCode.INVALID_NODELIST, f"The node {node} does not exist")
    await ctx.rights.check(who, [node])
    if dry_run:
        ctx.consoles.check(node)
        return dryrun.answer(request, node=node)
    wid = new_wid("console")
    console = await ctx.consoles.open(wid, node, who.user)
    # kaconsole.rb `console_create`: { :wid, :resources } with 'resource', 'error' (bound by name) and :console
    resources = {"resource": f"/console/{wid}", "error": f"/console/{wid}/error",
                 psych.Symbol("console"): console.session.uri}
    answer: dict[str, Any] = psych.symbol_keys({"wid": wid, "resources": resources})
    token = getattr(console.session, "token", None)
    if token:
        # our improvement over Kadeploy3: the console port only bridges after this token
        answer[psych.Symbol("token")] = token
    return render(request, answer)


@router.get("/console", summary="List consoles")
async def console_list(request: Request, ctx: Context, who: Caller) -> Response:
    return render(request, [psych.symbol_keys(c.info()) for c in ctx.consoles.consoles.values()
                            if who.admin or c.user == who.user])


@router.get("/console/{wid}", summary="Console information")
async def console_get(wid: str, request: Request, ctx: Context, who: Caller) -> Response:
    console = ctx.consoles.get(wid)
    owner_or_admin(who, console.user)
    return render(request, psych.symbol_keys(console.info()))  # kaconsole.rb `console_get`: :id, :user...


@router.get("/console/{wid}/error", summary="The console's error, raised")
async def console_error(wid: str, ctx: Context, who: Caller) -> Response:
    console = ctx.consoles.get(wid)
    owner_or_admin(who, console.user)
    if console.session.error:
        raise KadeployError(ErrorCode.EXECUTE_ERROR, console.session.error)
    return PlainTextResponse("")


@router.delete("/console/{wid}", summary="Close a console")
async def console_delete(wid: str, request: Request, ctx: Context, who: Caller) -> Response:
    dry_run = dryrun.requested(await read_params(request))
    owner_or_admin(who, ctx.consoles.get(wid).user)
    if dry_run:
        return dryrun.answer(request, wid=wid)
    await ctx.consoles.close(wid)
    return render(request, psych.symbol_keys({"wid": wid}))
