"""testbed.fake room: the fake daemon as the front of K worker processes, each serving a slice of the nodes.

Why: one process serving 4,000 nodes saturates one core during the
command-heavy micro-steps (SSH handshakes, sessions, relays), and the
deployment then waits on the testbed rather than on the drawn boot times.
With `workers` > 1 in fake.json the daemon starts K processes (`daemon.py
--worker I`), each with the contiguous slice `settings.worker_slices` gives
it: its nodes' sshd endpoints, relays and state, its own event loop. The
daemon keeps the control socket, so nothing outside changes: it routes
`power` and `fault` to the worker owning the node, concatenates `status` in
node order and sums `stats` (CPU seconds are those of every process).

Each worker talks to the daemon over one socketpair (`control.WorkerChannel`):
its end of stream is how either side learns the other died. A worker that
dies makes the daemon fail loudly: the error goes to the log, the other
workers are stopped, and every request but `stop` is answered with that
error until `down`. A worker whose daemon died stops by itself. No wait is
unbounded; Popen.poll() reaps children, so there is no child-watcher thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from kadeploy.errors import KadeployError
from kadeploy_testbed.fake.control import LINE_LIMIT, WorkerChannel, WorkerGone, serve_control
from kadeploy_testbed.fake.settings import FakeSettings, fake_layout, worker_slices
from kadeploy_testbed.state import control_socket

log = logging.getLogger("kadeploy_testbed.fake")

#: a forwarded request: below socat's 30 s in fake-bmc and the CLI's 60 s, so they see our error, not a timeout
FORWARD_TIMEOUT = 25.0
WORKER_STOP_TIMEOUT = 15.0
REAP_TIMEOUT = 5.0


@dataclass
class Worker:
    """One worker process and what the daemon knows of it."""

    index: int
    positions: range
    first: str
    last: str
    process: subprocess.Popen[bytes]
    endpoint: socket.socket            # the daemon's end of the socketpair, until `channel` wraps it
    channel: WorkerChannel | None = None
    watcher: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return f"fake testbed worker {self.index} (nodes {self.first}..{self.last}, pid {self.process.pid})"


def exit_description(returncode: int | None) -> str:
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


def merge_stats(own: resource.struct_rusage, answers: list[dict[str, Any]]) -> dict[str, Any]:
    """The daemon's `stats`: phases and links summed, CPU and peak RSS of the daemon plus every worker.

    Peak RSS is a sum of per-process peaks: an upper bound of the total, which
    is what the machine had to hold if the peaks coincide.
    """
    phases: dict[str, int] = {}
    links: dict[str, int] = {}
    workers = []
    cpu = own.ru_utime + own.ru_stime
    rss = own.ru_maxrss
    for answer in answers:
        for phase, count in answer["phases"].items():
            phases[phase] = phases.get(phase, 0) + count
        for kind, count in answer.get("links", {}).items():
            links[kind] = links.get(kind, 0) + count
        cpu += answer["cpu"]
        rss += answer["max_rss_kib"]
        workers.append({key: answer.get(key) for key in ("worker", "pid", "nodes", "cpu", "max_rss_kib", "links")})
    return {"ok": True, "phases": phases, "cpu": cpu, "max_rss_kib": rss, "links": links, "workers": workers,
            "daemon": {"pid": os.getpid(), "cpu": own.ru_utime + own.ru_stime, "max_rss_kib": own.ru_maxrss}}


class WorkerPool:
    """The daemon's side: start the workers, route control requests to them, watch them, stop them."""

    def __init__(self, settings: FakeSettings) -> None:
        self.settings = settings
        layout = fake_layout(settings.nodes, settings.clusters)
        self.owner: dict[str, int] = {}
        self.workers: list[Worker] = []
        self._slices = worker_slices(settings.nodes, settings.workers)
        for index, positions in enumerate(self._slices):
            for spec in layout.nodes[positions.start:positions.stop]:
                for name in (spec.hostname, spec.short_name, spec.ip):
                    self.owner[name] = index
        self._names = [(layout.nodes[p.start].hostname, layout.nodes[p.stop - 1].hostname) for p in self._slices]
        self.failure: str | None = None
        self.stopped = asyncio.Event()
        self.control: asyncio.AbstractServer | None = None
        self._stopping = False
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- start ---------------------------------------------------------------------------
    async def start(self, timeout: float) -> None:
        """Fork every worker and wait until each has said it is ready; a KadeployError otherwise."""
        for index, positions in enumerate(self._slices):
            self.workers.append(self._fork(index, positions))
        try:
            await asyncio.wait_for(asyncio.gather(*(self._connect(worker) for worker in self.workers)), timeout)
        except TimeoutError:
            late = [w.name for w in self.workers if w.channel is None]
            raise KadeployError(0, f"not ready after {timeout:.0f}s: {', '.join(late)}") from None
        for worker in self.workers:
            worker.watcher = asyncio.ensure_future(self._watch(worker))

    def _fork(self, index: int, positions: range) -> Worker:
        ours, theirs = socket.socketpair()
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "kadeploy_testbed.fake.daemon", "--dir", str(self.settings.path),
                 "--worker", str(index), "--channel-fd", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)  # stdout, stderr: the daemon's log
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        first, last = self._names[index]
        return Worker(index, positions, first, last, process, ours)

    async def _connect(self, worker: Worker) -> None:
        reader, writer = await asyncio.open_connection(sock=worker.endpoint, limit=LINE_LIMIT)
        line = await reader.readline()
        try:
            hello = json.loads(line) if line else {}
        except ValueError:
            hello = {}
        if not hello.get("ready"):
            writer.close()
            returncode = await reap(worker.process, REAP_TIMEOUT)
            raise KadeployError(0, f"{worker.name} failed to start ({exit_description(returncode)}); "
                                   "see daemon.log")
        worker.channel = WorkerChannel(reader, writer, worker.name)

    # -- watching ------------------------------------------------------------------------
    async def _watch(self, worker: Worker) -> None:
        """Wait for the worker's end of stream; unless we are stopping, that is a failure of the testbed."""
        assert worker.channel is not None
        await worker.channel.read_answers()
        if self._stopping or self.failure is not None:
            return
        returncode = await reap(worker.process, REAP_TIMEOUT)
        if self._stopping or self.failure is not None:
            return
        self.failure = (f"{worker.name} died ({exit_description(returncode)}); the other workers were stopped; "
                        "run `kadeploy-testbed down`")
        log.error("%s", self.failure)
        self._spawn(self._stop_workers())

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- requests ------------------------------------------------------------------------
    async def _ask(self, worker: Worker, request: dict[str, Any]) -> dict[str, Any]:
        if worker.channel is None:
            raise KadeployError(0, f"{worker.name} is not running")
        try:
            return await worker.channel.request(request, FORWARD_TIMEOUT)
        except WorkerGone:
            # the channel closes before the process is reaped: let the watcher name the cause (exit status,
            # signal) rather than answer with the bare symptom
            if self.failure is None and worker.watcher is not None:
                await asyncio.wait({worker.watcher}, timeout=2 * REAP_TIMEOUT + 1)
            raise KadeployError(0, self.failure or f"{worker.name} is gone (its channel closed)") from None

    async def _ask_all(self, request: dict[str, Any]) -> list[dict[str, Any]]:
        answers = await asyncio.gather(*(self._ask(worker, dict(request)) for worker in self.workers))
        for answer in answers:
            if not answer.get("ok"):
                raise KadeployError(0, str(answer.get("error")))
        return answers

    async def dispatch(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request["op"]
        if op == "stop":
            asyncio.get_running_loop().call_soon(lambda: self._spawn(self.stop()))
            return {"ok": True}
        if self.failure is not None:
            raise KadeployError(0, self.failure)
        if op in ("power", "fault"):
            index = self.owner.get(str(request["node"]))
            if index is None:
                raise KadeployError(0, f"{request['node']}: not a node of this testbed")
            return await self._ask(self.workers[index], request)
        if op == "status":
            answers = await self._ask_all(request)
            return {"ok": True, "mode": "fake", "nodes": [node for answer in answers for node in answer["nodes"]]}
        if op == "stats":
            return merge_stats(resource.getrusage(resource.RUSAGE_SELF), await self._ask_all(request))
        raise KadeployError(0, f"unknown op {op!r}")

    # -- stop ----------------------------------------------------------------------------
    async def stop(self) -> None:
        """Close the control socket, stop every worker (nodes powered off), then let the daemon exit."""
        if self._stopping:
            return
        self._stopping = True
        if self.control is not None:
            self.control.close()
        await self._stop_workers()
        self.stopped.set()

    async def _stop_workers(self) -> None:
        async def one(worker: Worker) -> None:
            if worker.process.poll() is None:
                if worker.channel is None:  # stopped while starting: it has no channel to hear `stop` on
                    worker.process.terminate()
                elif not worker.channel.closed.is_set():
                    with contextlib.suppress(KadeployError):
                        await worker.channel.request({"op": "stop"}, WORKER_STOP_TIMEOUT)
            returncode = await reap(worker.process, WORKER_STOP_TIMEOUT)
            if returncode not in (0, None) and self.failure is None:
                log.warning("%s ended with %s", worker.name, exit_description(returncode))
            if worker.channel is not None:
                worker.channel.close()

        await asyncio.gather(*(one(worker) for worker in self.workers), return_exceptions=True)

    def kill_all(self) -> None:
        """Last resort (a failed start): SIGKILL every worker still running and reap it."""
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.process.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    worker.process.wait(timeout=REAP_TIMEOUT)


async def reap(process: subprocess.Popen[bytes], timeout: float) -> int | None:
    """Wait up to `timeout` for `process` to exit, then SIGKILL it; its return code (None if unkillable)."""
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    if process.poll() is None:
        log.warning("pid %d did not exit within %gs: killing it", process.pid, timeout)
        process.kill()
        deadline = time.monotonic() + REAP_TIMEOUT
        while process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    return process.poll()


async def serve_pool(settings: FakeSettings) -> None:
    """The daemon with K workers: start them, then answer on the control socket until stopped."""
    pool = WorkerPool(settings)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, lambda: pool._spawn(pool.stop()))
    started = time.monotonic()
    try:
        await pool.start(timeout=30.0 + settings.nodes / 100)
    except BaseException:
        pool.kill_all()
        raise
    path = control_socket(settings.path)
    pool.control = await serve_control(path, pool.dispatch)
    log.info("fake testbed: %d nodes up in %d workers (pids %s) in %.1fs", settings.nodes, len(pool.workers),
             ", ".join(str(worker.process.pid) for worker in pool.workers), time.monotonic() - started)
    try:
        await pool.stopped.wait()
    finally:
        path.unlink(missing_ok=True)
        pool.kill_all()
