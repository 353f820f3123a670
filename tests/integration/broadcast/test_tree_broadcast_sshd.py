"""The broadcast's relays started through the executor's tree (issue 18), on 16 real sshd nodes.

An executor with a tree of arity 4 and `tree_from=2` starts the relays with
one stream run: the server holds at most 4 SSH connections (counted by the
kernel, `ss`, during the broadcast), the relays' control channels travel in
the tree's messages. Every sink appends a line to a file in its node's own
directory, so "started once" is read from the nodes. The file uses the first
16 nodes of the shared lab explicitly (the lab may have been grown by other
modules).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time

import pytest

from kadeploy.broadcast import broadcast
from kadeploy.remote import Executor
from kadeploy.remote.tree import TreeOptions
from tests.integration.broadcast.broadcastlab import IMAGE_SIZE, sha256_of

pytestmark = pytest.mark.root

NODES = 16
ARITY = 4
#: text only the tree agent's command line holds (its source is its argument)
SINK = 'echo x >> "$KBT_NODE_DIR/runs-bcast"; cat > "$KBT_NODE_DIR/out"'


@pytest.fixture
def tree_nodes(broadcast_lab):
    broadcast_lab.ensure(max(NODES, len(broadcast_lab.nodes)))
    nodes = broadcast_lab.nodes[:NODES]
    for node in nodes:
        for name in ("out", "runs-bcast"):
            (node.directory / name).unlink(missing_ok=True)
    return nodes


@pytest.fixture
async def tree_executor(broadcast_lab, tmp_path):
    executor = Executor(broadcast_lab.private_key, connect_timeout=5,
                        tree=TreeOptions(arity=ARITY, lock_dir=str(tmp_path), stall=5.0), tree_from=2)
    yield executor
    await executor.close()


class _Connections:
    """This process's established connections to port 22, sampled by `ss` in a thread (the peak)."""

    def __init__(self, period: float = 0.1) -> None:
        self.period = period
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        needle = f"pid={os.getpid()},"
        while not self._stop.wait(self.period):
            answer = subprocess.run(["ss", "-tnpH", "state", "established", "( dport = :22 )"],
                                    capture_output=True, text=True, timeout=30, check=False)
            self.samples.append(sum(1 for line in answer.stdout.splitlines() if needle in line))

    def __enter__(self) -> _Connections:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def _runs(node) -> int:
    path = node.directory / "runs-bcast"
    return len(path.read_text().splitlines()) if path.exists() else 0


def _written(node) -> int:
    try:
        return (node.directory / "out").stat().st_size
    except FileNotFoundError:
        return -1


async def test_a_chain_broadcast_through_a_tree_of_arity_4_is_byte_exact_with_4_connections(
        tree_nodes, tree_executor, image):
    path, expected = image
    order = [(node.hostname, node.address) for node in tree_nodes]
    with _Connections() as connections:
        result = await broadcast(path, order, SINK, method="chain", executor=tree_executor, timeout=120)
    print(f"\n{NODES} nodes, chain through a tree of arity {ARITY}: {result.seconds:.2f}s, server SSH "
          f"connections peak {max(connections.samples, default=0)} ({len(connections.samples)} samples)")
    assert result.ko == {}, result.ko
    assert sorted(result.ok) == sorted(host for host, _ in order)
    assert tree_executor.last_mode == "tree"
    run = tree_executor.last_tree
    assert run is not None and run.peak_links <= ARITY
    assert set(run.streams) == {host for host, _ in order}
    assert len(connections.samples) >= 3
    assert 0 < max(connections.samples) <= ARITY, connections.samples
    for node in tree_nodes:
        assert sha256_of(node.directory / "out") == expected, node.hostname
        assert _runs(node) == 1, node.hostname


async def test_a_relay_agent_killed_mid_broadcast_loses_its_node_only_and_no_node_twice(
        tree_nodes, tree_executor, image):
    path, expected = image
    order = [(node.hostname, node.address) for node in tree_nodes]
    first = tree_nodes[0]
    rate = 16 << 20  # the first node takes 16 MiB/s from the server: the whole chain runs at that pace
    stall = 3.0
    subtree: list[str] = []

    async def kill_a_relay_agent() -> str:
        """SIGKILL the agent of the first first-level node that has children, once data flows."""
        while True:
            await asyncio.sleep(0.05)
            run = tree_executor.last_tree
            if run is None or _written(first) < IMAGE_SIZE // 4:
                continue
            ledger = run.ledger
            for node in tree_nodes[1:]:
                if ledger.parent.get(node.hostname, "") is None and ledger.children.get(node.hostname):
                    subtree.extend(ledger._subtree(node.hostname))
                    for pid in node.tree_agent_pids():
                        os.kill(pid, signal.SIGKILL)
                    return node.hostname

    killer = asyncio.ensure_future(kill_a_relay_agent())
    started = time.monotonic()
    result = await broadcast(path, order, SINK, method="kascade", executor=tree_executor, timeout=120,
                             stall=stall, relay_options={first.hostname: {"limit_rate": rate}})
    elapsed = time.monotonic() - started
    victim = await asyncio.wait_for(killer, 1)
    print(f"\nkilled the agent of {victim} (subtree {subtree}) after {elapsed:.2f}s; KO: {result.ko}")
    # bounded by the stream's own pace and the stall times, not by the broadcast's timeout
    assert elapsed < 3 * IMAGE_SIZE / rate + 10 * stall, elapsed
    assert victim in subtree and len(subtree) > 1
    # its children's agents, orphaned, were adopted by the server: their relays went on
    assert set(result.ko) == {victim}, (result.ko, subtree)
    assert result.ko[victim], result.ko  # the reason given (its relay was cut, routed around)
    assert sorted(result.ok) == sorted(host for host, _ in order if host not in result.ko)
    for node in tree_nodes:
        assert _runs(node) <= 1, node.hostname
        if node.hostname in result.ok:
            assert sha256_of(node.directory / "out") == expected, node.hostname


async def test_bittorrent_agents_started_through_the_tree_reach_8_nodes_byte_exact(
        tree_nodes, tree_executor, image, tmp_path):
    path, expected = image
    nodes = tree_nodes[:8]
    order = [(node.hostname, node.address) for node in nodes]
    store = tmp_path / "store"
    store.mkdir()
    with _Connections() as connections:
        result = await broadcast(path, order, 'cat > "$KBT_NODE_DIR/out"', method="bittorrent",
                                 executor=tree_executor, timeout=180, store=str(store))
    assert result.ko == {}, result.ko
    assert tree_executor.last_mode == "tree"
    assert 0 < max(connections.samples, default=0) <= ARITY, connections.samples
    for node in nodes:
        assert sha256_of(node.directory / "out") == expected, node.hostname
    assert list(store.iterdir()) == []  # every node's stored copy removed once all had finished
