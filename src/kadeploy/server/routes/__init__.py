"""The kadeploy3d API, one FastAPI router per resource (room `server`).

Each module serves one resource and gets the shared `ServerContext` and the
caller's identity through the dependencies of `routes.dependencies`.
`ROUTERS` is the order in which `create_app` includes them; the workflow
resources (deployment, reboot, power) are built by one factory in
`routes.workflows`.
"""

from __future__ import annotations

from fastapi import APIRouter

from kadeploy.server.routes import (console, deployment, environments, metrics, nodes, power, reboot, rights,
                                    static, stats)

ROUTERS: tuple[APIRouter, ...] = (static.router, metrics.router, deployment.router, reboot.router, power.router,
                                  console.router, environments.router, rights.router, nodes.router, stats.router)
