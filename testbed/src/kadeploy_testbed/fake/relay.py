"""testbed.fake room: the broadcast relay of a fake node, in-process and asyncio.

The real relay (`kadeploy/broadcast/relay.py`) is a python3 process per node
with threads and a ring buffer of up to 256 MiB: at 4,000 nodes on one machine
that is 4,000 interpreters. This class speaks the same protocol on the same
SSH channel (JSON lines: `start`/`dead` in, `ready`/`bypass`/`done` out) and
the same TCP resumption protocol between relays (8-byte offsets, end-of-stream
acknowledgement), bound to the node's own loopback address, so the server's
coordinator and `SourceSender` run unchanged; links between two relays of
one process go through `memlink` (no descriptors), the server's connections
and links to a relay served by another worker process (a slice boundary of
the chain, or a repair across it) through the real listener. Differences,
on purpose: the
sink is an `ImageSink` (digest checked, nothing written), and the buffer
behind the slowest child is small (`buffer`, default 256 KiB) with half of it
retained for a repaired chain to resume from.

The protocol's definitions (the offset word, the event line, the defaults, how
a failed link is described) are imported from the real relay, not re-stated:
it stays one stdlib-only file, and this one follows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from kadeploy.broadcast.relay import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_STALL,
    OFFSET,
    ResumeError,
    describe,
    event_line,
    new_digest,
)
from kadeploy.cancelling import cancel_and_wait
from kadeploy_testbed.fake.memlink import link_pair
from kadeploy_testbed.fake.sinks import ImageSink

#: bytes taken from upstream per read: the fake's own, not the relay's CHUNK (4 MiB), since the
#: fake's whole buffer is 256 KiB by default and a read may run that far past it
READ_SIZE = 256 * 1024

#: relays of this process by listening (address, port): links between them stay in-process (memlink)
_LISTENING: dict[tuple[str, int], FakeRelay] = {}
#: relay-to-relay links this process opened, by kind (the `stats` answer shows where the chain crossed workers)
LINK_COUNTS: dict[str, int] = {"memlink": 0, "tcp": 0}


class FakeRelay:
    """One relay run; `await run(readline)` returns the exit status of the `python3` command."""

    def __init__(self, address: str, config: dict[str, Any], sink: ImageSink,
                 emit: Callable[[str], None], *, buffer: int = 256 * 1024) -> None:
        self.address = address
        self.total = int(config["total"])
        self.stall = float(config.get("stall", DEFAULT_STALL))
        self.connect_timeout = float(config.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT))
        self.corrupt_at = config.get("corrupt_at")
        self.limit_rate = float(config.get("limit_rate") or 0)
        self.mode = config.get("mode", "")
        self.capacity = max(1, min(int(config.get("ring", buffer)), buffer, max(self.total, 1)))
        self.sink = sink
        self._emit_line = emit
        self.digest = new_digest(config.get("digest", "sha256"))
        self.received = 0
        self.chunks: deque[tuple[int, bytes]] = deque()
        self.readers: dict[str, tuple[int, int]] = {}  # child -> (offset, retain)
        self.dead: set[str] = set()
        self.sink_done = asyncio.Event()
        self._data = asyncio.Event()
        self._space = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._upstream: asyncio.Task[Any] | None = None
        self._current: dict[int, tuple[str, Any]] = {}  # child index -> (host, StreamWriter or LinkWriter)
        self._began = time.monotonic()

    # -- events ------------------------------------------------------------------------
    def emit(self, event: str, **fields: Any) -> None:
        self._emit_line(event_line(event, **fields))

    # -- the ring ----------------------------------------------------------------------
    def _low(self) -> int:
        if not self.readers:
            return self.received
        return max(0, min(offset - retain for offset, retain in self.readers.values()))

    def _trim(self) -> None:
        low = self._low()
        while self.chunks and self.chunks[0][0] + len(self.chunks[0][1]) <= low:
            self.chunks.popleft()
        if self.received - self._low() < self.capacity:
            self._space.set()

    def oldest(self) -> int:
        return self.chunks[0][0] if self.chunks else self.received

    def _wake(self) -> None:
        event, self._data = self._data, asyncio.Event()
        event.set()

    async def _wait_space(self) -> None:
        while self.received - self._low() >= self.capacity:
            self._space.clear()
            await self._space.wait()

    def _commit(self, data: bytes) -> None:
        start = self.received
        if self.corrupt_at is not None and start <= int(self.corrupt_at) < start + len(data):
            mutable = bytearray(data)
            mutable[int(self.corrupt_at) - start] ^= 0xFF
            data = bytes(mutable)
        self.digest.update(data)
        self.sink.feed(data)
        self.received += len(data)
        if self.readers:
            self.chunks.append((start, data))
        self._wake()
        if self.received >= self.total and not self.sink_done.is_set():
            status = self.sink.close()
            self.emit("done", received=self.received, digest=self.digest.hexdigest(),
                      sink_status=status, sink_error=self.sink.error, cpu=0.0)
            self.sink_done.set()

    def _view(self, offset: int) -> memoryview | None:
        if offset < self.oldest():
            raise ResumeError(f"offset {offset} is no longer in the ring buffer")
        for start, data in self.chunks:
            if start <= offset < start + len(data):
                return memoryview(data)[offset - start:]
        return None

    # -- receiving ---------------------------------------------------------------------
    def accept_link(self, reader: Any, writer: Any) -> None:
        """A relay of this daemon connected through memlink: serve it as a TCP upstream."""
        self._spawn(self._upstream_connection(reader, writer))

    async def _upstream_connection(self, reader: Any, writer: Any) -> None:
        previous, self._upstream = self._upstream, asyncio.current_task()
        if previous is not None:
            previous.cancel()
        try:
            writer.write(OFFSET.pack(self.received))
            await asyncio.wait_for(writer.drain(), self.stall)
            while self.received < self.total:
                await self._wait_space()
                data = await reader.read(min(READ_SIZE, self.total - self.received))
                if not data:
                    return
                self._commit(data)
                if self.limit_rate:
                    ahead = self.received / self.limit_rate - (time.monotonic() - self._began)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
            writer.write(OFFSET.pack(self.total))
            await asyncio.wait_for(writer.drain(), self.stall)
        except (TimeoutError, OSError, ConnectionError):
            pass
        finally:
            writer.close()

    async def receive_stdin(self, read: Callable[[int], Awaitable[bytes]]) -> None:
        """Flat method: the stream is the channel's stdin."""
        while self.received < self.total:
            data = await read(min(READ_SIZE, self.total - self.received))
            if not data:
                break
            self._commit(data)

    # -- forwarding --------------------------------------------------------------------
    async def _forward(self, index: int, targets: list[list[Any]], repair: bool) -> None:
        name = f"child-{index}"
        retain = self.capacity // 2 if repair else 0
        queue = list(targets)
        self.readers[name] = (0, retain)
        try:
            while queue:
                host, address, port = queue[0]
                if host in self.dead:
                    queue.pop(0)
                    continue
                writer: Any = None
                try:
                    local = _LISTENING.get((address, int(port)))
                    if local is not None:
                        (reader, writer), accepted = link_pair()
                        local.accept_link(*accepted)
                        LINK_COUNTS["memlink"] += 1
                    else:
                        reader, writer = await asyncio.wait_for(asyncio.open_connection(address, int(port)),
                                                                self.connect_timeout)
                        LINK_COUNTS["tcp"] += 1
                    self._current[index] = (host, writer)
                    offset = OFFSET.unpack(await asyncio.wait_for(reader.readexactly(OFFSET.size), self.stall))[0]
                    if offset > self.total:
                        raise ResumeError(f"node reported offset {offset} beyond the stream")
                    if offset < self.total:
                        self.readers[name] = (offset, retain)
                        while offset < self.total:
                            event = self._data
                            view = self._view(offset)
                            if view is None:
                                await event.wait()
                                continue
                            writer.write(view)
                            offset += len(view)
                            try:
                                await asyncio.wait_for(writer.drain(), self.stall)
                            except TimeoutError:
                                raise TimeoutError(f"stalled: no data accepted for {self.stall:g}s") from None
                            self.readers[name] = (offset, retain)
                            self._trim()
                        await self._wait_ack(reader, host)
                    return
                except (TimeoutError, OSError, ResumeError, asyncio.IncompleteReadError) as exc:
                    known = host in self.dead
                    self.dead.add(host)
                    if not known:
                        self.emit("bypass", host=host, reason=describe(exc), repair=repair)
                    queue.pop(0)
                    if not repair:
                        return
                finally:
                    self._current.pop(index, None)
                    if writer is not None:
                        writer.close()
        finally:
            self.readers.pop(name, None)
            self._trim()

    async def _wait_ack(self, reader: Any, host: str) -> None:
        while True:
            if host in self.dead:
                raise ConnectionAbortedError("declared dead by the server")
            try:
                await asyncio.wait_for(reader.readexactly(OFFSET.size), 1.0)
                return
            except TimeoutError:
                continue

    def mark_dead(self, host: str) -> None:
        self.dead.add(host)
        for current, writer in list(self._current.values()):
            if current == host:
                writer.transport.abort()

    # -- the whole run -----------------------------------------------------------------
    def _spawn(self, coroutine: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run(self, readline: Callable[[], Awaitable[bytes]],
                  read: Callable[[int], Awaitable[bytes]]) -> int:
        if self.mode == "stdin":
            if self.total == 0:
                self._commit(b"")
            await self.receive_stdin(read)
            return 0
        server = await asyncio.start_server(self._accept_tcp, self.address, 0, backlog=16)
        port = server.sockets[0].getsockname()[1]
        _LISTENING[(self.address, port)] = self
        try:
            self.emit("ready", port=port, pid=0)
            if self.total == 0:
                self._commit(b"")
            while line := await readline():
                try:
                    command = json.loads(line)
                except ValueError:
                    self.emit("error", message=f"bad command line: {line[:200]!r}")
                    continue
                if command.get("op") == "start":
                    repair = bool(command.get("repair"))
                    for index, targets in enumerate(command.get("children", [])):
                        self._spawn(self._forward(index, targets, repair))
                elif command.get("op") == "dead":
                    self.mark_dead(str(command.get("host")))
            return 0
        finally:
            _LISTENING.pop((self.address, port), None)
            server.close()
            tasks = [*self._tasks, *([self._upstream] if self._upstream else [])]
            # shielded: a second cancellation of this run must not leave forwarding tasks behind
            with contextlib.suppress(Exception):
                await asyncio.shield(cancel_and_wait(tasks, "relay task"))

    async def _accept_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The TCP listener's callback (the server, or a relay of another worker process).

        Cancellation is how a replaced upstream ends, not an error: Python 3.11's
        start_server would log the cancelled handler with a traceback.
        """
        with contextlib.suppress(asyncio.CancelledError):
            await self._upstream_connection(reader, writer)
