"""The workflow resources' router factory: /deployment, /reboot and /power share it.

`workflow_router` gives one operation family its launch route and its polling
resources (information, logs, debugs, state, status, error, cancel), so the
three families differ only by how their request becomes an `Operation`
(the builder each of `routes.deployment`, `routes.reboot`, `routes.power` passes).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import PlainTextResponse, Response

from kadeploy import psych
from kadeploy.errors import ErrorCode, KadeployError
from kadeploy.server import dryrun
from kadeploy.server.auth import Identity
from kadeploy.server.context import ServerContext
from kadeploy.server.http import read_params, render
from kadeploy.operations import Operation
from kadeploy.server.routes.dependencies import Caller, Context, owner_or_admin
from kadeploy.server.workflows import RunningCap, Workflow

# the path of each family and the operation kind its workflows are registered under
OPERATIONS = {"deployment": "deploy", "reboot": "reboot", "power": "power"}

OperationBuilder = Callable[[ServerContext, Identity, dict[str, Any]], Awaitable[Operation]]


async def launch(request: Request, ctx: ServerContext, who: Identity, op_path: str,
                 build: OperationBuilder) -> Response:
    """Validate the request into an operation, then start it (or, for a dry run, say what it would do)."""
    params = await read_params(request)
    dry_run = dryrun.requested(params)
    cap = running_cap(ctx, who)
    ctx.registry.check_cap(who.user, cap)   # before building: a flood is refused cheaply (launch checks again)
    op = await build(ctx, who, params)
    if dry_run:
        nodes, discarded = await ctx.registry.rehearse(op)
        env = op.environment
        deployed = {"environment": {"user": env.user, "name": env.name, "version": env.version}} if env else {}
        return dryrun.answer(request, nodes=nodes, discarded=discarded, **deployed)
    workflow = await ctx.registry.launch(op, cap)
    # kaworkflow.rb `work_create`: { :wid => ..., :resources => ... } (the resources' own keys are strings)
    return render(request, psych.symbol_keys({"wid": workflow.wid, "resources": workflow.resources(f"/{op_path}")}))


def running_cap(ctx: ServerContext, who: Identity) -> RunningCap:
    """server.conf's cap on `who`'s running workflows (the administrators have their own)."""
    settings = ctx.settings
    if who.admin:
        return RunningCap(settings.max_running_per_admin, "max_running_workflows_per_admin")
    return RunningCap(settings.max_running_per_user, "max_running_workflows_per_user")


def workflow_of(ctx: ServerContext, op_path: str, wid: str, who: Identity, *, details: bool = True) -> Workflow:
    """The workflow `wid` of this family; HTTP 403 unless `who` owns it or is admin (when `details`)."""
    workflow = ctx.registry.get(wid, OPERATIONS[op_path])
    if details:
        owner_or_admin(who, workflow.user)
    return workflow


def info_answer(workflow: Workflow, who: Identity) -> Any:
    """kaworkflow.rb `work_get`'s hash: every key a symbol (`:wid`, `:environment` {:id...}, `:nodes` {:ok...})."""
    return psych.symbolize_keys(workflow.info(details=who.admin or workflow.user == who.user))


def workflow_router(op_path: str, *, create_method: str, create_summary: str, build: OperationBuilder,
                    build_on_list: OperationBuilder | None = None) -> APIRouter:
    """The routes of one family; `build_on_list` turns `GET /<op_path>?nodes=...` into a launch (power status)."""
    kind = OPERATIONS[op_path]
    router = APIRouter()

    async def create(request: Request, ctx: Context, who: Caller) -> Response:
        return await launch(request, ctx, who, op_path, build)

    router.add_api_route(f"/{op_path}", create, methods=[create_method], summary=create_summary,
                         name=f"{op_path}_create")

    async def workflow_list(request: Request, ctx: Context, who: Caller) -> Response:
        if build_on_list is not None and "nodes" in request.query_params:
            return await launch(request, ctx, who, op_path, build_on_list)
        return render(request, [info_answer(wf, who) for wf in ctx.registry.of_kind(kind)])

    async def workflow_get(wid: str, request: Request, ctx: Context, who: Caller) -> Response:
        workflow = workflow_of(ctx, op_path, wid, who, details=False)
        return render(request, info_answer(workflow, who))

    # a dry-run read of the new lines leaves them new (dry runs change nothing)
    async def workflow_logs(wid: str, request: Request, ctx: Context, who: Caller) -> Response:
        dry_run = dryrun.requested(await read_params(request))
        return PlainTextResponse(workflow_of(ctx, op_path, wid, who).read_logs(dry_run=dry_run))

    async def workflow_cluster_logs(wid: str, cluster: str, request: Request, ctx: Context, who: Caller) -> Response:
        dry_run = dryrun.requested(await read_params(request))
        return PlainTextResponse(workflow_of(ctx, op_path, wid, who).read_logs(cluster, dry_run=dry_run))

    async def workflow_debugs(wid: str, request: Request, ctx: Context, who: Caller) -> Response:
        dry_run = dryrun.requested(await read_params(request))
        return PlainTextResponse(workflow_of(ctx, op_path, wid, who).read_debugs(dry_run=dry_run))

    async def workflow_node_debugs(wid: str, node: str, request: Request, ctx: Context, who: Caller) -> Response:
        dry_run = dryrun.requested(await read_params(request))
        return PlainTextResponse(workflow_of(ctx, op_path, wid, who).read_debugs(node, dry_run=dry_run))

    async def workflow_state(wid: str, request: Request, ctx: Context, who: Caller) -> Response:
        return render(request, workflow_of(ctx, op_path, wid, who).states)

    async def workflow_status(wid: str, request: Request, ctx: Context, who: Caller) -> Response:
        return render(request, workflow_of(ctx, op_path, wid, who).status())

    async def workflow_error(wid: str, ctx: Context, who: Caller) -> Response:
        workflow = workflow_of(ctx, op_path, wid, who)
        if workflow.error is not None:
            raise workflow.error
        if workflow.aborted:
            raise KadeployError(ErrorCode.EXECUTE_ERROR, f"The workflow {wid} has been aborted")
        return PlainTextResponse("")

    async def workflow_delete(wid: str, request: Request, ctx: Context, who: Caller) -> Response:
        dry_run = dryrun.requested(await read_params(request))
        workflow = workflow_of(ctx, op_path, wid, who)
        if dry_run:
            return dryrun.answer(request, wid=wid, running=not workflow.done)
        await ctx.registry.delete(workflow)
        return render(request, psych.symbol_keys({"wid": wid}))  # kaworkflow.rb `work_delete`: { :wid => ... }

    base = f"/{op_path}"
    listing = "List workflows" + (" (with nodes: start a power status)" if build_on_list is not None else "")
    routes = [
        (base, ["GET"], workflow_list, listing),
        (base + "/{wid}", ["GET"], workflow_get, "Workflow information (polling)"),
        (base + "/{wid}", ["DELETE"], workflow_delete, "Cancel a running workflow or delete a finished one"),
        (base + "/{wid}/logs", ["GET"], workflow_logs, "New log lines since the last call"),
        (base + "/{wid}/logs/{cluster}", ["GET"], workflow_cluster_logs, "New log lines of a cluster"),
        (base + "/{wid}/debugs", ["GET"], workflow_debugs, "New debug lines"),
        (base + "/{wid}/debugs/{node}", ["GET"], workflow_node_debugs, "New debug lines of a node"),
        (base + "/{wid}/state", ["GET"], workflow_state, "Per-node state"),
        (base + "/{wid}/status", ["GET"], workflow_status, "Live per-cluster, per-step status"),
        (base + "/{wid}/error", ["GET"], workflow_error, "The workflow's error, raised"),
    ]
    for path, methods, endpoint, summary in routes:
        router.add_api_route(path, endpoint, methods=methods, summary=summary, tags=[op_path],
                             name=f"{op_path}_{endpoint.__name__}")
    return router
