"""The real kadeploy3d writes server.conf's `logs/logfile` and `logs/debugfile` and reopens them on SIGHUP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from configdir import NODES, write_config_dir  # noqa: E402
from tests.ports import free_port  # noqa: E402

ENV = {"kind": "anonymous", "name": "e", "os": "linux", "filesystem": "ext4", "boot": {"kernel": "/vmlinuz"},
       "image": {"file": "/e.tgz", "kind": "tar", "compression": "gzip"}}
HEADERS = {"X-Kadeploy-User": "alice"}


def eventually(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.1)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def run_to_end(base: str, path: str, method: str, body: dict) -> str:
    response = httpx.request(method, f"{base}/{path}", json=body, headers=HEADERS, timeout=10)
    assert response.status_code == 200, response.text
    wid = response.json()["wid"]
    eventually(lambda: httpx.get(f"{base}/{path}/{wid}", headers=HEADERS, timeout=10).json()["done"], f"{wid} done")
    return wid


def env_for(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "KADEPLOY3_CONFIG_DIR": str(tmp_path / "etc"), "KADEPLOY3_LOG_DIR": str(tmp_path / "log"),
            "KADEPLOY3_RUN_DIR": str(tmp_path / "run"), "KADEPLOY3_DUMMY_DELAY": "0.1"}


@pytest.mark.slow
def test_detached_server_writes_the_log_files_and_reopens_them_on_sighup(tmp_path):
    port = free_port()
    logs = tmp_path / "log"
    logfile, debugfile = tmp_path / "kadeploy.log", tmp_path / "etc" / "debug.log"
    write_config_dir(tmp_path, port, tmp_path / "kadeploy.db", server_extra={
        "logs": {"logfile": str(logfile), "debugfile": "debug.log"},  # relative: in the configuration dir
        "verbosity": {"logs": 1}})
    pidfile = tmp_path / "kadeploy3d.pid"
    launcher = subprocess.run([sys.executable, "-m", "kadeploy_testbed.dummy", "--detach", "--pidfile", str(pidfile)],
                              env=env_for(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
    assert launcher.returncode == 0, launcher.stderr
    eventually(pidfile.exists, "pid file written", 60)
    pid = int(pidfile.read_text())
    base = f"http://127.0.0.1:{port}"
    try:
        def answering() -> bool:
            try:
                return httpx.get(f"{base}/version", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        eventually(answering, "kadeploy3d answering", 60)
        deploy = run_to_end(base, "deployment", "POST", {"nodes": NODES, "environment": ENV})
        eventually(lambda: len(lines(logfile)) == len(NODES), "one log line per node")
        records = sorted(line.split(",") for line in lines(logfile))
        assert [(r[0], r[1], r[2]) for r in records] == [(deploy, node, "alice") for node in sorted(NODES)]
        assert all(r[3:6] == ["SetDeploymentEnvDummy", "BroadcastEnvDummy", "BootNewEnvDummy"] for r in records)
        assert all(r[-2:] == ["true", ""] for r in records)
        eventually(lambda: any("End of deployment" in line for line in lines(debugfile)), "debug file written")
        debug = lines(debugfile)
        assert debug[0] == f"{deploy}|alice -> Launching a deployment on {', '.join(NODES)}"
        assert f"{deploy}|alice -> Performing a SetDeploymentEnvDummy step" in debug  # level 1 kept
        assert all(line.startswith(f"{deploy}|alice -> ") for line in debug)

        # logrotate: rename everything, then HUP
        for path in (logfile, debugfile, logs / "output.log", logs / "error.log"):
            path.rename(path.with_name(path.name + ".1"))
        os.kill(pid, signal.SIGHUP)
        eventually(lambda: any("log files reopened" in line for line in lines(logs / "output.log")),
                   "output.log reopened")
        assert (logs / "error.log").exists()  # stderr of the detached server follows the rename too
        reboot = run_to_end(base, "reboot", "POST", {"nodes": NODES, "kind": "simple"})
        eventually(lambda: len(lines(logfile)) == len(NODES), "log lines in the new file")
        assert {line.split(",")[0] for line in lines(logfile)} == {reboot}
        assert {line.split(",")[0] for line in lines(logfile.with_name("kadeploy.log.1"))} == {deploy}
        eventually(lambda: any(reboot in line for line in lines(debugfile)), "debug lines in the new file")
        assert not any(reboot in line for line in lines(debugfile.with_name("debug.log.1")))
    finally:
        os.kill(pid, signal.SIGTERM)
        eventually(lambda: not pidfile.exists(), "kadeploy3d stopped", 40)


def test_an_unwritable_log_file_is_a_configuration_error(tmp_path):
    write_config_dir(tmp_path, free_port(), tmp_path / "kadeploy.db",
                     server_extra={"logs": {"logfile": str(tmp_path / "no-such-dir" / "kadeploy.log")}})
    result = subprocess.run([sys.executable, "-m", "kadeploy_testbed.dummy", "--check-config"],
                            env=env_for(tmp_path), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == (f"kadeploy3d: configuration error: server.conf: logs: cannot open "
                                     f"{tmp_path / 'no-such-dir' / 'kadeploy.log'}: No such file or directory")
