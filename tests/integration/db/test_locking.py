"""The DB layer on SQLite, MariaDB and PostgreSQL: migrations, atomic claims, crash recovery, repositories."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from sqlalchemy import inspect

from kadeploy.db import environments as db_envs
from kadeploy.db import locking, nodes, rights, stats
from kadeploy.db import workflows as db_workflows
from kadeploy.errors import KadeployError
from kadeploy.server.app import create_app, prepare_database
from kadeploy_testbed.dummy import DummyRunner

sys.path.insert(0, str(Path(__file__).parents[2] / "unit" / "server"))
from server_fixtures import NODES_C1, make_settings  # noqa: E402

FOUR = NODES_C1[:4]


def test_migration_creates_every_table(database):
    tables = set(inspect(database.engine).get_table_names())
    assert {"environments", "rights", "log", "nodes", "workflows", "node_claims", "alembic_version"} <= tables
    prepare_database(database)  # idempotent


def test_concurrent_claims_give_each_node_to_exactly_one_workflow(database):
    def start(index: int):
        start = db_workflows.WorkflowStart(f"D-{index}", "deploy", "u", FOUR, node_state="deploying")
        try:
            return database.transaction(lambda s: db_workflows.start_workflow(s, start))
        except KadeployError as exc:
            return exc.code

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(start, range(40)))
    claimed = Counter(node for result in results if isinstance(result, tuple) for node in result[0])
    assert claimed == Counter(FOUR)  # every node claimed exactly once
    assert database.transaction(lambda s: locking.claims(s)).keys() == set(FOUR)


def test_force_moves_the_claim_and_the_loser_does_not_release_it(database):
    database.transaction(lambda s: db_workflows.start_workflow(s, db_workflows.WorkflowStart("D-a", "deploy", "u", FOUR)))
    claimed, discarded = database.transaction(lambda s: db_workflows.start_workflow(
        s, db_workflows.WorkflowStart("D-b", "deploy", "v", FOUR[:1], force=True)))
    assert (claimed, discarded) == (FOUR[:1], [])
    database.transaction(lambda s: db_workflows.finish_workflow(s, "D-a", "done",
                                                                node_states={n: "deployed" for n in FOUR}))
    assert database.transaction(lambda s: locking.claims(s)) == {FOUR[0]: "D-b"}


def test_recovery_aborts_running_workflows_and_frees_their_nodes(database):
    database.transaction(lambda s: db_workflows.start_workflow(
        s, db_workflows.WorkflowStart("D-crashed", "deploy", "u", FOUR[:2], node_state="deploying")))
    assert database.transaction(db_workflows.recover_interrupted) == ["D-crashed"]
    assert database.transaction(lambda s: locking.claims(s)) == {}
    states = database.transaction(lambda s: nodes.get_states(s, FOUR[:2]))
    assert {n: st.state for n, st in states.items()} == {FOUR[0]: "aborted", FOUR[1]: "aborted"}
    assert database.transaction(lambda s: db_workflows.get_workflow(s, "D-crashed").state) == "aborted"


def test_repositories(database):
    env = {"name": "debian", "version": 3, "os": "linux", "image": {"file": "/x.tgz", "kind": "tar"},
           "postinstalls": [{"archive": "/p,1|2.tgz", "compression": "gzip", "script": "run"}]}
    database.transaction(lambda s: db_envs.add_environment(s, env, "alice"))
    found = database.transaction(lambda s: [db_envs.to_api(r) for r in db_envs.find_environments(s, name="deb%",
                                                                                                  name_like=True)])
    assert found[0]["postinstalls"][0]["archive"] == "/p,1|2.tgz" and found[0]["user"] == "alice"
    database.transaction(lambda s: rights.add_rights(s, "alice", ["*"], ["/dev/sda3"]))
    assert database.transaction(lambda s: rights.nodes_without_right(s, "alice", FOUR, "/dev/sda5")) == FOUR
    assert database.transaction(lambda s: rights.nodes_without_right(s, "alice", FOUR, "/dev/sda3")) == []
    database.transaction(lambda s: stats.add_records(s, [
        {"wid": "D-1", "user": "alice", "hostname": FOUR[0], "start": 100, "success": True, "retry_step2": 2},
        {"wid": "D-2", "user": "alice", "hostname": FOUR[0], "start": 200, "success": False}]))
    flt = stats.StatsFilter(operation="deploy")
    assert database.transaction(lambda s: stats.failure_rates(s, flt)) == {FOUR[0]: 0.5}
    rows = database.transaction(lambda s: stats.query_records(s, stats.StatsFilter(min_retries=2), ["wid"]))
    assert rows == [["D-1"]]


async def test_fifty_concurrent_deployments_of_the_same_four_nodes(database):
    # no cap on running workflows (security/max_running_workflows_per_user): the claims are the subject here
    app = create_app(make_settings(rights_kind="dummy", max_running_per_user=0), database, DummyRunner(delay=10))
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 1))
    env = {"kind": "anonymous", "name": "e", "os": "linux", "filesystem": "ext4", "boot": {"kernel": "/vmlinuz"},
           "image": {"file": "/e.tgz", "kind": "tar", "compression": "gzip"}}
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers={"X-Kadeploy-User": "u"},
                                 timeout=60) as client:
        responses = await asyncio.gather(*(client.post("/deployment", json={"nodes": FOUR, "environment": env})
                                           for _ in range(50)))
        launched = [r.json()["wid"] for r in responses if r.status_code == 200]
        refused = [r for r in responses if r.status_code != 200]
        assert all(r.headers["X-Application-Error-Code"] == "14" for r in refused)
        owners: Counter[str] = Counter()
        for wid in launched:
            info = (await client.get(f"/deployment/{wid}")).json()
            assert info["done"] is False
            owners.update(info["nodes"]["processing"])
        assert owners == Counter(FOUR)  # each node belongs to exactly one workflow
        claims = database.transaction(lambda s: locking.claims(s))
        assert set(claims) == set(FOUR) and set(claims.values()) <= set(launched)
        for wid in launched:
            await client.delete(f"/deployment/{wid}")
        assert database.transaction(lambda s: locking.claims(s)) == {}
