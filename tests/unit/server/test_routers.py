"""The API's routers: one per resource, shared by every app, each app answering from its own context."""

from __future__ import annotations

from pathlib import Path

import httpx

from server_fixtures import database_at, make_settings

from kadeploy.server.app import create_app
from kadeploy.server.routes import ROUTERS
from kadeploy_testbed.dummy import DummyRunner

WORKFLOW_RESOURCES = {"deployment": "post", "reboot": "post", "power": "put"}
POLLING = {("get", ""): "workflow_list", ("get", "/{wid}"): "workflow_get",
           ("delete", "/{wid}"): "workflow_delete", ("get", "/{wid}/logs"): "workflow_logs",
           ("get", "/{wid}/logs/{cluster}"): "workflow_cluster_logs", ("get", "/{wid}/debugs"): "workflow_debugs",
           ("get", "/{wid}/debugs/{node}"): "workflow_node_debugs", ("get", "/{wid}/state"): "workflow_state",
           ("get", "/{wid}/status"): "workflow_status", ("get", "/{wid}/error"): "workflow_error"}


def operation_id(name: str, path: str, method: str) -> str:
    """FastAPI's default operation id: route name, path with non-word characters as `_`, method."""
    return "".join(c if c.isalnum() or c == "_" else "_" for c in f"{name}{path}") + f"_{method}"


async def test_two_apps_from_the_same_routers_answer_each_from_its_own_settings(tmp_path: Path):
    apps = [create_app(make_settings(version=version), database_at(tmp_path / f"{version}.db"), DummyRunner())
            for version in ("3.3.11.stable", "9.9.9.test")]
    for app, version in zip(apps, ("3.3.11.stable", "9.9.9.test")):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/version")).text == version
            assert (await client.get("/nodes", headers={"X-Kadeploy-User": "alice"})).status_code == 200


def test_each_workflow_resource_has_its_launch_and_the_same_polling_operations(tmp_path: Path):
    paths = create_app(make_settings(), database_at(tmp_path / "k.db"), DummyRunner()).openapi()["paths"]
    for resource, launch_method in WORKFLOW_RESOURCES.items():
        launch = paths[f"/{resource}"][launch_method]
        assert launch["operationId"] == operation_id(f"{resource}_create", f"/{resource}", launch_method)
        assert "tags" not in launch
        for (method, suffix), endpoint in POLLING.items():
            operation = paths[f"/{resource}{suffix}"][method]
            path = f"/{resource}{suffix}"
            assert operation["operationId"] == operation_id(f"{resource}_{endpoint}", path, method), path
            assert operation["tags"] == [resource]
    assert "start a power status" in paths["/power"]["get"]["summary"]
    assert "power status" not in paths["/deployment"]["get"]["summary"]


def test_every_route_comes_from_a_resource_router(tmp_path: Path):
    app = create_app(make_settings(), database_at(tmp_path / "k.db"), DummyRunner())
    served = set(app.openapi()["paths"])
    declared = {route.path.replace(":path", "") for router in ROUTERS for route in router.routes}
    assert served == declared
    assert len(ROUTERS) == 10
