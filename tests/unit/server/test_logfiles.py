"""server.conf `logs` files (deployment log, debug file, `logs/database`) and the per-request time limit."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from starlette.responses import PlainTextResponse, StreamingResponse

from kadeploy.db.models import LogRow
from kadeploy.server.app import create_app
from kadeploy.server.logfiles import AppendFile, OperationLogs, format_record
from kadeploy_testbed.dummy import DummyRunner
from server_fixtures import NODES_C1, database_at, make_settings, wait_done

ENV = {"kind": "anonymous", "name": "e", "os": "linux",
       "image": {"file": "http://files/e.tgz", "kind": "tar", "compression": "gzip"},
       "boot": {"kernel": "/vmlinuz"}, "filesystem": "ext4"}


def test_a_record_is_one_line_in_kadeploy3_field_order():
    record = {"wid": "D-1", "user": "alice", "hostname": "n1", "step1": "SetDeploymentEnvUntrusted",
              "step2": "BroadcastEnvKascade", "step3": "BootNewEnvKexec", "timeout_step1": 200,
              "retry_step2": 1, "start": 1700000000, "step1_duration": 12.7, "env": "debian:1",
              "anonymous_env": False, "success": False, "error": "BroadcastEnv-x: boom\nsecond line",
              "micro_steps": [["ignored"]]}
    assert format_record(record) == ("D-1,n1,alice,SetDeploymentEnvUntrusted,BroadcastEnvKascade,BootNewEnvKexec,"
                                     "200,0,0,0,1,0,1700000000,12,0,0,debian:1,false,,false,"
                                     "BroadcastEnv-x: boom second line")


def test_append_file_batches_and_reopens_by_name_after_a_rename(tmp_path: Path):
    path = tmp_path / "kadeploy.log"
    path.write_text("kept\n")
    file = AppendFile(path)
    file.open()
    try:
        for index in range(1000):
            file.write(f"line {index}\n")
        assert file.sync()
        path.rename(tmp_path / "kadeploy.log.1")
        file.write("still old\n")  # queued before the reopen: goes to the renamed file
        file.reopen()
        file.write("new\n")
        assert file.sync()
    finally:
        file.close()
    old = (tmp_path / "kadeploy.log.1").read_text().splitlines()
    assert old == ["kept"] + [f"line {i}" for i in range(1000)] + ["still old"]
    assert path.read_text() == "new\n"


def test_check_reports_an_unwritable_file(tmp_path: Path):
    with pytest.raises(OSError):
        OperationLogs(logfile=tmp_path / "missing-dir" / "kadeploy.log").check()
    OperationLogs(logfile=tmp_path / "kadeploy.log", debugfile=tmp_path / "debug.log").check()
    assert (tmp_path / "kadeploy.log").exists() and (tmp_path / "debug.log").exists()


@pytest.fixture
async def logged(tmp_path: Path) -> AsyncIterator[tuple]:
    """An app with a deployment log file, a debug file at level 0 and `logs/database: false`."""
    database = database_at(tmp_path / "kadeploy.db")
    files = OperationLogs(tmp_path / "kadeploy.log", tmp_path / "debug.log", debug_level=0)
    files.open()
    settings = make_settings(rights_kind="dummy", log_to_db=False)
    app = create_app(settings, database, DummyRunner(delay=0.0, failing={NODES_C1[1]: "broken disk"}), files=files)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://t",
                                 headers={"X-Kadeploy-User": "alice"}) as client:
        yield client, files, database, tmp_path
    files.close()
    database.dispose()


async def test_a_deployment_writes_one_line_per_node_and_its_output(logged):
    client, files, database, tmp_path = logged
    launched = await client.post("/deployment", json={"nodes": NODES_C1[:2], "environment": ENV})
    wid = launched.json()["wid"]
    await wait_done(client, f"/deployment/{wid}")
    assert files.sync()
    lines = sorted((tmp_path / "kadeploy.log").read_text().splitlines())
    assert len(lines) == 2
    fields = [line.split(",") for line in lines]
    assert [f[:3] for f in fields] == [[wid, NODES_C1[0], "alice"], [wid, NODES_C1[1], "alice"]]
    assert [f[3] for f in fields] == ["SetDeploymentEnvDummy"] * 2
    assert [f[16:18] for f in fields] == [["e:1", "true"]] * 2
    assert [(f[19], f[20]) for f in fields] == [("true", ""), ("false", "SetDeploymentEnvDummy-dummy: broken disk")]
    debug = (tmp_path / "debug.log").read_text().splitlines()
    # level 0 lines only (verbosity/logs: 0), each prefixed with the workflow and its user
    assert debug == [f"{wid}|alice -> Launching a deployment on {NODES_C1[0]}, {NODES_C1[1]}",
                     f"{wid}|alice -> End of deployment on cluster c1 after 0s"]
    # logs/database: false: nothing in the `log` table, kastat3 sees nothing
    assert database.transaction(lambda s: s.scalar(select(func.count()).select_from(LogRow))) == 0


async def test_no_log_files_configured_writes_nothing_and_keeps_db_stats(tmp_path: Path):
    database = database_at(tmp_path / "kadeploy.db")
    app = create_app(make_settings(rights_kind="dummy"), database, DummyRunner(delay=0.0))
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://t",
                                 headers={"X-Kadeploy-User": "alice"}) as client:
        wid = (await client.post("/deployment", json={"nodes": NODES_C1, "environment": ENV})).json()["wid"]
        await wait_done(client, f"/deployment/{wid}")
    assert database.transaction(lambda s: s.scalar(select(func.count()).select_from(LogRow))) == len(NODES_C1)
    database.dispose()


# -- per-request time limit (Kadeploy3 kills a servlet after 600 s) -------------------------------

# long enough for a request to start answering on a loaded 2-core machine (0.3 s was not);
# the slow routes below are multiples of it
LIMIT = 1.5


@pytest.fixture
async def limited(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    database = database_at(tmp_path / "kadeploy.db")
    app = create_app(make_settings(request_timeout=LIMIT), database, DummyRunner())
    cancelled: list[bool] = []

    async def slow() -> PlainTextResponse:
        try:
            await asyncio.sleep(20 * LIMIT)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return PlainTextResponse("too late")

    async def slow_body() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(4):
                await asyncio.sleep(LIMIT / 2)
                yield b"x" * 10
        return StreamingResponse(chunks(), media_type="text/plain")

    app.add_api_route("/test-slow", slow)
    app.add_api_route("/test-slow-body", slow_body)
    app.state.cancelled = cancelled
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://t",
                                 headers={"X-Kadeploy-User": "alice"}) as client:
        client.app = app  # type: ignore[attr-defined]
        yield client
    database.dispose()


async def test_a_request_over_the_limit_is_killed_and_answered_500(limited):
    started = time.monotonic()
    response = await limited.get("/test-slow")
    assert time.monotonic() - started < 10 * LIMIT  # killed, not waited for (the handler sleeps 20 times it)
    assert response.status_code == 500
    assert f"killed after {LIMIT:g} s" in response.text and "GET /test-slow" in response.text
    assert limited.app.state.cancelled == [True]  # the handler was cancelled, not left running


async def test_the_limit_is_on_starting_the_answer_not_on_sending_it(limited):
    response = await limited.get("/test-slow-body")  # twice the limit of body after a prompt start
    assert response.status_code == 200 and response.text == "x" * 40
    assert (await limited.get("/version")).text == "3.3.11.stable"
