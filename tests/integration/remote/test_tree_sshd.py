"""The executor's tree mode against real sshd nodes: same results as flat, dead and frozen relays.

32 nodes (the shared lab grown), arity 4: the server holds at most 4 connections,
the agents reach the other nodes with `ssh -A` through the server's forwarded
ssh-agent. Every command appends a line to a file in its node's own directory,
so "ran once" is read from the nodes, not from what the server believes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest
from sshnodes import TREE_AGENT_MARK, SshLab, SshNode, acquire_shared, release_shared

from kadeploy.remote import Executor
from kadeploy.remote.ledger import MAX_JOINS
from kadeploy.remote.tree import TreeOptions
from tests.requirements import require

pytestmark = pytest.mark.root

NODES = 32
ARITY = 4
CONNECT_TIMEOUT = 5.0


@pytest.fixture(scope="module")
def tree_lab():
    require("root", "sshd")
    lab = acquire_shared(NODES)
    try:
        lab.ensure(NODES)
        yield lab
    finally:
        release_shared()


def _tree_executor(lab: SshLab, lock_dir: Path, **options) -> Executor:
    tree = TreeOptions(arity=ARITY, lock_dir=str(lock_dir), **options)
    return Executor(lab.private_key, connect_timeout=CONNECT_TIMEOUT, tree=tree, tree_from=2)


def _runs(lab: SshLab, tag: str) -> dict[str, int]:
    counts = {}
    for node in lab.nodes:
        path = node.directory / f"runs-{tag}"
        counts[node.hostname] = len(path.read_text().splitlines()) if path.exists() else 0
    return counts


async def test_tree_of_arity_4_gives_flat_results_on_32_nodes(tree_lab, tmp_path):
    victim = tree_lab.nodes[-1]  # sshd stopped: the same connection error in both modes
    command = ('echo "$KBT_NODE_DIR"; echo "err $KBT_NODE_DIR" >&2; echo x >> "$KBT_NODE_DIR/runs-TAG"; '
               'exit $(( ${#KBT_NODE_DIR} % 3 ))')
    tree_lab.stop_sshd(victim)
    try:
        flat = Executor(tree_lab.private_key, connect_timeout=5)
        tree = _tree_executor(tree_lab, tmp_path)
        try:
            flat_results = await flat.run(tree_lab.hosts, command.replace("TAG", "flat"), input=b"same stdin\n")
            tree_results = await tree.run(tree_lab.hosts, command.replace("TAG", "tree"), input=b"same stdin\n")
            assert tree.last_mode == "tree" and flat.last_mode == "flat"
            assert tree.last_tree is not None and tree.last_tree.peak_links <= ARITY
            depth = max(_depth(tree.last_tree.ledger.parent, host) for host in tree_lab.hosts)
            assert depth >= 2, "every node was reached from the first level: not a tree"
        finally:
            await flat.close()
            await tree.close()
    finally:
        tree_lab.start_sshd(victim)
        tree_lab.wait_port(victim)
    assert tree_results == flat_results
    assert tree_results[victim.hostname].error == "Connection refused"
    assert sum(result.exit_status is not None for result in tree_results.values()) == NODES - 1
    assert set(_runs(tree_lab, "tree").values()) == {0, 1}
    assert _runs(tree_lab, "tree") == _runs(tree_lab, "flat")


def _depth(parent: dict[str, str | None], host: str) -> int:
    depth = 1
    while parent.get(host) is not None:
        host = parent[host]  # type: ignore[assignment]
        depth += 1
    return depth


async def _first_relay_with_agent(executor: Executor, lab: SshLab, deadline: float) -> SshNode:
    """A first-level node whose agent is running (polled; bounded by `deadline`)."""
    while time.monotonic() < deadline:
        run = executor.last_tree
        if run is not None:
            first = [host for host, parent in run.ledger.parent.items() if parent is None]
            for host in first:
                node = lab.node(host)
                if node.tree_agent_pids():
                    return node
        await asyncio.sleep(0.02)
    raise AssertionError("no first-level agent appeared")


async def _first_relay_with_children(executor: Executor, lab: SshLab) -> SshNode:
    """A first-level relay that has said hello and been granted children (each wait bounded to 20 s)."""
    victim = await _first_relay_with_agent(executor, lab, time.monotonic() + 20)
    deadline = time.monotonic() + 20
    ledger = executor.last_tree.ledger
    while time.monotonic() < deadline and not ledger.children.get(victim.hostname):
        await asyncio.sleep(0.02)
    return victim


async def test_a_relay_killed_mid_command_loses_no_node_and_runs_none_twice(tree_lab, tmp_path):
    executor = _tree_executor(tree_lab, tmp_path, heartbeat=0.3, stall=3.0)
    command = 'echo x >> "$KBT_NODE_DIR/runs-killed"; sleep 1.5; echo done'
    try:
        task = asyncio.ensure_future(executor.run(tree_lab.hosts, command))
        # once its own command runs and it has started children: then kill the agent alone
        victim = await _first_relay_with_children(executor, tree_lab)
        ledger = executor.last_tree.ledger
        orphans = set(ledger.children[victim.hostname])
        for pid in victim.tree_agent_pids():
            os.kill(pid, signal.SIGKILL)
        results = await asyncio.wait_for(task, 60)
    finally:
        await executor.close()
    runs = _runs(tree_lab, "killed")
    assert set(results) == set(tree_lab.hosts)
    assert max(runs.values()) == 1, f"a node ran twice: {runs}"
    # only the dead relay's own command is lost: its children (orphans, or granted and not started
    # yet) were linked by the server itself (the victim was first-level) and ran once
    lost = sorted(host for host, result in results.items() if not result.ok)
    assert lost == [victim.hostname], {host: results[host].error for host in lost}
    assert results[victim.hostname].error.startswith("Relay "), results[victim.hostname]
    assert orphans and all(ledger.parent.get(host, "") is None for host in orphans), orphans
    for host, result in results.items():
        if result.ok:
            assert result.stdout == "done\n" and runs[host] == 1, (host, runs[host])
    for node in tree_lab.nodes:  # nothing left behind on any node
        assert await _gone(node, TREE_AGENT_MARK) == [] and await _gone(node, "sleep 1.5") == []


async def _gone(node: SshNode, text: str, timeout: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while node.pids_matching(text) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return node.pids_matching(text)


async def test_a_stalled_relay_is_overtaken_within_the_stall_bound(tree_lab, tmp_path):
    stall = 2.0
    orphan = 3 * stall
    executor = _tree_executor(tree_lab, tmp_path, heartbeat=0.25, stall=stall, orphan=orphan)
    stopped: list[int] = []
    try:
        started = time.monotonic()
        baseline = await executor.run(tree_lab.hosts, "true")
        healthy = time.monotonic() - started
        assert all(result.ok for result in baseline.values())

        task = asyncio.ensure_future(executor.run(tree_lab.hosts, 'echo x >> "$KBT_NODE_DIR/runs-stalled"'))
        # once it has said hello and been granted children (before that, its silence limit also
        # holds the connect timeout, which is about ssh and python start-up rather than stalls)
        victim = await _first_relay_with_children(executor, tree_lab)
        for pid in victim.tree_agent_pids():
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
        stopped_at = time.monotonic()
        results = await asyncio.wait_for(task, 60)
        stalled = time.monotonic() - stopped_at
    finally:
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        await executor.close()
    runs = _runs(tree_lab, "stalled")
    assert max(runs.values()) == 1
    for host, result in results.items():
        # the frozen relay's own command may have ended before it froze; every other node ran, once
        if host != victim.hostname:
            assert result.ok and runs[host] == 1, (host, result)
        elif not result.ok:
            assert result.error.startswith("Relay "), result
    # cut off after `stall`; granted again MAX_JOINS times, each attempt bounded by the silence
    # allowed before a hello (stall + connect timeout); its children then adopted by the server;
    # then what is left of the run (at most a healthy run's work); one more of each for slack
    bound = 2 * healthy + 2 * stall + MAX_JOINS * (stall + CONNECT_TIMEOUT)
    assert stalled < bound, (stalled, healthy, bound)
    # thawed, the relay is an orphan nobody adopts any more (the run is over): it ends by itself
    assert await _gone(victim, TREE_AGENT_MARK, timeout=orphan + 5) == []


async def test_a_timeout_and_a_cancellation_kill_the_commands_on_every_node(tree_lab, tmp_path):
    executor = _tree_executor(tree_lab, tmp_path)
    marker = f"sleep 9{os.getpid() % 100}7"
    try:
        results = await executor.run(tree_lab.hosts, f"{marker} & {marker}; echo never", timeout=1.0)
        assert executor.last_mode == "tree"
        assert {result.error for result in results.values()} == {"Command timeout after 1s"}
        for node in tree_lab.nodes:
            assert await _gone(node, marker) == []

        task = asyncio.ensure_future(executor.run(tree_lab.hosts, f"{marker} & {marker}"))
        deadline = time.monotonic() + 30
        while sum(bool(node.pids_matching(marker)) for node in tree_lab.nodes) < NODES // 2:
            assert time.monotonic() < deadline, "the tree did not reach half of the nodes"
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        await executor.close()
    for node in tree_lab.nodes:
        assert await _gone(node, marker) == [] and await _gone(node, TREE_AGENT_MARK) == []
