"""The real kadeploy3d deploys a fake testbed: Dummy steps, real steps with a tiny image, failures.

One module-scoped fake testbed (loopback, no root) and one server subprocess
on its configuration: 500 nodes, as the scale issue asks of CI (about a minute
and a half here); `KADEPLOY_FAKE_NODES` changes the count and
`KADEPLOY_FAKE_WORKERS` the number of worker processes (default: one per CPU).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from kadeploy_testbed.fake import harness
from kadeploy_testbed.fake.settings import FakeSettings
from tests.ports import free_port

NODES = int(os.environ.get("KADEPLOY_FAKE_NODES", "500"))
WORKERS = int(os.environ["KADEPLOY_FAKE_WORKERS"]) if os.environ.get("KADEPLOY_FAKE_WORKERS") else None
BOOT_TIME = "1-2"
DEPLOY_TIMEOUT = 120 + NODES / 5

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fakebed(tmp_path_factory: pytest.TempPathFactory,
            fake_ports: dict[str, int]) -> Iterator[tuple[FakeSettings, harness.Server]]:
    directory = tmp_path_factory.mktemp("fake")
    settings = harness.up(directory, NODES, server_port=free_port(), boot_time=BOOT_TIME, seed=3,
                          workers=WORKERS, **fake_ports)
    server = None
    try:
        server = harness.start_server(settings)
        yield settings, server
    finally:
        if server is not None:
            server.stop()
        harness.down(directory)


def all_nodes(settings: FakeSettings) -> list[str]:
    return (settings.path / "nodes").read_text().split()


def test_dummy_deployment_of_every_node_records_stats(fakebed):
    settings, server = fakebed
    nodes = all_nodes(settings)
    environment, _ = harness.tiny_environment(settings)
    before = harness.node_status(settings)
    result = harness.deploy(server, nodes, environment, timeout=DEPLOY_TIMEOUT, automata=harness.DUMMY_AUTOMATA)
    assert sorted(result.ok) == sorted(nodes) and result.ko == []
    records = harness.stats(server, result.wid)
    assert set(records) == set(nodes)
    assert {(r["step1"], r["step2"], r["step3"], r["success"]) for r in records.values()} == {
        ("SetDeploymentEnvDummy", "BroadcastEnvDummy", "BootNewEnvDummy", "true")}
    # Dummy steps touch no node: nobody rebooted
    after = harness.node_status(settings)
    assert {n: s["boots"] for n, s in after.items()} == {n: s["boots"] for n, s in before.items()}


def test_real_deployment_boots_every_node_on_the_deployed_partition(fakebed):
    settings, server = fakebed
    nodes = all_nodes(settings)
    environment, digest = harness.tiny_environment(settings)
    started = time.monotonic()
    result = harness.deploy(server, nodes, environment, timeout=DEPLOY_TIMEOUT)
    log_text = harness.logs(server, result.wid)
    assert sorted(result.ok) == sorted(nodes), log_text[-3000:]
    assert result.ko == []
    status = harness.node_status(settings)
    for node in nodes:
        entry = status[node]
        assert entry["state"] == "partition 3", (node, entry)
        assert entry["digest"] == digest, (node, entry)   # the broadcast stream's sha256, as the node hashed it
        kinds = [kind for kind, _ in entry["boots"]]
        assert kinds[-2:] == ["boot", "kexec"], (node, kinds)  # PXE boot into deploy env, kexec into the system
    records = harness.stats(server, result.wid)
    assert set(records) == set(nodes)
    for node, record in records.items():
        assert (record["step1"], record["step2"], record["step3"]) == (
            "SetDeploymentEnvUntrusted", "BroadcastEnvKascade", "BootNewEnvKexec"), record
        assert record["success"] == "true" and record["retry_step1"] == "0", record
        # the first step contains a firmware boot of 1-2 s: its duration cannot be 0
        assert 1 <= int(record["step1_duration"]) <= time.monotonic() - started + 1, record
    assert "Broadcast time" in log_text


def test_injected_boot_failures_are_retried_with_a_harder_reboot(fakebed):
    settings, server = fakebed
    nodes = all_nodes(settings)[:10]
    victim = nodes[3]
    harness.control(settings.path, {"op": "fault", "node": victim, "kind": "boot-failure-rate", "value": "1"})
    try:
        environment, _ = harness.tiny_environment(settings)
        automata = {"SetDeploymentEnv": [{"name": "SetDeploymentEnvUntrusted", "retries": 1, "timeout": 20}],
                    "BroadcastEnv": [{"name": "BroadcastEnvKascade", "retries": 0, "timeout": 60}],
                    "BootNewEnv": [{"name": "BootNewEnvKexec", "retries": 0, "timeout": 30}]}
        result = harness.deploy(server, nodes, environment, timeout=DEPLOY_TIMEOUT, automata=automata)
    finally:
        harness.control(settings.path, {"op": "fault", "node": victim, "kind": "boot-failure-rate", "value": "off"})
    assert result.ko == [victim]
    assert sorted(result.ok) == sorted(set(nodes) - {victim})
    records = harness.stats(server, result.wid)
    assert records[victim]["success"] == "false"
    assert records[victim]["retry_step1"] == "1"
    assert "Unreachable" in records[victim]["error"] or "timeout" in records[victim]["error"].lower()
    status = harness.node_status(settings)
    assert status[victim]["state"] == "hung"
    # soft reboot then a hard one (retry_start_level): at least two firmware boots
    assert [kind for kind, _ in status[victim]["boots"]].count("boot") >= 3
