"""The kadeploy3d HTTP API (room `server`, reference 1.3-1.4, 1.7, section 8-9).

`create_app(settings, database, runner)` builds the FastAPI application with
every Kadeploy3 endpoint, same paths, parameters and response shapes, plus
`/metrics` (Prometheus) and the OpenAPI document (`/openapi.json`, `/docs`).
`prepare_database(database)` migrates the schema and recovers the workflows a
crashed server left running; the daemon calls it before serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import gzip
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.middleware.gzip import GZipMiddleware
from sqlalchemy import func, select
from starlette.responses import PlainTextResponse, Response

from kadeploy.db import Database
from kadeploy.db import nodes as db_nodes
from kadeploy.db import stats as db_stats
from kadeploy.db import workflows as db_workflows
from kadeploy.db.models import NodeRow
from kadeploy.errors import ErrorCode, KadeployError
from kadeploy.nodeset import expand_all, fold, sort_key
from kadeploy.server import dryrun
from kadeploy.server.auth import AuthenticationError, Authenticator, Identity
from kadeploy.server.console import ConsoleFactory, ConsoleRegistry
from kadeploy.server.environments import EnvironmentService
from kadeploy.server.http import (HTTPProblem, RequestTimeout, as_bool, as_dict, as_int, as_list, as_str,
                                  error_response, problem_response, read_params, render)
from kadeploy.server.logfiles import OperationLogs
from kadeploy.server.metrics import Metrics
from kadeploy.server.operations import OperationRunner
from kadeploy.server.requests import RequestBuilder
from kadeploy.server.rights import RightsService
from kadeploy.server.settings import EXPORTED_VARS, ServerSettings
from kadeploy.server.workflows import Workflow, WorkflowRegistry, new_wid

log = logging.getLogger("kadeploy.server")

OPERATIONS = {"deployment": "deploy", "reboot": "reboot", "power": "power"}
AUTOCLEAN_INTERVAL = 300.0


def prepare_database(database: Database) -> list[str]:
    """Migrate to the latest schema, then abort the workflows a dead server left running."""
    database.migrate()
    recovered = database.transaction(db_workflows.recover_interrupted)
    if recovered:
        log.warning("aborted %d workflow(s) interrupted by the previous server stop: %s",
                    len(recovered), ", ".join(recovered))
    return recovered


@dataclass
class ServerContext:
    """Everything request handlers use."""

    settings: ServerSettings
    database: Database
    registry: WorkflowRegistry
    authenticator: Authenticator
    rights: RightsService
    environments: EnvironmentService
    requests: RequestBuilder
    consoles: ConsoleRegistry
    metrics: Metrics


def _owner_or_admin(identity: Identity, owner: str) -> None:
    if not identity.admin and identity.user != owner:
        raise HTTPProblem(403, f"Only {owner} and the administrators can access this workflow")


def _admin_only(identity: Identity) -> None:
    if not identity.admin:
        raise HTTPProblem(403, "Only administrators can manage rights")


def _parse_date(params: dict[str, Any], key: str) -> float | None:
    value = as_str(params, key)
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        raise KadeployError(ErrorCode.INVALID_OPTION, f"Invalid date for {key}: {value!r} (RFC 2616 date "
                                                      "or epoch expected)") from None


def _csv_value(value: Any, field: str = "") -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if field == "error" and isinstance(value, str):
        return value.replace('"', '\\"')
    return "" if value is None else str(value)


def create_app(settings: ServerSettings, database: Database, runner: OperationRunner, *,
               console_factory: ConsoleFactory | None = None, fetcher: Any = None,
               autoclean_interval: float = AUTOCLEAN_INTERVAL, files: OperationLogs | None = None) -> FastAPI:
    """The application, running operations with `runner` (the daemon passes the engine runner).

    `files` are the opened server.conf `logs` files (the daemon owns them: opens, reopens on HUP, closes).
    """
    metrics = Metrics()
    rights = RightsService(database, settings.rights_kind)
    environments = EnvironmentService(database, fetcher)
    ctx = ServerContext(settings=settings, database=database,
                        registry=WorkflowRegistry(database, runner, metrics, settings.hooks,
                                                  files=files, log_to_db=settings.log_to_db),
                        authenticator=Authenticator(settings.auth, settings.almighty_users), rights=rights,
                        environments=environments, requests=RequestBuilder(settings, environments, rights),
                        consoles=ConsoleRegistry(console_factory), metrics=metrics)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        cleaner = asyncio.create_task(_autoclean(ctx, autoclean_interval), name="autoclean")
        try:
            yield
        finally:
            cleaner.cancel()
            await ctx.registry.shutdown()
            await ctx.consoles.close_all()

    app = FastAPI(title="kadeploy3d", version=settings.version, lifespan=lifespan,
                  description="Kadeploy3-compatible deployment server API")
    app.state.ctx = ctx
    app.add_middleware(GZipMiddleware, minimum_size=1000)
    app.add_middleware(RequestTimeout, timeout=settings.request_timeout)  # outermost: it times gzip too

    @app.exception_handler(KadeployError)
    async def _kadeploy_error(_request: Request, exc: KadeployError) -> Response:
        return error_response(exc)

    @app.exception_handler(HTTPProblem)
    async def _problem(_request: Request, exc: HTTPProblem) -> Response:
        return problem_response(exc)

    @app.exception_handler(AuthenticationError)
    async def _unauthenticated(_request: Request, exc: AuthenticationError) -> Response:
        headers = {}
        if settings.auth.http_basic_dbfile is not None:
            headers["WWW-Authenticate"] = f'Basic realm="{settings.auth.http_basic_realm}"'
        return PlainTextResponse(str(exc), status_code=401, headers=headers)

    async def identity(request: Request) -> Identity:
        return await ctx.authenticator.authenticate(request)

    Auth = Depends(identity)

    # -- global, unauthenticated as in Kadeploy3 (static content) --------------
    @app.get("/version", response_class=PlainTextResponse, summary="Server version")
    async def version() -> str:
        return settings.version

    @app.get("/auth_headers_prefix", response_class=PlainTextResponse, summary="Authentication headers prefix")
    async def auth_headers_prefix() -> str:
        return settings.auth.headers_prefix

    @app.get("/info", summary="PXE method, automata, supported filesystems, exported variables")
    async def info(request: Request) -> Response:
        return render(request, {
            "pxe": settings.pxe_method,
            "automata": {name: {macro: [{"name": i.name, "retries": i.retries, "timeout": i.timeout} for i in impls]
                                for macro, impls in cluster.automata.items()}
                         for name, cluster in settings.clusters.items()},
            "supported_fs": {name: cluster.supported_fs for name, cluster in settings.clusters.items()},
            "vars": list(EXPORTED_VARS)})

    @app.get("/clusters", summary="Cluster names")
    async def clusters(request: Request) -> Response:
        return render(request, sorted(settings.clusters))

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
    async def prometheus() -> Response:
        counts = await database.run(lambda s: dict(s.execute(
            select(NodeRow.state, func.count()).group_by(NodeRow.state)).all()))
        return PlainTextResponse(metrics.render(counts), media_type="text/plain; version=0.0.4")

    # -- workflows ---------------------------------------------------------------
    async def launch(request: Request, who: Identity, op_path: str, builder: Any) -> Response:
        params = await read_params(request)
        dry_run = dryrun.requested(params)
        op = await builder(who, params)
        if dry_run:
            nodes, discarded = await ctx.registry.rehearse(op)
            env = op.environment
            deployed = {"environment": {key: env.get(key) for key in ("user", "name", "version")}} if env else {}
            return dryrun.answer(request, nodes=nodes, discarded=discarded, **deployed)
        workflow = await ctx.registry.launch(op)
        return render(request, {"wid": workflow.wid, "resources": workflow.resources(f"/{op_path}")})

    @app.post("/deployment", summary="Launch a deployment")
    async def deployment_create(request: Request, who: Identity = Auth) -> Response:
        return await launch(request, who, "deployment", ctx.requests.deployment)

    async def reboot_operation(who: Identity, params: dict[str, Any]) -> Any:
        op = await ctx.requests.reboot(who, params)
        if op.params.get("check_destructive"):
            # reference 2.5: `-c` refuses nodes whose last deployed environment was destructive
            states = await database.run(lambda s: db_nodes.get_states(s, op.hostnames))
            destructive = sorted(node for node, state in states.items() if state.destructive)
            if destructive:
                raise KadeployError(ErrorCode.DESTRUCTIVE_ENVIRONMENT,
                                    "Cannot reboot since the last deployed environment was destructive "
                                    f"on {fold(destructive)}")
        return op

    @app.post("/reboot", summary="Launch a reboot")
    async def reboot_create(request: Request, who: Identity = Auth) -> Response:
        return await launch(request, who, "reboot", reboot_operation)

    @app.put("/power", summary="Launch a power on/off operation")
    async def power_create(request: Request, who: Identity = Auth) -> Response:
        return await launch(request, who, "power",
                            lambda w, p: ctx.requests.power(w, p, status_only=False))

    def workflow_of(op_path: str, wid: str, who: Identity, *, details: bool = True) -> Workflow:
        workflow = ctx.registry.get(wid, OPERATIONS[op_path])
        if details:
            _owner_or_admin(who, workflow.user)
        return workflow

    for op_path in OPERATIONS:
        _bind_workflow_routes(app, op_path, ctx, workflow_of, launch, Auth)

    # -- console -------------------------------------------------------------------
    @app.post("/console", summary="Open a console on a node")
    async def console_create(request: Request, who: Identity = Auth) -> Response:
        params = await read_params(request)
        dry_run = dryrun.requested(params)
        node = as_str(params, "node")
        if not node:
            raise KadeployError(ErrorCode.MISSING_OPTION, "No node given (parameter node)")
        if node not in settings.node_cluster:
            raise KadeployError(ErrorCode.INVALID_NODELIST, f"The node {node} does not exist")
        await ctx.rights.check(who, [node])
        if dry_run:
            ctx.consoles.check(node)
            return dryrun.answer(request, node=node)
        wid = new_wid("console")
        console = await ctx.consoles.open(wid, node, who.user)
        answer: dict[str, Any] = {"wid": wid, "resources": {"resource": f"/console/{wid}",
                                                            "error": f"/console/{wid}/error",
                                                            "console": console.session.uri}}
        token = getattr(console.session, "token", None)
        if token:
            # our improvement over Kadeploy3: the console port only bridges after this token
            answer["token"] = token
        return render(request, answer)

    @app.get("/console", summary="List consoles")
    async def console_list(request: Request, who: Identity = Auth) -> Response:
        return render(request, [c.info() for c in ctx.consoles.consoles.values() if who.admin or c.user == who.user])

    @app.get("/console/{wid}", summary="Console information")
    async def console_get(wid: str, request: Request, who: Identity = Auth) -> Response:
        console = ctx.consoles.get(wid)
        _owner_or_admin(who, console.user)
        return render(request, console.info())

    @app.get("/console/{wid}/error", summary="The console's error, raised")
    async def console_error(wid: str, who: Identity = Auth) -> Response:
        console = ctx.consoles.get(wid)
        _owner_or_admin(who, console.user)
        if console.session.error:
            raise KadeployError(ErrorCode.EXECUTE_ERROR, console.session.error)
        return PlainTextResponse("")

    @app.delete("/console/{wid}", summary="Close a console")
    async def console_delete(wid: str, request: Request, who: Identity = Auth) -> Response:
        dry_run = dryrun.requested(await read_params(request))
        _owner_or_admin(who, ctx.consoles.get(wid).user)
        if dry_run:
            return dryrun.answer(request, wid=wid)
        await ctx.consoles.close(wid)
        return render(request, {"wid": wid})

    # -- environments ----------------------------------------------------------------
    @app.post("/environments", summary="Add an environment")
    async def env_create(request: Request, who: Identity = Auth) -> Response:
        params = await read_params(request)
        dry_run = dryrun.requested(params)
        description = params.get("environment")
        if description is None:
            raise KadeployError(ErrorCode.MISSING_OPTION, "No environment description given (parameter environment)")
        added = await ctx.environments.add(who, description, as_str(params, "client"), dry_run=dry_run)
        return dryrun.answer(request, environment=added) if dry_run else render(request, added)

    @app.get("/environments", summary="List environments")
    async def env_list(request: Request, who: Identity = Auth) -> Response:
        params = await read_params(request)
        return render(request, await ctx.environments.list(
            who, as_str(params, "username"), as_str(params, "name"), as_int(params, "version"),
            as_bool(params, "last") if "last" in params else False))

    @app.put("/environments", summary="Move environment files (admins)")
    async def env_move_all(request: Request, who: Identity = Auth) -> Response:
        return await env_move(request, who, None)

    @app.put("/environments/{user}", summary="Move a user's environment files (admins)")
    async def env_move_user(user: str, request: Request, who: Identity = Auth) -> Response:
        return await env_move(request, who, user)

    async def env_move(request: Request, who: Identity, user: str | None) -> Response:
        params = await read_params(request)
        dry_run = dryrun.requested(params)
        moves = as_dict(params, "update_files")
        if not moves:
            raise KadeployError(ErrorCode.MISSING_OPTION, "update_files: {old_prefix: new_prefix} expected")
        moved = await ctx.environments.move_files(who, user, {str(k): str(v) for k, v in moves.items()},
                                                  dry_run=dry_run)
        return dryrun.answer(request, environments=moved) if dry_run else render(request, moved)

    @app.put("/environments/{user}/{name}", summary="Modify an environment")
    @app.put("/environments/{user}/{name}/{version}", summary="Modify one version of an environment")
    async def env_modify(user: str, name: str, request: Request, version: int | None = None,
                         who: Identity = Auth) -> Response:
        params = await read_params(request)
        dry_run = dryrun.requested(params)
        modified = await ctx.environments.modify(who, user, name, version, params, as_str(params, "client"),
                                                 dry_run=dry_run)
        return dryrun.answer(request, environments=modified) if dry_run else render(request, modified)

    @app.delete("/environments/{user}/{name}", summary="Delete an environment")
    @app.delete("/environments/{user}/{name}/{version}", summary="Delete one version of an environment")
    async def env_delete(user: str, name: str, request: Request, version: int | None = None,
                         who: Identity = Auth) -> Response:
        params = await read_params(request)
        dry_run = dryrun.requested(params)
        last = as_bool(params, "last") if "last" in params else False
        deleted = await ctx.environments.delete(who, user, name, version, last, dry_run=dry_run)
        return dryrun.answer(request, environments=deleted) if dry_run else render(request, deleted)

    # -- rights ------------------------------------------------------------------------
    @app.post("/rights", summary="Add rights (admins)")
    async def rights_create(request: Request, who: Identity = Auth) -> Response:
        _admin_only(who)
        params = await read_params(request)
        dry_run = dryrun.requested(params)
        username = as_str(params, "username")
        if not username:
            raise KadeployError(ErrorCode.MISSING_OPTION, "No user given (parameter username)")
        nodes = _rights_nodes(as_list(params, "nodes")) or ["*"]
        parts = as_list(params, "partitions") or ["*"]
        added = await ctx.rights.add(username, nodes, parts, as_bool(params, "overwrite"), settings.almighty_users,
                                     dry_run=dry_run)
        return dryrun.answer(request, rights=added) if dry_run else render(request, added)

    def _rights_nodes(patterns: list[str] | None) -> list[str] | None:
        if patterns is None:
            return None
        if "*" in patterns:
            return ["*"]
        nodes = expand_all(patterns)
        unknown = [n for n in nodes if n not in settings.node_cluster]
        if unknown:
            raise KadeployError(ErrorCode.INVALID_NODELIST, f"The node(s) {', '.join(unknown)} do not exist")
        return nodes

    @app.get("/rights", summary="List rights (admins)")
    @app.get("/rights/{user}", summary="List a user's rights (admins)")
    @app.get("/rights/{user}/{node}", summary="List a user's rights on a node (admins)")
    async def rights_list(request: Request, user: str | None = None, node: str | None = None,
                          who: Identity = Auth) -> Response:
        _admin_only(who)
        params = await read_params(request)
        nodes = [node] if node else _rights_nodes(as_list(params, "nodes"))
        return render(request, await ctx.rights.list(user, nodes))

    @app.delete("/rights/{user}", summary="Delete a user's rights (admins)")
    @app.delete("/rights/{user}/{node}", summary="Delete a user's rights on a node (admins)")
    @app.delete("/rights/{user}/{node}/{partition:path}", summary="Delete a right on a partition (admins)")
    async def rights_delete(user: str, request: Request, node: str | None = None, partition: str | None = None,
                            who: Identity = Auth) -> Response:
        _admin_only(who)
        params = await read_params(request)
        dry_run = dryrun.requested(params)
        nodes = [node] if node else _rights_nodes(as_list(params, "nodes"))
        parts = [partition if partition.startswith("/") or partition == "*" else "/" + partition] \
            if partition else as_list(params, "partitions")
        lost = await ctx.rights.delete(user, nodes, parts, dry_run=dry_run)
        targets = (list(settings.node_cluster) if lost == ["*"] else lost) if lost else []
        deleted = {"user": user, "nodes": nodes or ["*"], "partitions": parts or ["*"]}
        if dry_run:
            stopped = [workflow.wid for workflow in ctx.registry.running_on(user, targets)]
            return dryrun.answer(request, **deleted, cancelled=stopped)
        if targets:
            killed = await ctx.registry.kill_user_on_nodes(user, targets)
            if killed:
                log.info("rights of %s removed: cancelled %s", user, ", ".join(killed))
        return render(request, deleted)

    # -- nodes -----------------------------------------------------------------------------
    @app.get("/nodes", summary="Managed nodes and their states")
    @app.get("/nodes/{node}", summary="One node's state")
    async def nodes_get(request: Request, node: str | None = None, who: Identity = Auth) -> Response:
        params = await read_params(request)
        managed = sorted(settings.node_cluster, key=sort_key)
        if "list" in params and as_bool(params, "list"):
            return render(request, managed)
        wanted = [node] if node else (expand_all(as_list(params, "nodes") or []) or managed)
        unknown = [n for n in wanted if n not in settings.node_cluster]
        if unknown:
            raise KadeployError(ErrorCode.INVALID_NODELIST, f"The node(s) {', '.join(unknown)} do not exist")
        states = await database.run(lambda s: db_nodes.get_states(s, wanted))
        # Kadeploy3's order (nodes.rb `get_states`, kanodes.rb): known states sorted by hostname as
        # SQL sorts strings, then the nodes never operated on (null), in the order asked
        answer: dict[str, Any] = {n: states[n].to_api() for n in sorted(states) if n in wanted}
        answer.update({n: None for n in wanted if n not in states})
        return render(request, answer)

    # -- stats ---------------------------------------------------------------------------------
    @app.get("/stats", summary="Statistics")
    @app.get("/stats/{operation}", summary="Statistics of one operation kind")
    async def stats_get(request: Request, operation: str | None = None, who: Identity = Auth) -> Response:
        params = await read_params(request)
        step_retries = [as_int({"s": s}, "s") or 0 for s in (as_list(params, "step_retries") or ["1", "2", "3"])]
        flt = db_stats.StatsFilter(operation=operation, nodes=expand_all(as_list(params, "nodes") or []) or None,
                                   wid=as_str(params, "wid"), date_min=_parse_date(params, "date_min"),
                                   date_max=_parse_date(params, "date_max"),
                                   min_retries=as_int(params, "min_retries", minimum=0), step_retries=step_retries)
        kind = as_str(params, "kind", "all")
        if kind == "failure_rates":
            rate = params.get("min_failure_rate")
            try:
                min_rate = float(rate) if rate not in (None, "") else None
            except (TypeError, ValueError):
                raise KadeployError(ErrorCode.INVALID_OPTION, f"Invalid min_failure_rate {rate!r}") from None
            if min_rate is not None and not 0 <= min_rate <= 1:
                raise KadeployError(ErrorCode.INVALID_OPTION, "min_failure_rate must be between 0 and 1")
            return render(request, await database.run(lambda s: db_stats.failure_rates(s, flt, min_rate)))
        if kind == "steps":  # beyond Kadeploy3: kastat3 --steps
            return render(request, await database.run(lambda s: db_stats.step_durations(s, flt)))
        if kind != "all":
            raise KadeployError(ErrorCode.INVALID_OPTION, f"Invalid kind {kind!r} (all, failure_rates, steps)")
        if "gzip" not in request.headers.get("accept-encoding", ""):
            raise HTTPProblem(406, "The statistics are sent gzip-compressed: send Accept-Encoding: gzip")
        fields = as_list(params, "fields") or list(db_stats.DEFAULT_FIELDS)
        sort = as_list(params, "sort") or ["start"]
        limit = as_int(params, "limit", minimum=1)
        rows = await database.run(lambda s: db_stats.query_records(s, flt, fields, sort, limit))
        # Kadeploy3's lines are MySQL's CONCAT_WS(',', fields...) (server/stats.rb `list_all`): values
        # joined as they are, never quoted, and the error with its " stored as \" (server/debug.rb)
        text = "".join(",".join(_csv_value(value, name) for value, name in zip(row, fields)) + "\n"
                       for row in rows)
        return Response(gzip.compress(text.encode()), media_type="text/csv",
                        headers={"Content-Encoding": "gzip"})

    return app


async def _autoclean(ctx: ServerContext, interval: float) -> None:
    """Every `interval` s, forget workflows finished more than `autoclean_threshold` minutes ago."""
    while True:
        await asyncio.sleep(interval)
        try:
            forgotten = ctx.registry.autoclean(ctx.settings.autoclean_threshold)
            threshold = time.time() - ctx.settings.autoclean_threshold * 60
            await ctx.database.run(lambda s: db_workflows.delete_finished_before(s, threshold))
            if forgotten:
                log.info("autoclean: forgot %s", ", ".join(forgotten))
        except Exception:
            log.exception("autoclean failed")


def _bind_workflow_routes(app: FastAPI, op_path: str, ctx: ServerContext, workflow_of: Any, launch: Any,
                          auth: Any) -> None:
    """The polling resources of one operation family (`/deployment`, `/reboot`, `/power`)."""
    kind = OPERATIONS[op_path]
    tag = [op_path]

    async def workflow_list(request: Request, who: Identity = auth) -> Response:
        if op_path == "power" and "nodes" in request.query_params:
            return await launch(request, who, "power", lambda w, p: ctx.requests.power(w, p, status_only=True))
        return render(request, [wf.info(details=who.admin or wf.user == who.user) for wf in ctx.registry.of_kind(kind)])

    async def workflow_get(wid: str, request: Request, who: Identity = auth) -> Response:
        workflow = workflow_of(op_path, wid, who, details=False)
        return render(request, workflow.info(details=who.admin or workflow.user == who.user))

    # a dry-run read of the new lines leaves them new (dry runs change nothing)
    async def workflow_logs(wid: str, request: Request, who: Identity = auth) -> Response:
        dry_run = dryrun.requested(await read_params(request))
        return PlainTextResponse(workflow_of(op_path, wid, who).read_logs(dry_run=dry_run))

    async def workflow_cluster_logs(wid: str, cluster: str, request: Request, who: Identity = auth) -> Response:
        dry_run = dryrun.requested(await read_params(request))
        return PlainTextResponse(workflow_of(op_path, wid, who).read_logs(cluster, dry_run=dry_run))

    async def workflow_debugs(wid: str, request: Request, who: Identity = auth) -> Response:
        dry_run = dryrun.requested(await read_params(request))
        return PlainTextResponse(workflow_of(op_path, wid, who).read_debugs(dry_run=dry_run))

    async def workflow_node_debugs(wid: str, node: str, request: Request, who: Identity = auth) -> Response:
        dry_run = dryrun.requested(await read_params(request))
        return PlainTextResponse(workflow_of(op_path, wid, who).read_debugs(node, dry_run=dry_run))

    async def workflow_state(wid: str, request: Request, who: Identity = auth) -> Response:
        return render(request, workflow_of(op_path, wid, who).states)

    async def workflow_status(wid: str, request: Request, who: Identity = auth) -> Response:
        return render(request, workflow_of(op_path, wid, who).status())

    async def workflow_error(wid: str, who: Identity = auth) -> Response:
        workflow = workflow_of(op_path, wid, who)
        if workflow.error is not None:
            raise workflow.error
        if workflow.aborted:
            raise KadeployError(ErrorCode.EXECUTE_ERROR, f"The workflow {wid} has been aborted")
        return PlainTextResponse("")

    async def workflow_delete(wid: str, request: Request, who: Identity = auth) -> Response:
        dry_run = dryrun.requested(await read_params(request))
        workflow = workflow_of(op_path, wid, who)
        if dry_run:
            return dryrun.answer(request, wid=wid, running=not workflow.done)
        await ctx.registry.delete(workflow)
        return render(request, {"wid": wid})

    base = f"/{op_path}"
    listing = "List workflows" + (" (with nodes: start a power status)" if op_path == "power" else "")
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
        app.add_api_route(path, endpoint, methods=methods, summary=summary, tags=tag,
                          name=f"{op_path}_{endpoint.__name__}")
