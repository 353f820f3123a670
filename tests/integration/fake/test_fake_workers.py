"""A fake testbed served by several worker processes looks like one from the outside.

Control requests (status, power through the CLI and through fake-bmc, fault,
stats) reach nodes of every worker; boot draws do not depend on the number
of workers; the broadcast chain crosses the slice boundary over TCP and
repairs around a node of the other worker killed mid-stream; a dead worker
fails the testbed loudly; no process outlives `down` or a killed daemon.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from kadeploy.errors import KadeployError
from kadeploy_testbed import cli as testbed_cli
from kadeploy_testbed.cli import control
from kadeploy_testbed.fake import harness
from kadeploy_testbed.fake.configdir import envs_dir
from kadeploy_testbed.fake.settings import FakeSettings, load_settings
from tests.ports import free_port


def running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie waiting for its parent does not count)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout:g}s: {what}")


@pytest.fixture
def bring_up(tmp_path: Path, fake_ports: dict[str, int]) -> Iterator[Callable[..., FakeSettings]]:
    """`bring_up(nodes, workers, **options)`: a fake testbed taken down (and checked gone) at the end."""
    started: list[FakeSettings] = []

    def up(nodes: int, workers: int, **options: Any) -> FakeSettings:
        directory = tmp_path / f"bed{len(started)}"
        options = {"server_port": free_port(), "boot_time": "0.2-0.4", "seed": 3, **fake_ports, **options}
        settings = harness.up(directory, nodes, workers=workers, **options)
        started.append(settings)
        return settings

    yield up
    for settings in started:
        harness.down(settings.path)
        for pid in (settings.daemon_pid, *settings.worker_pids):
            assert pid is not None
            wait_for(lambda pid=pid: not running(pid), 10, f"pid {pid} of {settings.path} gone after down")


def names(settings: FakeSettings) -> list[str]:
    return (settings.path / "nodes").read_text().split()


def boots(settings: FakeSettings) -> dict[str, int]:
    return {node: len(entry["boots"]) for node, entry in harness.node_status(settings).items()}


@pytest.mark.parametrize("workers", [1, 2])
def test_status_power_and_fault_reach_the_nodes_of_every_worker(bring_up, workers, capsys):
    settings = bring_up(6, workers)
    nodes = names(settings)
    assert list(harness.node_status(settings)) == nodes  # every worker's nodes, in node order
    bmc = str(settings.path / "etc" / "scripts" / "fake-bmc")
    victims = [nodes[1], nodes[4]]  # one in each slice when there are two workers
    for victim in victims:
        subprocess.run([bmc, "off", victim], check=True, timeout=30)
        assert subprocess.run([bmc, "status", victim], capture_output=True, text=True, check=True,
                              timeout=30).stdout == "off\n"
    before = boots(settings)
    assert testbed_cli.main(["--dir", str(settings.path), "power", "on", *victims]) == 0
    wait_for(lambda: all(boots(settings)[v] == before[v] + 1 for v in victims), 10, "both nodes booted")
    # no PXE profile was written: the firmware finds nothing to boot, in either worker
    wait_for(lambda: all(harness.node_status(settings)[v]["state"] == "hung" for v in victims), 10, "hung")

    last = nodes[-1]
    assert testbed_cli.main(["--dir", str(settings.path), "fault", last, "firmware-delay", "0.05"]) == 0
    control(settings.path, {"op": "power", "node": last, "action": "cycle"})
    assert wait_for(lambda: harness.node_status(settings)[last]["boots"], 10, "cycled")[-1] == ["boot", 0.05]
    with pytest.raises(KadeployError, match="not a node of this testbed"):
        control(settings.path, {"op": "power", "node": "node-99.c1.testbed", "action": "on"})
    with pytest.raises(KadeployError, match="not supported in fake mode"):
        control(settings.path, {"op": "fault", "node": nodes[0], "kind": "disk-fail", "value": "1"})

    capsys.readouterr()
    assert testbed_cli.main(["--dir", str(settings.path), "status"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == nodes

    stats = harness.fake_stats(settings)
    assert sum(stats["phases"].values()) == 6
    if workers == 1:
        assert "workers" not in stats and load_settings(settings.path).worker_pids == []
    else:
        pids = [worker["pid"] for worker in stats["workers"]]
        assert len(set(pids)) == workers and settings.daemon_pid not in pids
        assert load_settings(settings.path).worker_pids == pids
        assert stats["cpu"] == pytest.approx(stats["daemon"]["cpu"] + sum(w["cpu"] for w in stats["workers"]))


def _two_boots_of_every_node(bring_up, workers: int) -> dict[str, Any]:
    settings = bring_up(7, workers, boot_time="0.1-0.6", seed=11, failure_rate=0.4, initial="off")
    nodes = names(settings)
    for count, action in enumerate(("on", "cycle"), start=1):
        for node in nodes:
            control(settings.path, {"op": "power", "node": node, "action": action})
        wait_for(lambda count=count: all(len(entry["boots"]) == count and entry["state"] != "firmware"
                                         for entry in harness.node_status(settings).values()),
                 20, f"boot {count} of every node done")
    return {node: (entry["boots"], entry["state"], entry["detail"])
            for node, entry in harness.node_status(settings).items()}


def test_boot_delays_and_failures_do_not_depend_on_the_number_of_workers(bring_up):
    alone = _two_boots_of_every_node(bring_up, 1)
    split = _two_boots_of_every_node(bring_up, 3)
    assert split == alone
    details = {detail for _boots, _state, detail in alone.values()}
    assert details == {"injected boot failure", "no PXE profile"}  # the seed draws both fates
    assert len({tuple(map(tuple, node_boots)) for node_boots, _state, _detail in alone.values()}) == 7


def test_a_dead_worker_fails_the_testbed_loudly(bring_up):
    settings = bring_up(4, 2)
    first, second = settings.worker_pids
    os.kill(second, signal.SIGKILL)

    def error() -> str:
        try:
            control(settings.path, {"op": "status"}, timeout=10)
        except KadeployError as exc:
            return exc.message
        return ""

    message = wait_for(error, 10, "status fails once worker 1 is dead")
    assert "worker 1" in message and "killed by SIGKILL" in message, message
    # nodes of the live worker are refused too: a half testbed would fail deployments in stranger ways
    bmc = str(settings.path / "etc" / "scripts" / "fake-bmc")
    answer = subprocess.run([bmc, "status", names(settings)[0]], capture_output=True, text=True, timeout=30)
    assert answer.returncode == 1 and "worker 1" in answer.stderr
    wait_for(lambda: not running(first), 20, "worker 0 stopped by the daemon")
    assert running(settings.daemon_pid)  # still there to tell why, until `down`
    assert "killed by SIGKILL" in (settings.path / "daemon.log").read_text()


def test_workers_stop_by_themselves_when_their_daemon_is_killed(bring_up):
    settings = bring_up(4, 2)
    assert settings.daemon_pid is not None
    os.kill(settings.daemon_pid, signal.SIGKILL)
    for pid in settings.worker_pids:
        wait_for(lambda pid=pid: not running(pid), 20, f"worker {pid} gone")


def test_chain_crosses_workers_and_repairs_around_a_node_killed_in_the_other_worker(bring_up):
    settings = bring_up(12, 2, boot_time="0.5-1", seed=5)
    server = harness.start_server(settings)
    try:
        nodes = names(settings)
        victim = nodes[6]  # the first node of worker 1, fed by worker 0's last node over TCP
        image, digest = harness.make_tiny_image(envs_dir(settings), payload=3 << 20)
        environment, _ = harness.tiny_environment(settings, image)
        total = image.stat().st_size
        # the chain's head takes 1 MB/s from the server: the stream lasts a few seconds
        control(settings.path, {"op": "fault", "node": nodes[0], "kind": "link-rate", "value": "8mbit"})
        automata = {"SetDeploymentEnv": [{"name": "SetDeploymentEnvUntrusted", "retries": 0, "timeout": 30}],
                    "BroadcastEnv": [{"name": "BroadcastEnvKascade", "retries": 0, "timeout": 90}],
                    "BootNewEnv": [{"name": "BootNewEnvKexec", "retries": 0, "timeout": 30}]}
        with ThreadPoolExecutor(1) as pool:
            deployment = pool.submit(harness.deploy, server, nodes, environment, timeout=180, automata=automata)
            received = wait_for(lambda: 0 < harness.node_status(settings)[victim]["image_bytes"] < total
                                and harness.node_status(settings)[victim]["image_bytes"], 90,
                                "the victim is taking the stream")
            assert received < total // 2, "kill it mid-stream"
            control(settings.path, {"op": "power", "node": victim, "action": "off"})
            result = deployment.result(timeout=200)
        log_text = harness.logs(server, result.wid)
        assert result.ko == [victim], log_text[-3000:]
        assert sorted(result.ok) == sorted(set(nodes) - {victim})
        status = harness.node_status(settings)
        for node in result.ok:
            assert status[node]["state"] == "partition 3" and status[node]["digest"] == digest, (node, status[node])
        assert status[victim]["power"] == "off"
        stats = harness.fake_stats(settings)
        front, back = stats["workers"]
        # worker 0's last node opened the boundary link, then the repair to the victim's successor: both TCP
        assert front["links"]["tcp"] >= 2, stats
        assert back["links"]["tcp"] == 0 and back["links"]["memlink"] >= 4, stats  # inside worker 1: memlinks
    finally:
        server.stop()
