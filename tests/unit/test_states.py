"""The states module: one name per state, the same strings Kadeploy3 stores and sends."""

from __future__ import annotations

import json

from kadeploy.states import END_STATE, START_STATE, SUCCEEDED, DbNodeState, NodeState, WorkflowState


def test_states_are_the_strings_kadeploy3_writes():
    assert [s.value for s in NodeState] == ["waiting", "processing", "reboot_in_progress", "rebooted", "ok", "ko",
                                           "brk", "aborted", "discarded"]
    assert START_STATE == {"deploy": "deploying", "reboot": "rebooting", "power": "powering"}
    assert END_STATE == {"deploy": ("deployed", "deploy_failed"), "reboot": ("rebooted", "reboot_failed"),
                         "power": ("powered", "power_failed")}
    assert {s.value for s in WorkflowState} == {"running", "done", "error", "aborted"}
    assert SUCCEEDED == {"ok", "brk"}


def test_a_state_is_its_string_in_json_in_formatting_and_in_comparisons():
    assert json.dumps({"state": NodeState.REBOOT_IN_PROGRESS}) == '{"state": "reboot_in_progress"}'
    assert f"{DbNodeState.DEPLOY_FAILED}" == "deploy_failed" and str(WorkflowState.RUNNING) == "running"
    assert NodeState("brk") is NodeState.BRK and "ko" == NodeState.KO


def test_a_state_written_in_the_database_reads_back_as_the_plain_string(tmp_path):
    from kadeploy.db import Database
    from kadeploy.db import nodes as db_nodes
    from kadeploy.db import workflows as db_workflows

    database = Database(f"sqlite:///{tmp_path / 'k.db'}")
    database.migrate()
    start = db_workflows.WorkflowStart(wid="D-1", kind="deploy", user="u", nodes=["n1"],
                                       node_state=START_STATE["deploy"])
    database.transaction(lambda s: db_workflows.start_workflow(s, start))
    assert database.transaction(lambda s: db_workflows.recover_interrupted(s)) == ["D-1"]
    row = database.transaction(lambda s: db_workflows.get_workflow(s, "D-1"))
    state = database.transaction(lambda s: db_nodes.get_states(s, ["n1"]))["n1"].state
    assert (row.state, state) == ("aborted", "aborted")
    assert type(state) is str and state == DbNodeState.ABORTED
    database.dispose()
