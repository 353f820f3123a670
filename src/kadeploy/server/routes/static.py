"""Static resources, unauthenticated as in Kadeploy3: /version, /auth_headers_prefix, /info, /clusters."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import PlainTextResponse, Response

from kadeploy.server.http import render
from kadeploy.server.routes.dependencies import Context
from kadeploy.server.settings import EXPORTED_VARS

router = APIRouter()


@router.get("/version", response_class=PlainTextResponse, summary="Server version")
async def version(ctx: Context) -> str:
    return ctx.settings.version


@router.get("/auth_headers_prefix", response_class=PlainTextResponse, summary="Authentication headers prefix")
async def auth_headers_prefix(ctx: Context) -> str:
    return ctx.settings.auth.headers_prefix


@router.get("/info", summary="PXE method, automata, supported filesystems, exported variables")
async def info(request: Request, ctx: Context) -> Response:
    settings = ctx.settings
    return render(request, {
        "pxe": settings.pxe_method,
        "automata": {name: {macro: [{"name": i.name, "retries": i.retries, "timeout": i.timeout} for i in impls]
                            for macro, impls in cluster.automata.items()}
                     for name, cluster in settings.clusters.items()},
        "supported_fs": {name: cluster.supported_fs for name, cluster in settings.clusters.items()},
        "vars": list(EXPORTED_VARS)})


@router.get("/clusters", summary="Cluster names")
async def clusters(request: Request, ctx: Context) -> Response:
    return render(request, sorted(ctx.settings.clusters))
