"""Crash safety of the real kadeploy3d: kill -9 during a deployment, restart, deploy again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from kadeploy_testbed.answering import NotAnswering, wait_answering

sys.path.insert(0, str(Path(__file__).parent))
from configdir import NODES, write_config_dir  # noqa: E402
from tests.ports import free_port  # noqa: E402

ENV = {"kind": "anonymous", "name": "e", "os": "linux", "filesystem": "ext4", "boot": {"kernel": "/vmlinuz"},
       "image": {"file": "/e.tgz", "kind": "tar", "compression": "gzip"}}


def start_server(tmp_path: Path, port: int, delay: float) -> subprocess.Popen:
    env = {**os.environ, "KADEPLOY3_CONFIG_DIR": str(tmp_path / "etc"), "KADEPLOY3_LOG_DIR": str(tmp_path / "log"),
           "KADEPLOY3_RUN_DIR": str(tmp_path / "run"), "KADEPLOY3_DUMMY_DELAY": str(delay)}
    process = subprocess.Popen([sys.executable, "-m", "kadeploy_testbed.dummy"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_answering(f"http://127.0.0.1:{port}/version", process, 60,
                       printed=lambda: process.stderr.read().decode() if process.poll() is not None else "")
    except NotAnswering:
        process.kill()
        raise
    return process


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.mark.slow
def test_kill_9_then_restart_aborts_the_workflow_and_frees_the_nodes(tmp_path):
    port = free_port()
    write_config_dir(tmp_path, port, tmp_path / "kadeploy.db")
    base = f"http://127.0.0.1:{port}"
    headers = {"X-Kadeploy-User": "alice"}
    server = start_server(tmp_path, port, delay=600)
    try:
        wid = httpx.post(f"{base}/deployment", json={"nodes": NODES, "environment": ENV}, headers=headers,
                         timeout=10).json()["wid"]
        assert httpx.get(f"{base}/deployment/{wid}", headers=headers, timeout=10).json()["done"] is False
        busy = httpx.post(f"{base}/deployment", json={"nodes": NODES, "environment": ENV}, headers=headers, timeout=10)
        assert busy.headers["X-Application-Error-Code"] == "14"
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=10)
    finally:
        stop(server)

    server = start_server(tmp_path, port, delay=0.2)
    try:
        states = httpx.get(f"{base}/nodes", headers=headers, timeout=10).json()
        assert {node: states[node]["state"] for node in NODES} == {node: "aborted" for node in NODES}
        response = httpx.post(f"{base}/deployment", json={"nodes": NODES, "environment": ENV}, headers=headers,
                              timeout=10)
        assert response.status_code == 200, response.text
        new_wid = response.json()["wid"]
        deadline = time.monotonic() + 30
        while not (info := httpx.get(f"{base}/deployment/{new_wid}", headers=headers, timeout=10).json())["done"]:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert sorted(info["nodes"]["ok"]) == sorted(NODES)
    finally:
        stop(server)
    import sqlite3

    with sqlite3.connect(tmp_path / "kadeploy.db") as conn:
        assert conn.execute("SELECT state FROM workflows WHERE wid = ?", (wid,)).fetchone() == ("aborted",)
        assert conn.execute("SELECT count(*) FROM node_claims").fetchone() == (0,)


def test_configuration_error_names_file_and_key_and_exits_1(tmp_path):
    write_config_dir(tmp_path, free_port(), tmp_path / "kadeploy.db")
    (tmp_path / "etc" / "server.conf").write_text("database: {kind: oracle}\n")
    env = {**os.environ, "KADEPLOY3_CONFIG_DIR": str(tmp_path / "etc")}
    result = subprocess.run([sys.executable, "-m", "kadeploy_testbed.dummy", "--check-config"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("kadeploy3d: configuration error: server.conf: database/kind")
    assert all(line.count("server.conf:") for line in result.stderr.strip().splitlines())


def test_check_config_accepts_a_valid_directory(tmp_path):
    write_config_dir(tmp_path, free_port(), tmp_path / "kadeploy.db")
    env = {**os.environ, "KADEPLOY3_CONFIG_DIR": str(tmp_path / "etc")}
    result = subprocess.run([sys.executable, "-m", "kadeploy_testbed.dummy", "--check-config"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
