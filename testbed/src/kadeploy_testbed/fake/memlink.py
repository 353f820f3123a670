"""testbed.fake room: an in-process byte stream between two fake relays of the same daemon.

Why: relay-to-relay links were loopback TCP connections, two file descriptors
each. At 4,000 nodes the daemon held 4,000 sshd listeners, 4,000 marker-port
listeners, 4,000 relay listeners, 4,000 server connections and 8,000 link
ends: more than this sandbox's 20,000 descriptors per process, and 1,372
relays failed their first start. Links between relays of one daemon now go
through this pair of objects; each relay keeps its real TCP listener, which
the server's `SourceSender` connects to. Only what `FakeRelay` uses of
`asyncio.StreamReader`/`StreamWriter` is provided, with the same failure
signals: end of stream on a closed peer, `ConnectionResetError` on an aborted
one, and a bounded buffer so that `drain()` blocks on a stalled reader (the
stall detection depends on it).
"""

from __future__ import annotations

import asyncio
from collections import deque

#: bytes a writer may have in flight before drain() waits: about a loopback socket pair's buffers
LINK_BUFFER = 1024 * 1024


class _Pipe:
    """One direction: bytes written by one end, read by the other."""

    def __init__(self) -> None:
        self.chunks: deque[bytes] = deque()
        self.size = 0
        self.closed = False      # the writer closed: end of stream after the buffered bytes
        self.aborted = False     # either end aborted: reads and writes fail at once
        self.changed = asyncio.Event()

    def _notify(self) -> None:
        event, self.changed = self.changed, asyncio.Event()
        event.set()

    def put(self, data: bytes) -> None:
        if self.aborted or self.closed:
            raise ConnectionResetError("link closed by the peer")
        if data:
            self.chunks.append(data)
            self.size += len(data)
            self._notify()

    async def take(self, limit: int) -> bytes:
        while not self.chunks:
            if self.aborted:
                raise ConnectionResetError("link reset by the peer")
            if self.closed:
                return b""
            await self.changed.wait()
        if self.aborted:
            raise ConnectionResetError("link reset by the peer")
        first = self.chunks[0]
        if len(first) <= limit:
            self.chunks.popleft()
        else:
            self.chunks[0] = first[limit:]
            first = first[:limit]
        self.size -= len(first)
        self._notify()
        return first

    async def wait_room(self) -> None:
        while self.size >= LINK_BUFFER and not self.aborted:
            await self.changed.wait()
        if self.aborted:
            raise ConnectionResetError("link reset by the peer")

    def close(self) -> None:
        self.closed = True
        self._notify()

    def abort(self) -> None:
        self.aborted = True
        self._notify()


class LinkReader:
    """The reading end (`read`, `readexactly` as asyncio.StreamReader)."""

    def __init__(self, pipe: _Pipe) -> None:
        self._pipe = pipe

    async def read(self, limit: int) -> bytes:
        return await self._pipe.take(limit)

    async def readexactly(self, count: int) -> bytes:
        parts: list[bytes] = []
        missing = count
        while missing:
            data = await self._pipe.take(missing)
            if not data:
                raise asyncio.IncompleteReadError(b"".join(parts), count)
            parts.append(data)
            missing -= len(data)
        return b"".join(parts)


class _Transport:
    def __init__(self, writer: LinkWriter) -> None:
        self._writer = writer

    def abort(self) -> None:
        self._writer.abort()


class LinkWriter:
    """The writing end (`write`, `drain`, `close`, `transport.abort()` as asyncio.StreamWriter)."""

    def __init__(self, outgoing: _Pipe, incoming: _Pipe) -> None:
        self._outgoing = outgoing
        self._incoming = incoming
        self.transport = _Transport(self)

    def write(self, data: bytes | memoryview) -> None:
        self._outgoing.put(bytes(data))

    async def drain(self) -> None:
        await self._outgoing.wait_room()

    def close(self) -> None:
        """Our direction ends; the peer's writes now fail, as on a closed socket."""
        self._outgoing.close()
        self._incoming.close()

    def abort(self) -> None:
        self._outgoing.abort()
        self._incoming.abort()


def link_pair() -> tuple[tuple[LinkReader, LinkWriter], tuple[LinkReader, LinkWriter]]:
    """Two connected ends: ((reader, writer) of the connecting side, (reader, writer) of the accepting side)."""
    forward, backward = _Pipe(), _Pipe()
    return (LinkReader(backward), LinkWriter(forward, backward)), (LinkReader(forward), LinkWriter(backward, forward))


__all__ = ["LINK_BUFFER", "LinkReader", "LinkWriter", "link_pair"]
