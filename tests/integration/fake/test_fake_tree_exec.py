"""The executor's tree mode on fake nodes: the real agent logic hosted by the fake testbed.

40 fake nodes in two worker processes (so that children are started both
in-process and over SSH to the other worker's nodes), arity 4: the same
per-node results as flat, a powered-off node gets ssh's "Connection refused"
in both modes, the server holds at most `arity` first-level links, and the
tree is deeper than its first level.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kadeploy.remote import Executor
from kadeploy.remote.tree import TreeOptions
from kadeploy_testbed.fake import harness
from kadeploy_testbed.fake.settings import FakeSettings, fake_layout
from tests.ports import free_port

NODES = 40
ARITY = 4



@pytest.fixture(scope="module")
def smallbed(tmp_path_factory: pytest.TempPathFactory, fake_ports: dict[str, int]) -> Iterator[FakeSettings]:
    directory = tmp_path_factory.mktemp("fake-tree-exec")
    settings = harness.up(directory, NODES, server_port=free_port(), workers=2, **fake_ports)
    try:
        yield settings
    finally:
        harness.down(directory)


def _depth(parent: dict[str, str | None], host: str) -> int:
    depth = 1
    while parent.get(host) is not None:
        host = parent[host]  # type: ignore[assignment]
        depth += 1
    return depth


async def test_tree_on_fake_nodes_gives_the_flat_results(smallbed):
    hosts = {spec.hostname: spec.ip for spec in fake_layout(NODES, 1).nodes}
    victim = list(hosts)[-3]
    harness.control(smallbed.path, {"op": "power", "bmc": True, "node": victim, "action": "off"})
    key = smallbed.path / "etc" / "keys" / "id_deploy"
    flat = Executor(key, port=smallbed.ssh_port, connect_timeout=5)
    tree = Executor(key, port=smallbed.ssh_port, connect_timeout=5, tree=TreeOptions(arity=ARITY), tree_from=2)
    try:
        for command in ("echo same", "exit 3", "mount | grep ' / ' | cut -f1 -d' '", "no-such-command"):
            flat_results = await flat.run(hosts, command)
            tree_results = await tree.run(hosts, command)
            assert tree.last_mode == "tree" and flat.last_mode == "flat"
            assert tree_results == flat_results, command
            assert tree.last_tree is not None and tree.last_tree.peak_links <= ARITY
            assert max(_depth(tree.last_tree.ledger.parent, host) for host in hosts) >= 2, (command, tree.last_tree.ledger.parent)
            assert set(tree.last_tree.ledger.grants.values()) == {1}  # no node given twice
        assert tree_results[victim].error == "Connection refused"
        assert flat_results["node-1.c1.testbed"].exit_status == 127  # refused by the fake, not faked
    finally:
        await flat.close()
        await tree.close()
    status = harness.node_status(smallbed)
    assert all(status[host]["agent_runs"] == 4 for host in hosts if host != victim)
    assert status[victim]["agent_runs"] == 0
