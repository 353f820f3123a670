"""`vlan` in deployment and reboot requests (Kadeploy3's paramsparser.rb and kaworkflow.rb).

The VLAN names are resolved when the request arrives: one that does not
resolve refuses the request (error 9, INVALID_VLAN) before any node is
touched, and the runner gets every node's VLAN address with the operation.
A table stands in for the site's DNS, so nothing is sent on the network.
"""

from __future__ import annotations

import base64
import functools
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

import kadeploy.server.requests as requests_module
from kadeploy.server.app import create_app
from kadeploy.operations import Operation, OperationOutcome, WorkflowSink
from kadeploy_testbed.dummy import DummyRunner
from kadeploy.vlan import resolve_vlan_addresses
from server_fixtures import NODES_C1, database_at, make_settings, wait_done

SITE_DNS = {f"node-{i}-kavlan-100.c1.testbed": f"10.200.129.{i}" for i in (1, 2)}


class RecordingRunner(DummyRunner):
    """The Dummy runner, keeping the operations it was given."""

    def __init__(self) -> None:
        super().__init__(delay=0.0)
        self.operations: list[Operation] = []

    async def run(self, op: Operation, sink: WorkflowSink) -> OperationOutcome:
        self.operations.append(op)
        return await super().run(op, sink)


async def site_dns(host, port, *, family=0, type=0, proto=0, flags=0):
    if host not in SITE_DNS:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return [(socket.AF_INET, type, 6, "", (SITE_DNS[host], 0))]


@pytest.fixture
def use_site_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(requests_module, "resolve_vlan_addresses",
                        functools.partial(resolve_vlan_addresses, resolver=site_dns))


@asynccontextmanager
async def client_for(tmp_path: Path, runner: DummyRunner, **settings) -> AsyncIterator[httpx.AsyncClient]:
    database = database_at(tmp_path / "kadeploy.db")
    app = create_app(make_settings(**settings), database, runner)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://t",
                                 headers={"X-Kadeploy-User": "root"}) as client:
        yield client
    database.dispose()


def refusal(response: httpx.Response) -> tuple[int, str]:
    assert response.status_code == 400, response.text
    return int(response.headers["X-Application-Error-Code"]), \
        base64.b64decode(response.headers["X-Application-Error-Info"]).decode()


VLAN_ENABLED = {"vlan_hostname_suffix": "-kavlan-VLAN_ID", "vlan_set_cmd": "kavlan NODES -s -i VLAN_ID -u USER"}


async def test_vlan_is_refused_when_the_site_has_no_vlan_management(tmp_path):
    async with client_for(tmp_path, RecordingRunner(), vlan_hostname_suffix="", vlan_set_cmd="kavlan") as client:
        code, info = refusal(await client.post("/reboot", json={"nodes": NODES_C1[:1], "kind": "simple",
                                                                "vlan": "100"}))
        assert code == 9 and "VLAN management is disabled" in info and "hostname_suffix" in info


async def test_a_vlan_name_that_does_not_resolve_refuses_the_request(tmp_path, use_site_dns):
    runner = RecordingRunner()
    async with client_for(tmp_path, runner, **VLAN_ENABLED) as client:
        code, info = refusal(await client.post("/reboot", json={"nodes": NODES_C1[:3], "kind": "simple",
                                                                "vlan": "100"}))
        assert code == 9 and "node-3-kavlan-100.c1.testbed" in info
        assert runner.operations == []


async def test_the_runner_gets_each_nodes_vlan_address(tmp_path, use_site_dns):
    runner = RecordingRunner()
    async with client_for(tmp_path, runner, **VLAN_ENABLED) as client:
        response = await client.post("/reboot", json={"nodes": NODES_C1[:2], "kind": "simple", "vlan": "100"})
        assert response.status_code == 200, response.text
        await wait_done(client, f"/reboot/{response.json()['wid']}")
    assert runner.operations[0].vlan_addresses == {NODES_C1[0]: "10.200.129.1", NODES_C1[1]: "10.200.129.2"}


async def test_an_invalid_vlan_id_is_refused(tmp_path, use_site_dns):
    async with client_for(tmp_path, RecordingRunner(), **VLAN_ENABLED) as client:
        code, info = refusal(await client.post("/reboot", json={"nodes": NODES_C1[:1], "kind": "simple",
                                                                "vlan": "100; reboot"}))
        assert code == 9 and "Invalid VLAN" in info


async def test_without_vlan_nothing_is_resolved(tmp_path, use_site_dns):
    runner = RecordingRunner()
    async with client_for(tmp_path, runner, **VLAN_ENABLED) as client:
        response = await client.post("/reboot", json={"nodes": NODES_C1[:3], "kind": "simple"})
        assert response.status_code == 200, response.text
        await wait_done(client, f"/reboot/{response.json()['wid']}")
    assert runner.operations[0].vlan_addresses == {}
