"""`kadeploy3 --resume WID`: a finished deployment's failed or breakpointed nodes start again where they stopped."""

from __future__ import annotations

import httpx
import pytest

from kadeploy.db import rights as db_rights
from kadeploy.server.app import create_app
from kadeploy.operations import DeployRequest, NodeOutcome, Operation, OperationOutcome
from server_fixtures import NODES_C1, make_settings
from test_api_contract import TAR_ENV, deploy, wait_done


class BreakpointingRunner:
    """First run: node 1 succeeds, node 2 stops at a breakpoint, node 3 fails. Records every operation."""

    def __init__(self) -> None:
        self.operations: list[Operation] = []

    async def run(self, op: Operation, sink) -> OperationOutcome:
        self.operations.append(op)
        assert isinstance(op.options, DeployRequest)
        if op.options.resume_points:
            return OperationOutcome({node: NodeOutcome("ok") for node in op.hostnames})
        a, b, c = op.hostnames
        return OperationOutcome(
            {a: NodeOutcome("ok"), b: NodeOutcome("brk"), c: NodeOutcome("ko", "BroadcastEnvKascade-sync: boom")},
            resume={b: {"macro_index": 1, "macro": "BroadcastEnv", "implementation": "BroadcastEnvKascade",
                        "micro": "manage_user_post_install"},
                    c: {"macro_index": 1, "macro": "BroadcastEnv", "implementation": None, "micro": None}})


@pytest.fixture
def runner() -> BreakpointingRunner:
    return BreakpointingRunner()


@pytest.fixture
def app(database, runner):
    database.transaction(lambda s: db_rights.add_rights(s, "alice", NODES_C1, ["*"]))
    return create_app(make_settings(), database, runner)


async def test_resume_runs_only_stopped_nodes_with_the_first_request(client, runner):
    first = (await deploy(client, NODES_C1[:3], breakpoint="BroadcastEnvKascade:manage_user_post_install",
                          disable_bootloader_install=True)).json()["wid"]
    await wait_done(client, f"/deployment/{first}")
    response = await client.post("/deployment", json={"resume": first, "nodes": NODES_C1[:3]})
    assert response.status_code == 200, response.text
    await wait_done(client, f"/deployment/{response.json()['wid']}")
    resumed = runner.operations[-1]
    assert resumed.hostnames == NODES_C1[1:3]
    assert resumed.options.resume_points[NODES_C1[1]].micro == "manage_user_post_install"
    assert resumed.environment.name == TAR_ENV["name"]
    assert resumed.options.disable_bootloader_install is True
    assert resumed.breakpoint is None


async def test_resume_refuses_unknown_workflows_and_other_users(client, app):
    response = await client.post("/deployment", json={"resume": "D-nope", "nodes": NODES_C1[:1]})
    assert response.status_code == 400 and response.headers["X-Application-Error-Code"] == "1"
    first = (await deploy(client, NODES_C1[:3])).json()["wid"]
    await wait_done(client, f"/deployment/{first}")
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40001))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver",
                                 headers={"X-Kadeploy-User": "bob"}) as bob:
        response = await bob.post("/deployment", json={"resume": first, "nodes": NODES_C1[1:3]})
    assert response.status_code == 400 and response.headers["X-Application-Error-Code"] == "6"
