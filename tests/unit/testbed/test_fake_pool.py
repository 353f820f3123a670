"""Fake testbed worker processes: slices, the daemon-worker channel, merged stats, per-node draws."""

from __future__ import annotations

import asyncio
import resource
import signal
import socket
import subprocess

import pytest

from kadeploy.errors import KadeployError
from kadeploy_testbed.fake.control import WorkerChannel, WorkerGone, serve_channel
from kadeploy_testbed.fake.model import Distribution, draw
from kadeploy_testbed.fake.node import parse_fault
from kadeploy_testbed.fake.pool import Worker, WorkerPool, exit_description, merge_stats
from kadeploy_testbed.fake import settings
from kadeploy_testbed.fake.settings import FakeSettings, worker_slices, workers_needed


@pytest.mark.parametrize(("nodes", "workers"), [(1, 1), (10, 3), (4000, 2), (4001, 7), (5, 5)])
def test_worker_slices_are_contiguous_and_cover_every_node_once(nodes: int, workers: int) -> None:
    slices = worker_slices(nodes, workers)
    assert len(slices) == workers
    assert [position for part in slices for position in part] == list(range(nodes))
    assert max(len(part) for part in slices) - min(len(part) for part in slices) <= 1


def test_more_workers_than_nodes_is_refused() -> None:
    with pytest.raises(KadeployError, match="--fake-workers 3"):
        FakeSettings(directory="/nonexistent", nodes=2, workers=3).validate()
    with pytest.raises(KadeployError, match="--fake-workers 0"):
        FakeSettings(directory="/nonexistent", nodes=2, workers=0).validate()
    FakeSettings(directory="/nonexistent", nodes=2, workers=2).validate()


def test_workers_are_as_many_as_the_nodes_descriptors_need(monkeypatch: pytest.MonkeyPatch) -> None:
    assert workers_needed(4000, limit=20_000) == 1
    assert workers_needed(10_000, limit=20_000) == 3        # 4,936 nodes per worker at most
    assert workers_needed(10_000, limit=1 << 17) == 1
    monkeypatch.setattr(settings, "file_limit", lambda: 20_000)   # this machine's hard limit, wherever run
    with pytest.raises(KadeployError, match="--fake-workers 2: 10000 nodes need at least 3 worker processes"):
        FakeSettings(directory="/nonexistent", nodes=10_000, workers=2).validate()
    FakeSettings(directory="/nonexistent", nodes=10_000, workers=3).validate()


def test_boot_delays_are_drawn_per_node_index_not_per_slice_position() -> None:
    # what a worker draws for node 1001 must not depend on where node 1001 sits in its slice
    boot = Distribution(60, 120)
    whole = {index: boot.pick(draw(7, index, "boot-time", 0)) for index in range(1, 2001)}
    for part in worker_slices(2000, 3):
        for position in part:
            assert boot.pick(draw(7, position + 1, "boot-time", 0)) == whole[position + 1]
    assert len(set(whole.values())) == len(whole)  # and they do differ from node to node


def test_link_rate_takes_the_netns_syntax() -> None:
    assert parse_fault("link-rate", "8mbit") == 1_000_000
    assert parse_fault("link-rate", "8") == 1_000_000        # a bare number is Mbit/s, as in netns mode
    assert parse_fault("link-rate", "800kbit") == 100_000
    with pytest.raises(ValueError):
        parse_fault("link-rate", "fast")
    assert parse_fault("firmware-delay", "2.5") == 2.5


def test_stats_of_the_workers_are_summed_with_the_daemon_own() -> None:
    own = resource.getrusage(resource.RUSAGE_SELF)
    answers = [
        {"ok": True, "phases": {"partition": 3, "off": 1}, "cpu": 10.0, "max_rss_kib": 1000,
         "links": {"memlink": 5, "tcp": 1}, "pid": 11, "worker": 0, "nodes": "node-1..node-4"},
        {"ok": True, "phases": {"partition": 2, "hung": 1}, "cpu": 20.5, "max_rss_kib": 2000,
         "links": {"memlink": 4, "tcp": 0}, "pid": 12, "worker": 1, "nodes": "node-5..node-7"},
    ]
    merged = merge_stats(own, answers)
    assert merged["phases"] == {"partition": 5, "off": 1, "hung": 1}
    assert merged["cpu"] == pytest.approx(30.5 + own.ru_utime + own.ru_stime)
    assert merged["max_rss_kib"] == 3000 + own.ru_maxrss
    assert merged["links"] == {"memlink": 9, "tcp": 1}
    assert [worker["pid"] for worker in merged["workers"]] == [11, 12]


def test_exit_descriptions_name_the_signal() -> None:
    assert exit_description(-9) == "killed by SIGKILL"
    assert exit_description(1) == "exit status 1"


async def _channel_pair(dispatch):
    ours, theirs = socket.socketpair()
    worker_reader, worker_writer = await asyncio.open_connection(sock=theirs)
    reader, writer = await asyncio.open_connection(sock=ours)
    served = asyncio.ensure_future(serve_channel(worker_reader, worker_writer, dispatch))
    channel = WorkerChannel(reader, writer, "worker 9")
    answers = asyncio.ensure_future(channel.read_answers())
    return channel, served, answers, worker_writer


async def test_channel_answers_concurrent_requests_by_id() -> None:
    release = asyncio.Event()

    async def dispatch(request):
        if request["op"] == "slow":
            await release.wait()
        if request["op"] == "bad":
            raise KadeployError(0, "no such thing")
        return {"ok": True, "echo": request["op"]}

    channel, served, answers, worker_writer = await _channel_pair(dispatch)
    slow = asyncio.ensure_future(channel.request({"op": "slow"}, 5))
    assert await channel.request({"op": "fast"}, 5) == {"ok": True, "echo": "fast"}  # not stuck behind "slow"
    assert await channel.request({"op": "bad"}, 5) == {"ok": False, "error": "no such thing"}
    release.set()
    assert await slow == {"ok": True, "echo": "slow"}
    channel.close()
    await asyncio.wait_for(served, 5)  # the worker's side returns when the daemon hangs up
    await asyncio.wait_for(answers, 5)
    worker_writer.close()


async def test_a_worker_that_goes_away_fails_pending_requests_at_once() -> None:
    async def dispatch(request):
        await asyncio.sleep(3600)
        return {"ok": True}

    channel, served, answers, worker_writer = await _channel_pair(dispatch)
    pending = asyncio.ensure_future(channel.request({"op": "status"}, 60))
    await asyncio.sleep(0.05)
    served.cancel()
    worker_writer.transport.abort()  # what the kernel does to the socket of a killed process
    with pytest.raises(WorkerGone):
        await asyncio.wait_for(pending, 5)
    with pytest.raises(WorkerGone):
        await channel.request({"op": "status"}, 60)
    await asyncio.wait_for(answers, 5)


async def test_a_request_racing_a_worker_death_names_the_exit_status_not_the_closed_channel() -> None:
    # the kernel closes a killed worker's socket before the daemon's watcher reaps it; a request landing in
    # between used to answer "its channel closed" (seen in CI); it must wait for the watcher and say why
    pool = WorkerPool(FakeSettings(directory="/nonexistent", nodes=2, workers=1))
    process = subprocess.Popen(["sleep", "60"])
    ours, theirs = socket.socketpair()
    try:
        reader, writer = await asyncio.open_connection(sock=ours)
        worker = Worker(0, range(2), "node-1", "node-2", process, ours, WorkerChannel(reader, writer, "worker 0"))
        pool.workers.append(worker)
        worker.watcher = asyncio.ensure_future(pool._watch(worker))
        theirs.close()  # the channel goes first, the process is still there for a while
        await asyncio.sleep(0.1)
        assert process.poll() is None
        asyncio.get_running_loop().call_later(0.3, process.send_signal, signal.SIGKILL)
        with pytest.raises(KadeployError, match="died \\(killed by SIGKILL\\)"):
            await asyncio.wait_for(pool.dispatch({"op": "status"}), 10)
    finally:
        process.kill()
        process.wait()
        for task in list(pool._tasks):
            task.cancel()
