"""/rights: grant, list and revoke users' rights on nodes and partitions (karights3, administrators only)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from starlette.responses import Response

from kadeploy.errors import ErrorCode, KadeployError
from kadeploy.identifiers import check_user_name
from kadeploy.server import dryrun
from kadeploy.server.http import HTTPProblem, as_bool, as_list, as_str, read_params, render
from kadeploy.server.nodelists import site_nodes
from kadeploy.server.routes.dependencies import Caller, Context, admin_only
from kadeploy.server.settings import ServerSettings

log = logging.getLogger("kadeploy.server")

router = APIRouter()


def rights_nodes(settings: ServerSettings, patterns: list[str] | None) -> list[str] | None:
    """The nodes named by `patterns` (ranges expanded, `*` kept); error 2 for nodes not managed here."""
    if patterns is None:
        return None
    if "*" in patterns:
        return ["*"]
    return site_nodes(settings.node_cluster, patterns)


@router.post("/rights", summary="Add rights (admins)")
async def rights_create(request: Request, ctx: Context, who: Caller) -> Response:
    admin_only(who)
    params = await read_params(request)
    dry_run = dryrun.requested(params)
    username = as_str(params, "username")
    if not username:
        raise KadeployError(ErrorCode.MISSING_OPTION, "No user given (parameter username)")
    check_user_name(username, "username")
    nodes = rights_nodes(ctx.settings, as_list(params, "nodes")) or ["*"]
    parts = as_list(params, "partitions") or ["*"]
    added = await ctx.rights.add(username, nodes, parts, as_bool(params, "overwrite"), ctx.settings.almighty_users,
                                 dry_run=dry_run)
    return dryrun.answer(request, rights=added) if dry_run else render(request, added)


@router.get("/rights", summary="List rights (admins)")
@router.get("/rights/{user}", summary="List a user's rights (admins)")
@router.get("/rights/{user}/{node}", summary="List a user's rights on a node (admins)")
async def rights_list(request: Request, ctx: Context, who: Caller, user: str | None = None,
                      node: str | None = None) -> Response:
    admin_only(who)
    params = await read_params(request)
    nodes = [node] if node else rights_nodes(ctx.settings, as_list(params, "nodes"))
    rights = await ctx.rights.list(user, nodes)
    if not rights:  # karights.rb `rights_get`: `error_not_found! unless res` (no row matched)
        raise HTTPProblem(404, "No rights match")
    return render(request, rights)


@router.delete("/rights/{user}", summary="Delete a user's rights (admins)")
@router.delete("/rights/{user}/{node}", summary="Delete a user's rights on a node (admins)")
@router.delete("/rights/{user}/{node}/{partition:path}", summary="Delete a right on a partition (admins)")
async def rights_delete(user: str, request: Request, ctx: Context, who: Caller, node: str | None = None,
                        partition: str | None = None) -> Response:
    # (no docstring: it would become the operation's OpenAPI description)
    # the user's operations running on the nodes lost are cancelled, as in Kadeploy3
    admin_only(who)
    params = await read_params(request)
    dry_run = dryrun.requested(params)
    nodes = [node] if node else rights_nodes(ctx.settings, as_list(params, "nodes"))
    parts = [partition if partition.startswith("/") or partition == "*" else "/" + partition] \
        if partition else as_list(params, "partitions")
    lost = await ctx.rights.delete(user, nodes, parts, dry_run=dry_run)
    targets = (list(ctx.settings.node_cluster) if lost == ["*"] else lost) if lost else []
    deleted = {"user": user, "nodes": nodes or ["*"], "partitions": parts or ["*"]}
    if dry_run:
        stopped = [workflow.wid for workflow in ctx.registry.running_on(user, targets)]
        return dryrun.answer(request, **deleted, cancelled=stopped)
    if targets:
        killed = await ctx.registry.kill_user_on_nodes(user, targets)
        if killed:
            log.info("rights of %s removed: cancelled %s", user, ", ".join(killed))
    return render(request, deleted)
