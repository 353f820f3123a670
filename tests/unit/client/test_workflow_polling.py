"""The polling protocol against a fake server: output, result, cancel, no-wait, errors, -M."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest

from kadeploy.client import workflow as workflow_module
from kadeploy.client.errors import ClientError
from kadeploy.client.output import Printer
from kadeploy.client.run import WorkflowOptions, WorkflowRequest, run_workflows
from kadeploy.client.session import GenericOptions, Session
from kadeploy.client.workflow import WorkflowRunner

NODES = ["node-1.c1.testbed", "node-2.c1.testbed"]


@pytest.fixture(autouse=True)
def fast_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workflow_module, "POLL_INTERVAL", 0.05)


def deploy_request() -> WorkflowRequest:
    return WorkflowRequest("Deployment", "POST", "/deployment", {"environment": {"kind": "database", "name": "d"}})


def test_full_protocol_prints_kadeploy_text_and_deletes_the_workflow(fake_server, tmp_path: Path) -> None:
    fake = fake_server(NODES, ko_nodes=("node-2.c1.testbed",))
    out, err = io.StringIO(), io.StringIO()
    options = WorkflowOptions(ok_file=str(tmp_path / "ok"), ko_file=str(tmp_path / "ko"),
                              wid_file=str(tmp_path / "wid"), progress=False)
    with Session(GenericOptions()) as session:
        status = run_workflows(session, deploy_request(), NODES, options, stdout=out, stderr=err)
    lines = out.getvalue().splitlines()
    assert status == 0  # Kadeploy3 exits 0 even when nodes failed
    assert lines[0] == "Deployment #D-00000001 started"
    assert lines[1].startswith("Launching a deployment on")  # earlier timestamp printed first
    assert lines[2] == "Performing a Deploy[SetDeploymentEnvUntrusted] step"
    assert lines[3:5] == ["Deployment #D-00000001 done", ""]
    assert lines[5:] == ["The deployment is successful on nodes", "node-1.c1.testbed",
                         "The deployment failed on nodes",
                         "node-2.c1.testbed (SetDeploymentEnvUntrusted-reboot: boom)"]
    assert (tmp_path / "ok").read_text() == "node-1.c1.testbed\n"
    assert (tmp_path / "ko").read_text() == "node-2.c1.testbed\n"
    assert (tmp_path / "wid").read_text() == "D-00000001"
    assert fake.deleted == ["D-00000001"]
    assert fake.requests_to("POST", "/deployment")[0][3]["nodes"] == NODES
    assert err.getvalue() == ""


def test_fail_on_ko_makes_exit_status_non_zero(fake_server) -> None:
    fake_server(NODES, ko_nodes=("node-2.c1.testbed",))
    with Session(GenericOptions()) as session:
        status = run_workflows(session, deploy_request(), NODES, WorkflowOptions(fail_on_ko=True, progress=False),
                               stdout=io.StringIO(), stderr=io.StringIO())
    assert status == 1


def test_cancel_deletes_the_running_workflow(fake_server) -> None:
    fake = fake_server(NODES, polls_before_done=10_000)
    cancel = threading.Event()
    out = io.StringIO()
    with Session(GenericOptions()) as session:
        runner = WorkflowRunner(session.primary, "Deployment", "POST", "/deployment", {"nodes": NODES},
                                Printer(out), cancel_event=cancel, poll_interval=0.05)
        timer = threading.Timer(0.3, cancel.set)
        timer.start()
        outcome = runner.run()
        timer.join()
    assert outcome is not None and outcome.cancelled
    assert fake.deleted == ["D-00000001"]
    assert "Deployment #D-00000001 cancelled" in out.getvalue()


def test_no_wait_prints_wid_and_resource(fake_server) -> None:
    fake = fake_server(NODES)
    out = io.StringIO()
    with Session(GenericOptions()) as session:
        run_workflows(session, deploy_request(), NODES, WorkflowOptions(wait=False), stdout=out, stderr=io.StringIO())
    assert out.getvalue() == "D-00000001 /deployment/D-00000001\n"
    assert fake.deleted == []


def test_no_wait_is_refused_with_local_files(fake_server, tmp_path: Path) -> None:
    fake_server(NODES)
    key = tmp_path / "keys"
    key.write_text("k")
    request = deploy_request()
    request.local_files = [str(key)]
    with Session(GenericOptions()) as session:
        with pytest.raises(ClientError, match="Cannot use --no-wait"):
            run_workflows(session, request, NODES, WorkflowOptions(wait=False))


def test_local_files_are_exported_and_client_url_sent(fake_server, tmp_path: Path) -> None:
    fake = fake_server(NODES)
    key = tmp_path / "keys"
    key.write_text("k")
    request = deploy_request()
    request.params["ssh_authorized_keys"] = str(key)
    request.local_files = [str(key)]
    with Session(GenericOptions()) as session:
        run_workflows(session, request, NODES, WorkflowOptions(progress=False), stdout=io.StringIO())
    body = fake.requests_to("POST", "/deployment")[0][3]
    assert body["client"].startswith("http://127.0.0.1:")


def test_workflow_error_prints_server_message_and_exits_with_its_code(fake_server) -> None:
    fake = fake_server(NODES, error=(5, "Checksum of the file 'x' does not match"))
    err = io.StringIO()
    with Session(GenericOptions()) as session:
        status = run_workflows(session, deploy_request(), NODES, WorkflowOptions(progress=False),
                               stdout=io.StringIO(), stderr=err)
    assert status == 5
    assert "Checksum of the file 'x' does not match" in err.getvalue()
    assert fake.deleted == ["D-00000001"]


def test_multi_server_dispatches_nodes_and_prefixes_output(fake_server, tmp_path: Path) -> None:
    site1 = fake_server(["a-1.s1", "a-2.s1"], name="site1")
    site2 = fake_server(["b-1.s2", "b-2.s2"], name="site2", ko_nodes=("b-2.s2",))
    out = io.StringIO()
    nodes = ["a-1.s1", "b-1.s2", "a-2.s1", "b-2.s2"]
    options = WorkflowOptions(ok_file=str(tmp_path / "ok"), ko_file=str(tmp_path / "ko"),
                              json_file=str(tmp_path / "r.json"), progress=False)
    with Session(GenericOptions(multi_server=True)) as session:
        status = run_workflows(session, deploy_request(), nodes, options, stdout=out, stderr=io.StringIO())
    assert status == 0
    assert site1.requests_to("POST", "/deployment")[0][3]["nodes"] == ["a-1.s1", "a-2.s1"]
    assert site2.requests_to("POST", "/deployment")[0][3]["nodes"] == ["b-1.s2", "b-2.s2"]
    text = out.getvalue()
    assert "[site1]   Deployment #D-00000001 started" in text
    assert "[site2]   b-2.s2 (SetDeploymentEnvUntrusted-reboot: boom)" in text
    assert sorted((tmp_path / "ok").read_text().split()) == ["a-1.s1", "a-2.s1", "b-1.s2"]
    assert (tmp_path / "ko").read_text() == "b-2.s2\n"
    import json
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["nodes"]["b-2.s2"]["server"] == "site2" and doc["ko"] == ["b-2.s2"]


def test_status_lines_while_running(fake_server) -> None:
    fake_server(NODES, polls_before_done=10_000)
    with Session(GenericOptions()) as session:
        runner = WorkflowRunner(session.primary, "Deployment", "POST", "/deployment", {"nodes": NODES},
                                Printer(io.StringIO()))
        runner.launch()
        lines = runner.status_lines()
    assert lines[0] == "---" and lines[1].startswith("Deployment status (")
    assert "  [SetDeploymentEnvUntrusted-wait_reboot] ~3s (**)" in lines
