"""The kadeploy3d HTTP API (room `server`, reference 1.3-1.4, 1.7, section 8-9).

`create_app(settings, database, runner)` builds the shared `ServerContext` and
the FastAPI application, then includes one router per resource
(`kadeploy.server.routes`): every Kadeploy3 endpoint, same paths, parameters
and response shapes, plus `/metrics` (Prometheus) and the OpenAPI document
(`/openapi.json`, `/docs`). `prepare_database(database)` migrates the schema
and recovers the workflows a crashed server left running; the daemon calls it
before serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.gzip import GZipMiddleware
from starlette.responses import PlainTextResponse, Response

from kadeploy.db import Database
from kadeploy.db import workflows as db_workflows
from kadeploy.errors import KadeployError
from kadeploy.server.auth import AuthenticationError, Authenticator
from kadeploy.server.console import ConsoleFactory, ConsoleRegistry
from kadeploy.server.context import ServerContext
from kadeploy.server.environments import EnvironmentService
from kadeploy.server.http import HTTPProblem, RequestTimeout, error_response, problem_response
from kadeploy.server.logfiles import OperationLogs
from kadeploy.server.metrics import Metrics
from kadeploy.server.openapi import declare_parameters, invalid_parameter
from kadeploy.operations import OperationRunner
from kadeploy.server.requests import RequestBuilder
from kadeploy.server.rights import RightsService
from kadeploy.server.routes import ROUTERS
from kadeploy.server.settings import ServerSettings
from kadeploy.server.workflows import WorkflowRegistry

__all__ = ["AUTOCLEAN_INTERVAL", "ServerContext", "create_app", "prepare_database"]

log = logging.getLogger("kadeploy.server")

AUTOCLEAN_INTERVAL = 300.0


def prepare_database(database: Database) -> list[str]:
    """Migrate to the latest schema, then abort the workflows a dead server left running."""
    database.migrate()
    recovered = database.transaction(db_workflows.recover_interrupted)
    if recovered:
        log.warning("aborted %d workflow(s) interrupted by the previous server stop: %s",
                    len(recovered), ", ".join(recovered))
    return recovered


def create_app(settings: ServerSettings, database: Database, runner: OperationRunner, *,
               console_factory: ConsoleFactory | None = None, fetcher: Any = None,
               autoclean_interval: float = AUTOCLEAN_INTERVAL, files: OperationLogs | None = None) -> FastAPI:
    """The application, running operations with `runner` (the daemon passes the engine runner).

    `files` are the opened server.conf `logs` files (the daemon owns them: opens, reopens on HUP, closes).
    """
    metrics = Metrics()
    rights = RightsService(database, settings.rights_kind)
    environments = EnvironmentService(database, fetcher, settings.almighty_users)
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
    app.state.ctx = ctx  # what the routers' `Context` dependency reads
    app.add_middleware(GZipMiddleware, minimum_size=1000)
    app.add_middleware(RequestTimeout, timeout=settings.request_timeout)  # outermost: it times gzip too
    _install_error_handlers(app, settings)
    for router in ROUTERS:
        app.include_router(router)
    declare_parameters(app)
    return app


def _install_error_handlers(app: FastAPI, settings: ServerSettings) -> None:
    """Our errors become Kadeploy3's answers: error code headers (400), plain problems, 401 with its challenge."""

    @app.exception_handler(KadeployError)
    async def _kadeploy_error(_request: Request, exc: KadeployError) -> Response:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid_parameter(_request: Request, exc: RequestValidationError) -> Response:
        return error_response(invalid_parameter(exc))

    @app.exception_handler(HTTPProblem)
    async def _problem(_request: Request, exc: HTTPProblem) -> Response:
        return problem_response(exc)

    @app.exception_handler(AuthenticationError)
    async def _unauthenticated(_request: Request, exc: AuthenticationError) -> Response:
        headers = {}
        if settings.auth.http_basic_dbfile is not None:
            headers["WWW-Authenticate"] = f'Basic realm="{settings.auth.http_basic_realm}"'
        return PlainTextResponse(str(exc), status_code=401, headers=headers)


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
