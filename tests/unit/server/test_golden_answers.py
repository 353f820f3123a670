"""Server answers that Kadeploy3's tools print as they are: kastat3's CSV, failure rates,
kanodes3's node states (their order and null environments) and workflow statuses."""

from __future__ import annotations

import httpx

from kadeploy.db import nodes as db_nodes
from kadeploy.db import stats as db_stats
from server_fixtures import NODES_C1, wait_done


def _record(hostname: str, start: int, success: bool, error: str = "") -> dict:
    return {"wid": f"D-{start}", "user": "alice", "hostname": hostname, "step1": "SetDeploymentEnvUntrusted",
            "step2": "BroadcastEnvKascade", "step3": "BootNewEnvKexec", "timeout_step1": 200,
            "timeout_step2": 300, "timeout_step3": 200, "retry_step1": 0, "retry_step2": 1, "retry_step3": 0,
            "start": start, "step1_duration": 10, "step2_duration": 20, "step3_duration": 30,
            "env": "debian12-min:1", "md5": "", "success": success, "error": error}


async def test_kastat3_lines_are_concat_ws_never_quoted(client: httpx.AsyncClient, database) -> None:
    # server/stats.rb `list_all`: SELECT CONCAT_WS(',',fields) ... ORDER BY start; the error was
    # stored with " escaped as \" (server/debug.rb `dump_to_db`)
    database.transaction(lambda s: db_stats.add_records(s, [
        _record(NODES_C1[1], 1700000002, False, 'BootNewEnv-reboot: "ssh" failed, exit 255'),
        _record(NODES_C1[0], 1700000001, True)]))
    answer = await client.get("/stats", params={"fields": ["hostname", "start", "success", "error", "env"]})
    assert answer.headers["content-type"].startswith("text/csv")
    assert answer.text == (
        f"{NODES_C1[0]},1700000001,true,,debian12-min:1\n"
        f'{NODES_C1[1]},1700000002,false,BootNewEnv-reboot: \\"ssh\\" failed, exit 255,debian12-min:1\n')


async def test_failure_rates_come_by_hostname(client: httpx.AsyncClient, database) -> None:
    # server/stats.rb `list_failure_rates`: GROUP BY hostname, rate.round(3)
    database.transaction(lambda s: db_stats.add_records(s, [
        _record(NODES_C1[2], 1, False), _record(NODES_C1[0], 2, True), _record(NODES_C1[0], 3, False),
        _record(NODES_C1[0], 4, False), _record(NODES_C1[1], 5, True)]))
    rates = (await client.get("/stats", params={"kind": "failure_rates"})).json()
    assert list(rates.items()) == [(NODES_C1[0], 0.667), (NODES_C1[1], 0.0), (NODES_C1[2], 1.0)]


async def test_node_states_sorted_then_never_operated_nodes(client: httpx.AsyncClient, database) -> None:
    # common/nodes.rb `get_states` (ORDER BY hostname, LEFT JOIN environments), then
    # server/kanodes.rb sets the other nodes to nil
    database.transaction(lambda s: db_nodes.set_states(s, {NODES_C1[2]: "deployed"}, user="alice",
                                                       environment={"id": 1, "name": "debian12-min",
                                                                    "version": 1, "user": "root"}))
    database.transaction(lambda s: db_nodes.set_states(s, {NODES_C1[1]: "aborted"}, user="bob"))
    answer = (await client.get("/nodes", params={"nodes": [NODES_C1[0], NODES_C1[2], NODES_C1[1]]})).json()
    assert list(answer.items()) == [
        (NODES_C1[1], {"state": "aborted", "user": "bob",
                       "environment": {"name": None, "version": None, "user": None}}),
        (NODES_C1[2], {"state": "deployed", "user": "alice",
                       "environment": {"name": "debian12-min", "version": 1, "user": "root"}}),
        (NODES_C1[0], None),
    ]


async def test_workflow_status_keys_are_work_gets(client: httpx.AsyncClient) -> None:
    # server/kaworkflow.rb `work_get`: no :debugs without a debugger (no -d), then :nodes and :time
    launched = (await client.post("/reboot", json={"nodes": NODES_C1[:1], "kind": "simple"})).json()
    info = await wait_done(client, f"/reboot/{launched['wid']}")
    assert list(info) == ["wid", "user", "done", "error", "start_time", "logs", "nodes", "time"]
    assert set(info["nodes"]) == {"ok", "ko"}
