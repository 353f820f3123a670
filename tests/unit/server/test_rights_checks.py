"""Rights (reference section 9): every operation checks them, nothing runs without them, revoking stops work."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from kadeploy.db import nodes as db_nodes
from kadeploy.db import rights as db_rights
from kadeploy.server.app import create_app
from kadeploy_testbed.dummy import DummyRunner
from server_fixtures import NODES_C1, database_at, make_settings, wait_done

ENV = {"kind": "anonymous", "name": "e", "os": "linux",
       "image": {"file": "http://files/e.tgz", "kind": "tar", "compression": "gzip"},
       "boot": {"kernel": "/vmlinuz"}, "filesystem": "ext4"}


def error_code(response: httpx.Response) -> int:
    assert response.status_code == 400, response.text
    base64.b64decode(response.headers["X-Application-Error-Info"])
    return int(response.headers["X-Application-Error-Code"])


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[tuple]:
    database = database_at(tmp_path / "kadeploy.db")
    runner = DummyRunner(delay=0.0)
    app = create_app(make_settings(), database, runner)
    clients = {}
    for user in ("bob", "root"):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
        clients[user] = httpx.AsyncClient(transport=transport, base_url="http://t", headers={"X-Kadeploy-User": user})
    yield database, runner, clients["bob"], clients["root"]
    for client in clients.values():
        await client.aclose()
    database.dispose()


def grant(database, user: str, nodes: list[str], parts: list[str]) -> None:
    database.transaction(lambda s: db_rights.add_rights(s, user, nodes, parts))


async def test_no_right_on_one_node_of_the_request_is_error_6_and_nothing_runs(site):
    database, _runner, bob, _root = site
    grant(database, "bob", NODES_C1[:1], ["*"])
    requests = [
        bob.post("/deployment", json={"nodes": NODES_C1[:2], "environment": ENV}),
        bob.post("/reboot", json={"nodes": NODES_C1[:2], "kind": "simple"}),
        bob.put("/power", json={"nodes": NODES_C1[:2], "status": "off"}),
        bob.get("/power", params={"nodes": NODES_C1[:2]}),
        bob.post("/console", json={"node": NODES_C1[1]}),
    ]
    for request in requests:
        response = await request
        assert error_code(response) == 6
        assert NODES_C1[1] in response.text
    for path in ("/deployment", "/reboot", "/power"):
        assert (await bob.get(path)).json() == []
    assert database.transaction(lambda s: db_nodes.get_states(s, NODES_C1)) == {}


async def test_deployment_needs_the_deploy_partition_reboot_does_not(site):
    database, _runner, bob, _root = site
    grant(database, "bob", NODES_C1[:1], ["/dev/sda5"])
    refused = await bob.post("/deployment", json={"nodes": NODES_C1[:1], "environment": ENV})
    assert error_code(refused) == 6 and "/dev/sda3" in refused.text
    allowed = await bob.post("/deployment", json={"nodes": NODES_C1[:1], "environment": ENV, "deploy_partition": 5})
    assert (await wait_done(bob, f"/deployment/{allowed.json()['wid']}"))["error"] is False
    rebooted = await bob.post("/reboot", json={"nodes": NODES_C1[:1], "kind": "simple"})
    assert (await wait_done(bob, f"/reboot/{rebooted.json()['wid']}"))["error"] is False


async def test_wildcard_rights_and_almighty_users(site):
    database, _runner, bob, root = site
    grant(database, "bob", ["*"], ["*"])
    launched = await bob.post("/deployment", json={"nodes": NODES_C1, "environment": ENV})
    assert (await wait_done(bob, f"/deployment/{launched.json()['wid']}"))["nodes"]["ok"] == NODES_C1
    by_root = await root.post("/reboot", json={"nodes": NODES_C1[:1], "kind": "simple"})  # root has no row at all
    assert (await wait_done(root, f"/reboot/{by_root.json()['wid']}"))["error"] is False


async def test_revoking_rights_stops_the_users_running_deployment(site):
    database, runner, bob, root = site
    grant(database, "bob", NODES_C1[:2], ["*"])
    runner.delay = 60
    wid = (await bob.post("/deployment", json={"nodes": NODES_C1[:2], "environment": ENV})).json()["wid"]
    await asyncio.sleep(0.1)
    assert (await bob.get(f"/deployment/{wid}")).json()["done"] is False
    started = time.monotonic()
    revoked = await root.delete("/rights/bob", params={"nodes": NODES_C1[1]})
    assert revoked.status_code == 200
    info = await wait_done(bob, f"/deployment/{wid}", timeout=5)
    assert info["error"] is True and time.monotonic() - started < 5
    states = database.transaction(lambda s: db_nodes.get_states(s, NODES_C1[:2]))
    assert {node: state.state for node, state in states.items()} == {n: "aborted" for n in NODES_C1[:2]}
    assert (await root.get("/rights/bob")).json() == {"bob": {NODES_C1[0]: ["*"]}}


async def test_revoking_a_partition_while_another_remains_does_not_stop_anything(site):
    database, runner, bob, root = site
    grant(database, "bob", NODES_C1[:1], ["*", "/dev/sda5"])
    runner.delay = 0.5
    wid = (await bob.post("/deployment", json={"nodes": NODES_C1[:1], "environment": ENV})).json()["wid"]
    assert (await root.delete(f"/rights/bob/{NODES_C1[0]}/dev/sda5")).status_code == 200
    info = await wait_done(bob, f"/deployment/{wid}")
    assert info["error"] is False and info["nodes"]["ok"] == NODES_C1[:1]


async def test_only_administrators_manage_rights(site):
    _database, _runner, bob, _root = site
    assert (await bob.post("/rights", json={"username": "bob", "nodes": NODES_C1})).status_code == 403
    assert (await bob.get("/rights")).status_code == 403
    assert (await bob.delete("/rights/bob")).status_code == 403


def test_rights_listed_for_a_node_include_rights_on_every_node(tmp_path):
    from kadeploy.db import rights as db_rights
    from server_fixtures import database_at

    database = database_at(tmp_path / "rights.db")
    try:
        database.transaction(lambda s: db_rights.add_rights(s, "carol", ["*"], ["*"]))
        database.transaction(lambda s: db_rights.add_rights(s, "dave", ["node-1.c1.testbed"], ["/dev/sda3"]))
        listed = database.transaction(lambda s: db_rights.list_rights(s, None, ["node-1.c1.testbed"]))
        assert listed == {"carol": {"*": ["*"]}, "dave": {"node-1.c1.testbed": ["/dev/sda3"]}}
        assert database.transaction(lambda s: db_rights.list_rights(s, "dave", ["node-2.c1.testbed"])) == {}
    finally:
        database.dispose()
