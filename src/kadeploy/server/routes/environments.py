"""/environments: the environment catalogue (kaenv3): add, list, modify, move files, delete."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from kadeploy.errors import ErrorCode, KadeployError
from kadeploy.server import dryrun
from kadeploy.server.auth import Identity
from kadeploy.server.context import ServerContext
from kadeploy.server.http import as_bool, as_dict, as_int, as_str, read_params, render
from kadeploy.server.routes.dependencies import Caller, Context

router = APIRouter()


def path_version(version: int | None) -> int | None:
    """The `:version` of a path, refused (error 4) outside the database's INTEGER column."""
    return as_int({"version": version}, "version", minimum=0)


@router.post("/environments", summary="Add an environment")
async def env_create(request: Request, ctx: Context, who: Caller) -> Response:
    params = await read_params(request)
    dry_run = dryrun.requested(params)
    description = params.get("environment")
    if description is None:
        raise KadeployError(ErrorCode.MISSING_OPTION, "No environment description given (parameter environment)")
    added = await ctx.environments.add(who, description, as_str(params, "client"), dry_run=dry_run)
    return dryrun.answer(request, environment=added) if dry_run else render(request, added)


@router.get("/environments", summary="List environments")
async def env_list(request: Request, ctx: Context, who: Caller) -> Response:
    params = await read_params(request)
    return render(request, await ctx.environments.list(
        who, as_str(params, "username"), as_str(params, "name"), as_int(params, "version"),
        as_bool(params, "last") if "last" in params else False))


@router.put("/environments", summary="Move environment files (admins)")
async def env_move_all(request: Request, ctx: Context, who: Caller) -> Response:
    return await env_move(request, ctx, who, None)


@router.put("/environments/{user}", summary="Move a user's environment files (admins)")
async def env_move_user(user: str, request: Request, ctx: Context, who: Caller) -> Response:
    return await env_move(request, ctx, who, user)


async def env_move(request: Request, ctx: ServerContext, who: Identity, user: str | None) -> Response:
    """Rewrite the file prefixes of `user`'s environments (all users' when None)."""
    params = await read_params(request)
    dry_run = dryrun.requested(params)
    moves = as_dict(params, "update_files")
    if not moves:
        raise KadeployError(ErrorCode.MISSING_OPTION, "update_files: {old_prefix: new_prefix} expected")
    moved = await ctx.environments.move_files(who, user, {str(k): str(v) for k, v in moves.items()},
                                              dry_run=dry_run)
    return dryrun.answer(request, environments=moved) if dry_run else render(request, moved)


@router.put("/environments/{user}/{name}", summary="Modify an environment")
@router.put("/environments/{user}/{name}/{version}", summary="Modify one version of an environment")
async def env_modify(user: str, name: str, request: Request, ctx: Context, who: Caller,
                     version: int | None = None) -> Response:
    params = await read_params(request)
    dry_run = dryrun.requested(params)
    modified = await ctx.environments.modify(who, user, name, path_version(version), params, as_str(params, "client"),
                                             dry_run=dry_run)
    return dryrun.answer(request, environments=modified) if dry_run else render(request, modified)


@router.delete("/environments/{user}/{name}", summary="Delete an environment")
@router.delete("/environments/{user}/{name}/{version}", summary="Delete one version of an environment")
async def env_delete(user: str, name: str, request: Request, ctx: Context, who: Caller,
                     version: int | None = None) -> Response:
    params = await read_params(request)
    dry_run = dryrun.requested(params)
    last = as_bool(params, "last") if "last" in params else False
    deleted = await ctx.environments.delete(who, user, name, path_version(version), last, dry_run=dry_run)
    return dryrun.answer(request, environments=deleted) if dry_run else render(request, deleted)
