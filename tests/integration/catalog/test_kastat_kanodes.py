"""kaenv3, kastat3 and kanodes3 against a real kadeploy3d after deployments (Dummy runner grabbing real files)."""

from __future__ import annotations

import csv
import hashlib
import io
import time

import pytest
import yaml

from kadeploy.db import Database
from kadeploy.db import stats as db_stats
from kadeploy3d import NODES

from tests.requirements import require

pytestmark = pytest.mark.slow

FIELDS = "wid,user,hostname,step1,step2,step3,timeout_step1,retry_step1,env,md5,success,error"


@pytest.fixture(scope="module")
def history(server, tmp_path_factory):
    """alice records an environment, deploys it twice and reboots; plus two records of a failing node."""
    assert server.tool("karights3", "-a", "-m", "node-[1-4].c1.test", "-p", "*", "-u", "alice").returncode == 0
    image = server.envs / "debian.tgz"
    image.write_bytes(b"debian image " * 1000)
    description = tmp_path_factory.mktemp("env") / "debian.yaml"
    description.write_text(yaml.safe_dump({
        "name": "debian", "version": 3, "os": "linux", "description": "Debian for tests",
        "image": {"file": f"server://{image}", "kind": "tar", "compression": "gzip"},
        "boot": {"kernel": "/vmlinuz", "initrd": "/initrd.img"}, "filesystem": "ext4"}))
    added = server.tool("kaenv3", "-a", str(description), user="alice")
    assert added.returncode == 0, added.stderr
    wids = []
    with server.http("alice") as alice:
        for nodes in (NODES[:2], NODES[:1]):
            wid = alice.post("/deployment", json={"nodes": nodes, "environment": {
                "kind": "database", "name": "debian"}}).json()["wid"]
            server.wait_done(alice, f"/deployment/{wid}")
            wids.append(wid)
        reboot = alice.post("/reboot", json={"nodes": NODES[1:2], "kind": "simple"}).json()["wid"]
        server.wait_done(alice, f"/reboot/{reboot}")
    # a node with hardware trouble, as the engine would have recorded it (the Dummy runner never fails)
    start = int(time.time()) - 86400
    failing = [{"wid": "D-failing-1", "user": "bob", "hostname": NODES[3], "step1": "SetDeploymentEnvUntrusted",
                "timeout_step1": 200, "retry_step1": 2, "start": start, "step1_duration": 200, "env": "debian:3",
                "success": False, "error": "SetDeploymentEnvUntrusted-reboot: Unreachable after the reboot",
                "micro_steps": [["SetDeploymentEnvUntrusted", "reboot", 12.0],
                                ["SetDeploymentEnvUntrusted", "wait_reboot", 188.0]]},
               {"wid": "D-failing-2", "user": "bob", "hostname": NODES[3], "step1": "SetDeploymentEnvUntrusted",
                "timeout_step1": 200, "retry_step1": 0, "start": start + 60, "step1_duration": 90, "env": "debian:3",
                "success": True, "error": "",
                "micro_steps": [["SetDeploymentEnvUntrusted", "reboot", 10.0],
                                ["SetDeploymentEnvUntrusted", "wait_reboot", 70.0]]}]
    database = Database(f"sqlite:///{server.directory / 'kadeploy.db'}")
    database.transaction(lambda s: db_stats.add_records(s, failing))
    database.dispose()
    return {"deploys": wids, "reboot": reboot, "start": start, "md5": hashlib.md5(image.read_bytes()).hexdigest()}


def kastat(server, *args: str) -> list[list[str]]:
    done = server.tool("kastat3", *args)
    assert done.returncode == 0, done.stderr
    return list(csv.reader(io.StringIO(done.stdout)))


def test_kastat3_prints_the_records_field_by_field_in_the_asked_order(server, history):
    rows = kastat(server, "-o", "deploy", "-F", FIELDS, "--sort", "start,hostname")
    first, second = history["deploys"]
    ours = [row for row in rows if row[0] in (first, second)]
    assert ours == [
        [first, "alice", NODES[0], "SetDeploymentEnvDummy", "BroadcastEnvDummy", "BootNewEnvDummy", "0", "0",
         "debian:3", history["md5"], "true", ""],
        [first, "alice", NODES[1], "SetDeploymentEnvDummy", "BroadcastEnvDummy", "BootNewEnvDummy", "0", "0",
         "debian:3", history["md5"], "true", ""],
        [second, "alice", NODES[0], "SetDeploymentEnvDummy", "BroadcastEnvDummy", "BootNewEnvDummy", "0", "0",
         "debian:3", history["md5"], "true", ""],
    ]
    reordered = kastat(server, "-w", first, "-F", "success,hostname,wid", "--sort", "hostname")
    assert reordered == [["true", NODES[0], first], ["true", NODES[1], first]]


def test_kastat3_filters(server, history):
    assert [r[0] for r in kastat(server, "-o", "reboot", "-F", "wid")] == [history["reboot"]]
    assert kastat(server, "-r", "2", "-s", "1", "-F", "wid,retry_step1") == [["D-failing-1", "2"]]
    assert kastat(server, "-r", "2", "-s", "2,3", "-F", "wid") == []
    # -x/-y are read as Ruby's Time (kadeploy.cli.rubytime): the documented yyyy-mm-dd hh:mm:ss, here in UTC
    window = kastat(server, "-x", time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(history["start"] - 10)),
                    "-y", time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(history["start"] + 10)), "-F", "wid")
    assert window == [["D-failing-1"]]
    assert kastat(server, "-m", NODES[3], "-F", "wid,success", "--limit", "1") == [["D-failing-1", "false"]]
    assert len(kastat(server, "-m", NODES[0], "-F", "wid")) == 2


def test_kastat3_failure_rates(server, history):
    done = server.tool("kastat3", "-o", "deploy", "-b")
    assert done.returncode == 0, done.stderr
    rates = dict(line.split(": ") for line in done.stdout.splitlines())
    assert rates == {NODES[0]: "0.0", NODES[1]: "0.0", NODES[3]: "0.5"}
    above = server.tool("kastat3", "-b", "0.4")
    assert above.stdout.splitlines() == [f"{NODES[3]}: 0.5"]
    assert server.tool("kastat3", "-b", "2").returncode != 0


def test_kastat3_steps_prints_duration_statistics(server, history):
    done = server.tool("kastat3", "--steps", "-m", NODES[3])
    assert done.returncode == 0, done.stderr
    table = {line.split()[0]: line.split()[1:] for line in done.stdout.splitlines() if line.strip()}
    assert table["Macro-step"] == ["count", "median", "p90", "max"]
    assert table["SetDeploymentEnvUntrusted"] == ["2", "145s", "200s", "200s"]
    assert table["SetDeploymentEnvUntrusted/reboot"] == ["2", "11s", "12s", "12s"]
    assert table["SetDeploymentEnvUntrusted/wait_reboot"] == ["2", "129s", "188s", "188s"]
    dummy = server.tool("kastat3", "--steps", "-o", "deploy", "-w", history["deploys"][0])
    rows = {line.split()[0]: line.split()[1:] for line in dummy.stdout.splitlines() if line.strip()}
    assert rows["SetDeploymentEnvDummy"][0] == "2" and rows["SetDeploymentEnvDummy/dummy"][0] == "2"


def test_kastat3_plot_draws_a_png(server, history, tmp_path):
    require("matplotlib")
    picture = tmp_path / "steps.png"
    done = server.tool("kastat3", "--plot", str(picture))
    assert done.returncode == 0, done.stderr
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and picture.stat().st_size > 5000
    wrong = server.tool("kastat3", "--plot", str(tmp_path / "steps.txt"))
    assert wrong.returncode != 0 and ".png" in wrong.stderr


def test_kanodes3_shows_state_last_user_and_environment(server, history):
    done = server.tool("kanodes3", "-s", "-m", NODES[0], "-m", NODES[1], "-m", NODES[2])
    assert done.returncode == 0, done.stderr
    states = yaml.safe_load(done.stdout)
    assert states[NODES[0]]["state"] == "deployed" and states[NODES[0]]["user"] == "alice"
    assert {k: states[NODES[0]]["environment"][k] for k in ("name", "version", "user")} == \
        {"name": "debian", "version": 3, "user": "alice"}
    assert states[NODES[1]]["state"] == "rebooted"
    assert states[NODES[2]] is None


def test_kaenv3_recorded_checksum_refuses_a_changed_image_until_updated(server, history):
    image = server.envs / "debian.tgz"
    original = image.read_bytes()
    image.write_bytes(original + b"changed")
    try:
        with server.http("alice") as alice:
            wid = alice.post("/deployment", json={"nodes": NODES[2:3], "environment": {
                "kind": "database", "name": "debian"}}).json()["wid"]
            assert server.wait_done(alice, f"/deployment/{wid}")["error"] is True
            error = alice.get(f"/deployment/{wid}/error")
            assert error.headers["X-Application-Error-Code"] == "5" and "an update is necessary" in error.text
            updated = server.tool("kaenv3", "--update-image-checksum", "debian", user="alice")
            assert updated.returncode == 0, updated.stderr
            wid = alice.post("/deployment", json={"nodes": NODES[2:3], "environment": {
                "kind": "database", "name": "debian"}}).json()["wid"]
            assert server.wait_done(alice, f"/deployment/{wid}")["error"] is False
    finally:
        image.write_bytes(original)
        server.tool("kaenv3", "--update-image-checksum", "debian", user="alice")
