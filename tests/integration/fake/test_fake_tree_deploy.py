"""A fake-mode deployment of 1,000 nodes through the executor's tree (issue 18, point 2).

The fake nodes host the real agent's logic (testbed fake/agenthost.py); the
server is told to use the tree from the test's node count on (KADEPLOY_TREE_FROM;
its default crossing, TREE_CROSSING, is 1,000 too). Every
node's final state and stats record are checked, that every node hosted the
agent, and the server's SSH connections (counted by the kernel, `ss`) before and
during the broadcast, whose relays are started through the tree too (a stream
run: the relays' control channels travel in the tree's messages).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from kadeploy.remote.tree import DEFAULT_ARITY, TREE_FROM_VARIABLE
from kadeploy_testbed.fake import harness
from kadeploy_testbed.fake.settings import FakeSettings
from tests.ports import free_port

NODES = int(os.environ.get("KADEPLOY_FAKE_TREE_NODES", "1000"))
DEPLOY_TIMEOUT = 120 + NODES / 5

pytestmark = pytest.mark.slow



@pytest.fixture(scope="module")
def treebed(tmp_path_factory: pytest.TempPathFactory,
            fake_ports: dict[str, int]) -> Iterator[tuple[FakeSettings, harness.Server]]:
    directory = tmp_path_factory.mktemp("fake-tree")
    # one worker process: every agent's children in-process (test_fake_tree_exec covers the SSH between workers)
    settings = harness.up(directory, NODES, server_port=free_port(), boot_time="1-2", seed=5, workers=1,
                          **fake_ports)
    server = None
    try:
        server = harness.start_server(settings, env={TREE_FROM_VARIABLE: str(NODES)})
        yield settings, server
    finally:
        if server is not None:
            server.stop()
        harness.down(directory)


def test_a_real_deployment_of_1000_nodes_runs_through_the_tree(treebed):
    settings, server = treebed
    nodes = (settings.path / "nodes").read_text().split()
    environment, digest = harness.tiny_environment(settings)
    with harness.SshConnectionSampler(server, settings.ssh_port, period=0.25) as sampler:
        result = harness.deploy(server, nodes, environment, timeout=DEPLOY_TIMEOUT)
    log_text = harness.logs(server, result.wid)
    assert sorted(result.ok) == sorted(nodes), log_text[-3000:]
    status = harness.node_status(settings)
    for node in nodes:
        entry = status[node]
        assert entry["state"] == "partition 3" and entry["digest"] == digest, (node, entry)
        assert entry["agent_runs"] >= 1, (node, entry)   # the node ran a command through the tree
    records = harness.stats(server, result.wid)
    assert set(records) == set(nodes)
    for record in records.values():
        # Kexec on every node: a command that takes its node down is never relayed (relay=False), so no
        # relay's kexec cuts its subtree (before that, 42 of 1,000 nodes once fell back to Classical)
        assert (record["step1"], record["step2"], record["step3"], record["success"], record["retry_step1"]) == (
            "SetDeploymentEnvUntrusted", "BroadcastEnvKascade", "BootNewEnvKexec", "true", "0"), record
    first_relay = min(entry["first_relay_at"] for entry in status.values())
    last_relay = max(entry["last_relay_end_at"] for entry in status.values())
    before = [count for when, count in sampler.samples if when < first_relay]
    during = [count for when, count in sampler.samples if first_relay <= when <= last_relay]
    print(f"\n{NODES} nodes through the tree in {result.seconds:.1f}s; server SSH connections before the "
          f"broadcast: peak {max(before, default=0)} ({len(before)} samples); during the broadcast "
          f"({last_relay - first_relay:.1f}s): peak {max(during, default=0)} ({len(during)} samples); "
          f"whole run peak {sampler.peak}")
    assert len(before) >= 4 and len(during) >= 2
    # the runs before the broadcast, and the broadcast's relays, went through the tree: the server
    # held its first level only (the kexec after it runs flat: relay=False)
    assert max(before) <= DEFAULT_ARITY, before
    assert max(during) <= DEFAULT_ARITY, during
