"""The shared state of the kadeploy3d API (room `server`).

`create_app` builds one `ServerContext` and stores it in `app.state.ctx`; the
routers in `kadeploy.server.routes` reach it through a FastAPI dependency
(`routes.dependencies.Context`) instead of closures, so that each resource can
live in its own module. Imports only server services, never FastAPI routes.
"""

from __future__ import annotations

from dataclasses import dataclass

from kadeploy.db import Database
from kadeploy.server.auth import Authenticator
from kadeploy.server.console import ConsoleRegistry
from kadeploy.server.environments import EnvironmentService
from kadeploy.server.metrics import Metrics
from kadeploy.server.requests import RequestBuilder
from kadeploy.server.rights import RightsService
from kadeploy.server.settings import ServerSettings
from kadeploy.server.workflows import WorkflowRegistry


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
