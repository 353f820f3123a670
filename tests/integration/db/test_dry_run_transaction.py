"""A dry-run transaction on SQLite, MariaDB and PostgreSQL: the work runs, the database refuses as for real,
and nothing stays."""

from __future__ import annotations

import time

import pytest

from kadeploy.db import locking, rights
from kadeploy.db import workflows as db_workflows
from kadeploy.errors import ErrorCode, KadeployError

NODES = ["node-1.c1.test", "node-2.c1.test"]


def test_a_dry_run_sees_its_writes_then_leaves_nothing(database):
    added = database.transaction(lambda s: rights.add_rights(s, "alice", NODES, ["*"]), dry_run=True)
    assert sorted(added) == [(node, "*") for node in NODES]  # the work saw its own inserts
    assert database.transaction(lambda s: rights.list_rights(s, "alice")) == {}
    database.transaction(lambda s: rights.add_rights(s, "alice", NODES, ["*"]))
    assert set(database.transaction(lambda s: rights.list_rights(s, "alice"))["alice"]) == set(NODES)


def test_a_dry_run_is_refused_as_the_real_transaction(database):
    def start(wid: str, force: bool = False):
        return lambda s: db_workflows.start_workflow(s, db_workflows.WorkflowStart(
            wid=wid, kind="deploy", user="alice", nodes=NODES, force=force, node_state="deploying",
            environment=None, start_time=time.time()))

    database.transaction(start("D-held"))
    with pytest.raises(KadeployError) as refused:
        database.transaction(start("D-dry"), dry_run=True)
    assert refused.value.code == ErrorCode.NOTHING_MODIFIED  # every node is held by D-held
    claimed, discarded = database.transaction(start("D-forced", force=True), dry_run=True)
    assert (claimed, discarded) == (NODES, [])
    held = database.transaction(lambda s: locking.claims(s, NODES))
    assert held == {node: "D-held" for node in NODES}  # the forced dry run took nothing over
    assert database.transaction(lambda s: db_workflows.get_workflow(s, "D-forced")) is None
