"""Broadcast of a real image to 8 real sshd nodes, with failures injected for real."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable

import pytest

from kadeploy.broadcast import broadcast
from kadeploy.errors import KadeployError
from tests.integration.broadcast.broadcastlab import IMAGE_SIZE, hosts, sha256_of

pytestmark = pytest.mark.root

SINK = (
    'if [ -e "$KBT_NODE_DIR/fail" ]; then head -c 1000 >/dev/null; echo "disk full" >&2; exit 1; fi; '
    'cat > "$KBT_NODE_DIR/out"'
)


def _written(node) -> int:
    """Bytes the node's sink has written so far (-1 before it started)."""
    try:
        return (node.directory / "out").stat().st_size
    except FileNotFoundError:
        return -1


def _first_is_ahead(first, second) -> bool:
    """`first` has written the whole image while `second`, behind it, has less than half."""
    return _written(first) == IMAGE_SIZE and 0 <= _written(second) < IMAGE_SIZE // 2


async def _kill_relay_when(node, condition: Callable[[], bool]) -> None:
    """SIGKILL the node's relay once `condition()` holds: the relay dies, the node stays up."""
    while not condition():
        await asyncio.sleep(0.02)
    for pid in node.pids_matching("python3 -c"):
        os.kill(pid, signal.SIGKILL)


async def _power_off_when(node, condition: Callable[[], bool], frozen: list[int]) -> None:
    """A power cut once `condition()` holds: link down and relay frozen, so no FIN and no RST leave."""
    while not condition():
        await asyncio.sleep(0.02)
    proc = await asyncio.create_subprocess_exec("ip", "link", "set", f"kbtv{node.index}", "down")
    await proc.wait()
    for pid in node.pids_matching("python3 -c"):
        os.kill(pid, signal.SIGSTOP)
        frozen.append(pid)


async def _power_back_on(node, frozen: list[int]) -> None:
    """Undo `_power_off_when`: the frozen relays are killed, the link comes back."""
    for pid in frozen:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc = await asyncio.create_subprocess_exec("ip", "link", "set", f"kbtv{node.index}", "up")
    await proc.wait()


@pytest.mark.parametrize("method", ["kascade", "chain", "tree", "flat"])
async def test_image_reaches_every_node_byte_exact(lab, broadcast_executor, image, method):
    path, expected = image
    result = await broadcast(path, hosts(lab), SINK, method=method, executor=broadcast_executor,
                             timeout=120, tree_arity=2)
    assert result.ko == {}
    assert sorted(result.ok) == sorted(lab.hosts)
    assert result.digest == expected
    for node in lab.nodes:
        assert sha256_of(node.directory / "out") == expected, node.hostname


async def test_relays_without_zero_copy_deliver_byte_exact(lab, broadcast_executor, image):
    """The path of a node without memfd, splice or sendfile (write and send from the ring)."""
    path, expected = image
    no_zero_copy = {node.hostname: {"zero_copy": False} for node in lab.nodes}
    result = await broadcast(path, hosts(lab), SINK, method="kascade", executor=broadcast_executor,
                             timeout=120, ring=IMAGE_SIZE // 2, relay_options=no_zero_copy)
    assert result.ko == {}
    for node in lab.nodes:
        assert sha256_of(node.directory / "out") == expected, node.hostname


@pytest.mark.parametrize("zero_copy", [True, False], ids=["zero-copy", "no-zero-copy"])
@pytest.mark.parametrize("ring", [IMAGE_SIZE, IMAGE_SIZE // 2], ids=["whole-image-ring", "wrapping-ring"])
async def test_node_killed_mid_stream_is_bypassed_and_the_others_complete(lab, broadcast_executor, image, ring,
                                                                          zero_copy):
    path, expected = image
    victim = lab.nodes[3]
    first = lab.nodes[0]

    killer = asyncio.ensure_future(_kill_relay_when(victim, lambda: _written(victim) >= IMAGE_SIZE // 2))
    started = time.monotonic()
    # the first node takes 16 MiB/s from the server: the whole chain runs at that pace
    options = {node.hostname: {"zero_copy": zero_copy} for node in lab.nodes}
    options[first.hostname] = {"zero_copy": zero_copy, "limit_rate": 16 << 20}
    result = await broadcast(path, hosts(lab), SINK, method="kascade", executor=broadcast_executor,
                             timeout=120, stall=3, ring=ring, relay_options=options)
    await asyncio.wait_for(killer, 1)
    assert time.monotonic() - started < 60
    assert list(result.ko) == [victim.hostname]
    assert "Relay died" in result.ko[victim.hostname] or "Bypassed" in result.ko[victim.hostname]
    assert sorted(result.ok) == sorted(h for h in lab.hosts if h != victim.hostname)
    for node in lab.nodes:
        if node is not victim:
            assert sha256_of(node.directory / "out") == expected, node.hostname


async def test_slow_successor_of_a_killed_node_resumes_from_a_wrapping_ring(lab, broadcast_executor, image):
    """The worst case for a repair: the successor of the dead node is the slowest node, so the dead
    node was as far ahead of it as its ring allows, and its predecessor as far ahead of the dead
    node; the successor's offset must still be in the predecessor's ring (it was not when
    repairs kept only half the ring: the successor was bypassed too)."""
    path, expected = image
    victim, successor = lab.nodes[3], lab.nodes[4]

    killer = asyncio.ensure_future(_kill_relay_when(victim, lambda: _written(victim) >= IMAGE_SIZE // 2))
    result = await broadcast(path, hosts(lab), SINK, method="kascade", executor=broadcast_executor,
                             timeout=120, stall=3, ring=IMAGE_SIZE // 2,
                             relay_options={successor.hostname: {"limit_rate": 16 << 20}})
    await asyncio.wait_for(killer, 1)
    assert list(result.ko) == [victim.hostname], result.ko
    for node in lab.nodes:
        if node is not victim:
            assert sha256_of(node.directory / "out") == expected, node.hostname


async def test_chain_without_repair_fails_the_nodes_after_a_dead_one(lab, broadcast_executor, image):
    path, _expected = image
    victim = lab.nodes[5]
    killer = asyncio.ensure_future(_kill_relay_when(victim, lambda: _written(victim) >= IMAGE_SIZE // 2))
    result = await broadcast(path, hosts(lab), SINK, method="chain", executor=broadcast_executor,
                             timeout=120, stall=3, relay_options={lab.nodes[0].hostname: {"limit_rate": 16 << 20}})
    await asyncio.wait_for(killer, 1)
    assert set(result.ko) == {node.hostname for node in lab.nodes[5:]}
    assert "chain broken" in result.ko[lab.nodes[6].hostname]
    assert sorted(result.ok) == sorted(node.hostname for node in lab.nodes[:5])


async def test_failing_local_pipeline_is_ko_but_keeps_forwarding(lab, broadcast_executor, image):
    path, expected = image
    broken = lab.nodes[2]
    (broken.directory / "fail").touch()
    result = await broadcast(path, hosts(lab), SINK, method="kascade", executor=broadcast_executor, timeout=120)
    assert list(result.ko) == [broken.hostname]
    assert "Local pipeline failed (exit status 1)" in result.ko[broken.hostname]
    assert "disk full" in result.ko[broken.hostname]
    for node in lab.nodes[3:]:  # its successors got everything through it
        assert sha256_of(node.directory / "out") == expected, node.hostname


@pytest.mark.parametrize("algorithm", ["sha256", "crc32"])
async def test_corrupted_stream_is_detected_by_the_digest(lab, broadcast_executor, image, algorithm):
    path, _expected = image
    corrupted = lab.nodes[4]
    result = await broadcast(path, hosts(lab), SINK, method="kascade", executor=broadcast_executor,
                             timeout=120, relay_options={corrupted.hostname: {"corrupt_at": 12345}},
                             digest_algorithm=algorithm)
    assert corrupted.hostname in result.ko
    assert "Digest mismatch" in result.ko[corrupted.hostname]
    assert sorted(result.ok)[:4] == sorted(node.hostname for node in lab.nodes[:4])
    # what the node wrote differs from the image exactly where the byte was flipped
    data = (corrupted.directory / "out").read_bytes()
    assert data[12345] != path.read_bytes()[12345]


async def test_unreachable_node_is_ko_and_the_others_complete(lab, broadcast_executor, image):
    path, expected = image
    victim = lab.nodes[1]
    lab.stop_sshd(victim)
    try:
        result = await broadcast(path, hosts(lab), SINK, method="kascade", executor=broadcast_executor, timeout=120)
    finally:
        lab.start_sshd(victim)
        lab.wait_port(victim)
    assert result.ko == {victim.hostname: "Connection refused"}
    assert len(result.ok) == len(lab.nodes) - 1
    for node in lab.nodes:
        if node is not victim:
            assert sha256_of(node.directory / "out") == expected


async def test_unreadable_image_fails_before_touching_any_node(lab, broadcast_executor, tmp_path):
    with pytest.raises(KadeployError, match="Cannot read the environment image"):
        await broadcast(tmp_path / "missing.tgz", hosts(lab), SINK, executor=broadcast_executor)
    assert not any((node.directory / "out").exists() for node in lab.nodes)


async def test_node_dying_after_it_has_the_whole_stream_still_gets_its_successors_fed(lab, broadcast_executor,
                                                                                      image):
    """The first node acknowledges the whole image to the server, then dies while still forwarding it:
    the server, its predecessor, feeds the next node from where that node is (found by the e2e suite)."""
    path, expected = image
    first, second = lab.nodes[0], lab.nodes[1]

    killer = asyncio.ensure_future(_kill_relay_when(first, lambda: _first_is_ahead(first, second)))
    started = time.monotonic()
    # a ring of the whole image, so that the first node can get all of it ahead of the second
    result = await broadcast(path, hosts(lab), SINK, method="kascade", executor=broadcast_executor,
                             timeout=120, stall=3, ring=IMAGE_SIZE,
                             relay_options={second.hostname: {"limit_rate": 16 << 20}})
    await asyncio.wait_for(killer, 1)
    assert time.monotonic() - started < 60
    assert set(result.ok) >= {h for h in lab.hosts if h != first.hostname}, result.ko
    for node in lab.nodes[1:]:
        assert sha256_of(node.directory / "out") == expected, node.hostname


async def test_node_powered_off_silently_after_it_has_the_whole_stream(lab, broadcast_executor, image):
    """A power cut sends no FIN and no RST: the first node acknowledges the whole image, then its
    link goes dead while it still forwards. Its SSH channel goes silent rather than closing, so
    only a liveness check can tell; the next node must still be fed (found by the e2e suite)."""
    path, expected = image
    first, second = lab.nodes[0], lab.nodes[1]
    frozen: list[int] = []
    killer = asyncio.ensure_future(_power_off_when(first, lambda: _first_is_ahead(first, second), frozen))
    started = time.monotonic()
    try:
        result = await broadcast(path, hosts(lab), SINK, method="kascade", executor=broadcast_executor,
                                 timeout=120, stall=3, ring=IMAGE_SIZE,  # as above
                                 relay_options={second.hostname: {"limit_rate": 16 << 20}})
        elapsed = time.monotonic() - started
        await asyncio.wait_for(killer, 1)
    finally:
        killer.cancel()
        await _power_back_on(first, frozen)
    assert frozen, "the first node was never powered off"
    assert elapsed < 60, f"the broadcast took {elapsed:.0f}s"
    # the first node had written the whole image before its power cut: OK or KO, both are right
    assert set(result.ok) >= {h for h in lab.hosts if h != first.hostname}, result.ko
    for node in lab.nodes[1:]:
        assert sha256_of(node.directory / "out") == expected, node.hostname


# Tree repair. Binary tree over the 8 nodes in order (heap layout): the server feeds 0 and 1,
# 0 feeds 2 and 3, 1 feeds 4 and 5, 2 feeds 6 and 7.

@pytest.mark.parametrize("ring", [IMAGE_SIZE, IMAGE_SIZE // 2], ids=["whole-image-ring", "wrapping-ring"])
async def test_tree_inner_node_killed_mid_stream_its_parent_feeds_its_children(lab, broadcast_executor, image, ring):
    """Node 2 dies at half the stream: node 0, its parent, feeds 6 and 7 from where they are
    (with a ring smaller than the image too: the bytes they need must still be in node 0's)."""
    path, expected = image
    parent, victim = lab.nodes[0], lab.nodes[2]

    killer = asyncio.ensure_future(_kill_relay_when(victim, lambda: _written(victim) >= IMAGE_SIZE // 2))
    started = time.monotonic()
    # node 0 takes 16 MiB/s from the server: its whole subtree runs at that pace
    result = await broadcast(path, hosts(lab), SINK, method="tree", tree_arity=2, executor=broadcast_executor,
                             timeout=120, stall=3, ring=ring,
                             relay_options={parent.hostname: {"limit_rate": 16 << 20}})
    await asyncio.wait_for(killer, 1)
    assert time.monotonic() - started < 60
    assert list(result.ko) == [victim.hostname]
    assert "Relay died" in result.ko[victim.hostname] or "Bypassed" in result.ko[victim.hostname]
    assert sorted(result.ok) == sorted(h for h in lab.hosts if h != victim.hostname)
    for node in lab.nodes:
        if node is not victim:
            assert sha256_of(node.directory / "out") == expected, node.hostname


async def test_tree_inner_node_powered_off_silently_the_server_feeds_its_subtree(lab, broadcast_executor, image):
    """Node 0 loses power at half the stream (link down, processes frozen: no FIN, no RST): the
    server, its parent, feeds 2 and 3 from where they are, and they keep feeding 6 and 7."""
    path, expected = image
    victim = lab.nodes[0]
    frozen: list[int] = []
    killer = asyncio.ensure_future(_power_off_when(victim, lambda: _written(victim) >= IMAGE_SIZE // 2, frozen))
    started = time.monotonic()
    try:
        result = await broadcast(path, hosts(lab), SINK, method="tree", tree_arity=2,
                                 executor=broadcast_executor, timeout=120, stall=3,
                                 relay_options={victim.hostname: {"limit_rate": 16 << 20}})
        elapsed = time.monotonic() - started
        await asyncio.wait_for(killer, 1)
    finally:
        killer.cancel()
        await _power_back_on(victim, frozen)
    assert frozen, "the node was never powered off"
    assert elapsed < 60, f"the broadcast took {elapsed:.0f}s"
    assert list(result.ko) == [victim.hostname]
    assert sorted(result.ok) == sorted(h for h in lab.hosts if h != victim.hostname)
    for node in lab.nodes[1:]:
        assert sha256_of(node.directory / "out") == expected, node.hostname
