"""The `bittorrent` broadcast to 8 real sshd nodes: aria2c on every node, opentracker and an aria2c seed here.

Nodes are the sshd lab's network namespaces (they run this host's aria2c and
python3); their stores share the host's filesystem, each agent in its own
directory under the store.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

import pytest

from kadeploy.broadcast import broadcast
from tests.integration.broadcast.broadcastlab import hosts, sha256_of

pytestmark = pytest.mark.root

SINK = 'cat > "$KBT_NODE_DIR/out"'


def _own_processes(name: str) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    found.add(int(entry.name))
            except OSError:
                continue
    return found


def _in_node_mounts(node, *command: str, check: bool = True) -> str:
    """Run `command` in the mount namespace of the node's sshd (where its commands see their mounts)."""
    assert node.sshd is not None
    done = subprocess.run(["nsenter", "-t", str(node.sshd.pid), "-m", *command], capture_output=True, text=True,
                          timeout=30, check=check)
    return done.stdout


async def test_bittorrent_reaches_8_nodes_byte_exact_and_leaves_nothing_behind(lab, broadcast_executor, image,
                                                                             tmp_path):
    path, expected = image
    before = _own_processes("aria2c") | _own_processes("opentracker")
    result = await broadcast(path, hosts(lab), SINK, method="bittorrent", executor=broadcast_executor,
                             timeout=180, store=str(tmp_path))
    assert result.ko == {}
    assert sorted(result.ok) == sorted(lab.hosts)
    assert result.digest == expected
    for node in lab.nodes:
        assert sha256_of(node.directory / "out") == expected, node.hostname
    assert list(tmp_path.iterdir()) == []  # every node's stored copy removed once all had finished
    await asyncio.sleep(0.5)
    assert (_own_processes("aria2c") | _own_processes("opentracker")) - before == set()  # seeds, tracker killed
    assert sha256_of(path) == expected  # the seed did not touch the cached image


async def test_a_node_killed_mid_swarm_is_ko_with_its_reason_and_the_others_finish(lab, broadcast_executor,
                                                                                 image, tmp_path):
    path, expected = image
    victim = lab.nodes[3]
    slow = {node.hostname: {"limit_rate": 6 * 1024 * 1024} for node in lab.nodes}  # ~10 s each: time to kill

    async def kill_when_downloading() -> None:
        while True:
            for pid in victim.pids_matching("aria2c"):
                try:
                    written = int(Path(f"/proc/{pid}/io").read_text().split("wchar:")[1].split()[0])
                except (OSError, IndexError, ValueError):
                    continue
                if written > 8 * 1024 * 1024:  # mid-swarm: it has pieces, and peers take from it
                    for doomed in victim.pids_matching("python3 -c") + victim.pids_matching("aria2c"):
                        os.kill(doomed, signal.SIGKILL)
                    return
            await asyncio.sleep(0.05)

    killer = asyncio.ensure_future(kill_when_downloading())
    try:
        result = await broadcast(path, hosts(lab), SINK, method="bittorrent", executor=broadcast_executor,
                                 timeout=180, store=str(tmp_path), relay_options=slow)
    finally:
        killer.cancel()
    assert killer.done() and not killer.cancelled(), "the victim was never seen downloading"
    assert set(result.ko) == {victim.hostname}
    assert "BitTorrent agent died" in result.ko[victim.hostname]
    assert sorted(result.ok) == sorted(h for h in lab.hosts if h != victim.hostname)
    for node in lab.nodes:
        if node is not victim:
            assert sha256_of(node.directory / "out") == expected, node.hostname


async def test_an_image_too_large_for_the_store_is_refused_before_any_transfer(lab, broadcast_executor,
                                                                             image, tmp_path):
    path, _ = image
    store = tmp_path / "small"
    store.mkdir()
    for node in lab.nodes:  # each node's own 16 MiB "tmp partition", in its sshd's mount namespace
        _in_node_mounts(node, "mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(store))
    try:
        before = _own_processes("aria2c") | _own_processes("opentracker") | _own_processes("mktorrent")
        result = await broadcast(path, hosts(lab), SINK, method="bittorrent", executor=broadcast_executor,
                                 timeout=60, store=str(store))
        assert result.ok == []
        assert set(result.ko) == set(lab.hosts)
        for reason in result.ko.values():
            assert reason.startswith("Not enough room for the image: the image (67108864 bytes) does not fit in "
                                     f"{store} on the node: "), reason
        for node in lab.nodes:
            assert _in_node_mounts(node, "ls", "-A", str(store)) == ""
            assert not (node.directory / "out").exists()
        # nothing started on the server either: no torrent, tracker or seed
        assert (_own_processes("aria2c") | _own_processes("opentracker")) - before == set()
    finally:
        for node in lab.nodes:
            _in_node_mounts(node, "umount", str(store), check=False)


async def test_a_missing_store_is_refused_with_its_path(lab, broadcast_executor, image, tmp_path):
    path, _ = image
    result = await broadcast(path, hosts(lab)[:2], SINK, method="bittorrent", executor=broadcast_executor,
                             timeout=60, store=str(tmp_path / "absent"))
    assert result.ok == []
    assert all(f"the store {tmp_path / 'absent'} does not exist on the node" in r for r in result.ko.values())


async def test_a_server_side_failure_fails_every_node_with_its_reason_and_cleans_the_stores(
        lab, broadcast_executor, image, tmp_path, monkeypatch):
    path, _ = image
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "mktorrent").write_text("#!/bin/sh\necho 'cannot hash: disk error' >&2\nexit 3\n")
    (tools / "mktorrent").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}:{os.environ['PATH']}")  # the server's mktorrent only; nodes use sshd's PATH
    store = tmp_path / "store"
    store.mkdir()
    result = await broadcast(path, hosts(lab)[:2], SINK, method="bittorrent", executor=broadcast_executor,
                             timeout=60, store=str(store))
    assert result.ok == []
    assert set(result.ko.values()) == {"BitTorrent broadcast failed on the server: mktorrent failed: "
                                       "cannot hash: disk error"}
    assert list(store.iterdir()) == []  # the agents had made their directories; they removed them
