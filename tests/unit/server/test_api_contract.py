"""Contract tests of the HTTP API on SQLite: paths, status codes, shapes, error codes and headers."""

from __future__ import annotations

import base64
import gzip

import httpx
import yaml

from server_fixtures import NODES_C1, NODES_C2, make_settings, wait_done

from kadeploy.db import rights as db_rights
from kadeploy.server.app import create_app

TAR_ENV = {"name": "debian", "version": 1, "os": "linux", "visibility": "private",
           "image": {"file": "http://files/debian.tgz", "kind": "tar", "compression": "gzip"},
           "boot": {"kernel": "/vmlinuz", "initrd": "/initrd.img"}, "filesystem": "ext4"}


def app_error(response: httpx.Response) -> tuple[int, str]:
    assert response.status_code == 400, response.text
    code = int(response.headers["X-Application-Error-Code"])
    info = base64.b64decode(response.headers["X-Application-Error-Info"]).decode()
    assert info == response.text
    return code, info


async def deploy(client: httpx.AsyncClient, nodes: list[str], **extra) -> httpx.Response:
    return await client.post("/deployment", json={"nodes": nodes, "environment": {"kind": "anonymous", **TAR_ENV},
                                                  **extra})


async def test_static_resources_need_no_authentication(app):
    transport = httpx.ASGITransport(app=app, client=("10.9.9.9", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as anonymous:
        assert (await anonymous.get("/version")).text == "3.3.11.stable"
        assert (await anonymous.get("/auth_headers_prefix")).text == "X-Kadeploy-"
        assert (await anonymous.get("/clusters")).json() == ["c1", "c2"]
        info = (await anonymous.get("/info")).json()
        assert info["pxe"] == "PXElinux"
        assert info["automata"]["c1"]["SetDeploymentEnv"][0] == {"name": "SetDeploymentEnvUntrusted",
                                                                 "retries": 2, "timeout": 200}
        assert "KADEPLOY_DEPLOY_PART" in info["vars"]
        assert (await anonymous.get("/nodes")).status_code == 401


async def test_deployment_lifecycle_with_polling_resources(client):
    response = await deploy(client, ["node-[1-2].c1.testbed", NODES_C2[0]], debug=True)
    assert response.status_code == 200
    launched = response.json()
    wid = launched["wid"]
    assert wid.startswith("D-")
    resources = launched["resources"]
    assert resources["resource"] == f"/deployment/{wid}"
    assert resources["logs"] == {"c1": f"/deployment/{wid}/logs/c1", "c2": f"/deployment/{wid}/logs/c2"}
    assert set(resources["debugs"]) == {NODES_C1[0], NODES_C1[1], NODES_C2[0]}
    running = (await client.get(f"/deployment/{wid}")).json()
    assert running["done"] is False and "processing" in running["nodes"]
    info = await wait_done(client, f"/deployment/{wid}")
    assert info["error"] is False
    assert sorted(info["nodes"]["ok"]) == sorted([NODES_C1[0], NODES_C1[1], NODES_C2[0]])
    assert info["environment"]["name"] == "debian"

    c1_lines = (await client.get(f"/deployment/{wid}/logs/c1")).text.splitlines()
    assert c1_lines and all("|" in line for line in c1_lines)
    stamp, _, text = c1_lines[0].partition("|")
    assert float(stamp) > 0 and "node-1.c1.testbed" in text
    assert (await client.get(f"/deployment/{wid}/logs/c1")).text == ""  # only new lines
    all_lines = (await client.get(f"/deployment/{wid}/logs")).text.splitlines()
    assert len(all_lines) > len(c1_lines)
    assert (await client.get(f"/deployment/{wid}/logs")).text == ""
    debug = (await client.get(f"/deployment/{wid}/debugs/{NODES_C1[0]}")).text
    assert NODES_C1[0] in debug

    state = (await client.get(f"/deployment/{wid}/state")).json()
    assert state[NODES_C1[0]]["state"] == "ok"
    assert (await client.get(f"/deployment/{wid}/status")).json() == {}
    assert (await client.get(f"/deployment/{wid}/error")).status_code == 200

    nodes = (await client.get("/nodes")).json()
    assert nodes[NODES_C1[0]]["state"] == "deployed" and nodes[NODES_C1[0]]["user"] == "alice"
    assert nodes[NODES_C1[3]] is None
    listing = (await client.get("/deployment")).json()
    assert [w["wid"] for w in listing] == [wid]

    assert (await client.delete(f"/deployment/{wid}")).json() == {"wid": wid}
    code, _ = app_error(await client.get(f"/deployment/{wid}"))
    assert code == 1


async def test_yaml_answers_and_yaml_bodies(client):
    body = yaml.safe_dump({"nodes": [NODES_C1[0]], "kind": "simple"})
    response = await client.post("/reboot", content=body, headers={"Content-Type": "application/x-yaml",
                                                                   "Accept": "application/x-yaml"})
    assert response.headers["content-type"].startswith("application/x-yaml")
    launched = yaml.safe_load(response.text)  # Ruby's `:wid` symbol key (kadeploy.psych) reads back as ':wid'
    assert launched[":wid"].startswith("R-")
    await wait_done(client, f"/reboot/{launched[':wid']}")
    assert (await client.get("/nodes", params={"nodes": NODES_C1[0]})).json()[NODES_C1[0]]["state"] == "rebooted"


async def test_gzip_when_accepted(client):
    response = await client.get("/info", headers={"Accept-Encoding": "gzip"})
    assert response.headers.get("content-encoding") == "gzip"
    assert response.json()["pxe"] == "PXElinux"


async def test_application_errors(client):
    assert app_error(await client.post("/deployment", json={"environment": {"kind": "anonymous", **TAR_ENV}}))[0] == 12
    assert app_error(await deploy(client, ["ghost.c1.testbed"]))[0] == 2
    assert app_error(await client.post("/deployment", json={"nodes": [NODES_C1[0]]}))[0] == 12
    bad_env = {**TAR_ENV, "filesystem": ""}
    assert app_error(await client.post("/deployment", json={"nodes": [NODES_C1[0]],
                                                            "environment": {"kind": "anonymous", **bad_env}}))[0] == 7
    assert app_error(await client.post("/deployment", json={"nodes": [NODES_C1[0]], "environment": {
        "kind": "database", "name": "nope"}}))[0] == 7
    assert app_error(await deploy(client, [NODES_C1[0]], breakpoint="bad breakpoint!"))[0] == 4
    assert app_error(await deploy(client, [NODES_C1[0]], verbose_level=9))[0] == 4
    assert app_error(await client.post("/reboot", json={"nodes": [NODES_C1[0]], "kind": "warp"}))[0] == 4
    assert app_error(await client.post("/reboot", json={"nodes": [NODES_C1[0]]}))[0] == 12
    assert app_error(await client.put("/power", json={"nodes": [NODES_C1[0]], "status": "dim"}))[0] == 4
    assert app_error(await client.post("/deployment", content=b"[1, 2]",
                                       headers={"Content-Type": "application/json"}))[0] == 4
    assert (await client.post("/deployment", content=b"x" * (1024 * 1024 + 1),
                              headers={"Content-Type": "application/json"})).status_code == 413
    assert (await client.post("/deployment", content=b"a", headers={"Content-Type": "text/html"})).status_code == 415
    assert app_error(await client.get("/deployment/D-unknown"))[0] == 1


async def test_rights_are_checked(client, database):
    from kadeploy.db import rights as db_rights

    database.transaction(lambda s: db_rights.delete_rights(s, "alice", [NODES_C1[3]]))
    code, message = app_error(await deploy(client, [NODES_C1[2], NODES_C1[3]]))
    assert code == 6 and "sufficient rights" in message and NODES_C1[3] in message
    database.transaction(lambda s: db_rights.delete_rights(s, "alice", [NODES_C1[2]]))
    database.transaction(lambda s: db_rights.add_rights(s, "alice", [NODES_C1[2]], ["/dev/sda5"]))
    assert app_error(await deploy(client, [NODES_C1[2]]))[0] == 6  # right on sda5, deploy part is sda3
    response = await client.post("/reboot", json={"nodes": [NODES_C1[2]], "kind": "simple"})
    assert response.status_code == 200  # some right on the node is enough to reboot


async def test_busy_nodes_are_discarded_then_error_14(client, runner):
    runner.delay = 0.5
    first = (await deploy(client, NODES_C1[:2])).json()["wid"]
    second = await deploy(client, NODES_C1[1:3])
    assert second.status_code == 200
    wid2 = second.json()["wid"]
    state = (await client.get(f"/deployment/{wid2}/state")).json()
    assert state[NODES_C1[1]]["state"] == "discarded"
    assert (await client.get(f"/deployment/{wid2}")).json()["nodes"]["processing"] == [NODES_C1[2]]
    code, message = app_error(await deploy(client, NODES_C1[:2]))
    assert code == 14 and "discarded" in message
    forced = await deploy(client, NODES_C1[:1], force=True)
    assert forced.status_code == 200
    for wid in (first, wid2, forced.json()["wid"]):
        await wait_done(client, f"/deployment/{wid}")
    # everything ended: the nodes are free again
    assert (await deploy(client, NODES_C1[:3])).status_code == 200


async def test_cancel_marks_nodes_aborted_and_frees_them(client, runner):
    runner.delay = 30
    wid = (await deploy(client, NODES_C1[:2])).json()["wid"]
    assert (await client.delete(f"/deployment/{wid}")).json() == {"wid": wid}
    nodes = (await client.get("/nodes")).json()
    assert nodes[NODES_C1[0]]["state"] == "aborted"
    runner.delay = 0
    again = (await deploy(client, NODES_C1[:2])).json()["wid"]
    assert (await wait_done(client, f"/deployment/{again}"))["nodes"]["ok"] == NODES_C1[:2]


async def test_owner_or_admin_only(app, client, runner):
    runner.delay = 0.2
    wid = (await deploy(client, NODES_C1[:1])).json()["wid"]
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers={"X-Kadeploy-User": "eve"}) as eve:
        assert (await eve.get(f"/deployment/{wid}")).json().keys() == {"wid", "user", "done", "error",
                                                                         "start_time", "nodes"}
        for path in ("logs", "state", "status", "error"):
            assert (await eve.get(f"/deployment/{wid}/{path}")).status_code == 403
        assert (await eve.delete(f"/deployment/{wid}")).status_code == 403
        assert (await eve.get("/rights")).status_code == 403
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers={"X-Kadeploy-User": "root"}) as root:
        assert "logs" in (await root.get(f"/deployment/{wid}")).json()


async def test_power_on_and_power_status(client):
    launched = (await client.put("/power", json={"nodes": [NODES_C1[0]], "status": "on"})).json()
    assert launched["wid"].startswith("P-")
    await wait_done(client, f"/power/{launched['wid']}")
    status = (await client.get("/power", params={"nodes": NODES_C1[0]})).json()
    info = await wait_done(client, f"/power/{status['wid']}")
    assert info["nodes"]["ok"] == [NODES_C1[0]]
    assert (await client.get(f"/power/{status['wid']}/state")).json()[NODES_C1[0]]["out"] == "on"
    assert f"{NODES_C1[0]}: on" in (await client.get(f"/power/{status['wid']}/logs")).text


async def test_environments_catalogue(app, client):
    created = await client.post("/environments", json={"environment": TAR_ENV})
    assert created.status_code == 200 and created.json()["user"] == "alice"
    assert app_error(await client.post("/environments", json={"environment": TAR_ENV}))[0] == 10
    public = await client.post("/environments", json={"environment": {**TAR_ENV, "version": 2, "visibility": "public"}})
    assert public.status_code == 403        # Kadeploy3's envs_rights? refusal: error_forbidden!
    await client.post("/environments", json={"environment": {**TAR_ENV, "version": 2}})
    listed = (await client.get("/environments", params={"name": "deb%", "last": "true"})).json()
    assert [(e["name"], e["version"]) for e in listed] == [("debian", 2)]
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers={"X-Kadeploy-User": "bob"}) as bob:
        assert (await bob.get("/environments")).json() == []  # private
        modified = await client.put("/environments/alice/debian/2", json={"visibility": "shared"})
        assert modified.json()[0]["visibility"] == "shared"
        assert (await bob.get("/environments")).json() == []  # shared: only listed with the owner
        assert [e["version"] for e in (await bob.get("/environments", params={"username": "alice"})).json()] == [2]
        assert (await bob.delete("/environments/alice/debian/2")).status_code == 403
    toggled = await client.put("/environments/alice/debian", json={"toggle_destructive": True})
    assert toggled.json()[0]["destructive"] is True and toggled.json()[0]["version"] == 2
    wid = (await client.post("/deployment", json={"nodes": [NODES_C1[0]], "environment": {
        "kind": "database", "name": "debian"}})).json()["wid"]
    assert (await wait_done(client, f"/deployment/{wid}"))["environment"]["version"] == 2
    deleted = await client.delete("/environments/alice/debian", params={"last": "true"})
    assert [e["version"] for e in deleted.json()] == [2]
    assert [e["version"] for e in (await client.get("/environments")).json()] == [1]


async def test_rights_management_by_admins(app, client, runner):
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers={"X-Kadeploy-User": "root"}) as root:
        conflict = await root.post("/rights", json={"username": "bob", "nodes": [NODES_C2[0]]})
        assert app_error(conflict)[0] == 11 and "alice" in conflict.text
        added = await root.post("/rights", json={"username": "bob", "nodes": [NODES_C2[0]],
                                                 "partitions": ["/dev/sda3"], "overwrite": True})
        assert added.json() == {"bob": {NODES_C2[0]: ["/dev/sda3"]}}
        assert app_error(await root.post("/rights", json={"username": "carol", "nodes": [NODES_C2[0]]}))[0] == 11
        assert (await root.get("/rights/bob")).json() == {"bob": {NODES_C2[0]: ["/dev/sda3"]}}
        assert NODES_C2[0] not in (await root.get("/rights/alice")).json()["alice"]
        runner.delay = 30
        wid = (await deploy(client, [NODES_C2[1]])).json()["wid"]
        await root.delete(f"/rights/alice/{NODES_C2[1]}")
        info = (await client.get(f"/deployment/{wid}")).json()
        assert info["done"] is True and info["error"] is True  # killed: no right left on its node
        assert app_error(await root.delete("/rights/nobody"))[0] == 14


async def test_stats_csv_and_failure_rates(app, client, runner):
    runner.failing = {NODES_C1[1]: "disk on fire"}
    wid = (await deploy(client, NODES_C1[:2])).json()["wid"]
    await wait_done(client, f"/deployment/{wid}")
    response = await client.get("/stats", params=[("fields", "wid"), ("fields", "hostname"), ("fields", "success")],
                                headers={"Accept-Encoding": "gzip"})
    assert response.headers["content-type"].startswith("text/csv")
    body = response.content if not response.headers.get("content-encoding") else response.content
    lines = sorted(body.decode().splitlines())
    assert lines == [f"{wid},{NODES_C1[0]},true", f"{wid},{NODES_C1[1]},false"]
    rates = (await client.get("/stats/deploy", params={"kind": "failure_rates", "min_failure_rate": "0.5"})).json()
    assert rates == {NODES_C1[1]: 1.0}
    assert (await client.get("/stats/reboot", params={"kind": "failure_rates"})).json() == {}
    assert (await client.get("/stats", headers={"Accept-Encoding": "identity"})).status_code == 406
    assert app_error(await client.get("/stats", params={"fields": "password"},
                                      headers={"Accept-Encoding": "gzip"}))[0] == 4
    raw = await client.get("/stats", params={"fields": "hostname", "wid": wid}, headers={"Accept-Encoding": "gzip"})
    assert NODES_C1[0] in raw.text
    assert gzip.decompress(gzip.compress(b"x")) == b"x"


async def test_console_without_factory_is_an_error(client):
    assert app_error(await client.post("/console", json={"node": NODES_C1[0]}))[0] == 15
    assert (await client.get("/console")).json() == []


async def test_metrics_and_openapi(client):
    wid = (await deploy(client, NODES_C1[:1])).json()["wid"]
    await wait_done(client, f"/deployment/{wid}")
    assert (await client.get("/metrics")).status_code == 403          # alice: administrators only
    text = (await client.get("/metrics", headers={"X-Kadeploy-User": "root"})).text
    assert 'kadeploy_workflows_running{kind="deploy"} 0' in text
    assert 'kadeploy_nodes{state="deployed"} 1' in text
    assert 'kadeploy_step_duration_seconds_count{step="SetDeploymentEnvDummy"} 1' in text
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert "/deployment/{wid}/logs/{cluster}" in paths and "/rights/{user}/{node}/{partition}" in paths


async def test_recorded_env_reboot_onto_the_prod_partition_leaves_the_node_in_prod_env(database, runner):
    """Reference 5.2: RebootRecordedEnv ends in `prod_env` on the cluster's prod partition, else `recorded_env`."""
    database.transaction(lambda s: db_rights.add_rights(s, "alice", NODES_C1, ["*"]))
    settings = make_settings()
    settings.clusters["c1"].prod_partition = 2
    app = create_app(settings, database, runner)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver",
                                 headers={"X-Kadeploy-User": "alice"}) as client:
        await client.post("/environments", json={"environment": TAR_ENV})
        for partition, node, expected in ((2, NODES_C1[0], "prod_env"), (3, NODES_C1[1], "recorded_env")):
            launched = await client.post("/reboot", json={
                "nodes": [node], "kind": "recorded_env", "deploy_partition": partition,
                "environment": {"kind": "database", "name": "debian", "user": "alice"}})
            assert launched.status_code == 200, launched.text
            await wait_done(client, f"/reboot/{launched.json()['wid']}")
            assert (await client.get("/nodes", params={"nodes": node})).json()[node]["state"] == expected


async def test_request_automata_refuse_names_we_do_not_provide(client):
    """`kadeploy3 --force-steps` with a Kadeploy3 name we lack: error 4 naming it, no workflow started."""
    def steps(broadcast: str, setup: str = "SetDeploymentEnvUntrusted") -> dict:
        return {"SetDeploymentEnv": [{"name": setup, "retries": 0, "timeout": 200}],
                "BroadcastEnv": [{"name": broadcast, "retries": 0, "timeout": 200}],
                "BootNewEnv": [{"name": "BootNewEnvClassical", "retries": 0, "timeout": 200}]}

    code, info = app_error(await deploy(client, [NODES_C1[0]],
                                        automata=steps("BroadcastEnvChain", setup="SetDeploymentEnvNfsroot")))
    assert code == 4
    assert 'implementation "SetDeploymentEnvNfsroot" is not supported by this Kadeploy (supported: Dummy, ' in info
    code, info = app_error(await deploy(client, [NODES_C1[0]], automata=steps("BroadcastEnvPigeon")))
    assert code == 4 and 'unknown BroadcastEnv implementation "BroadcastEnvPigeon"' in info
    assert (await client.get("/deployment")).json() == []
