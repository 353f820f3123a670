"""The server end of the stream: the cached image sent to the first node(s).

asyncio, zero-copy (`loop.sock_sendfile`, i.e. sendfile(2)) in chunks, so that a
child that stops taking data is detected within `stall` seconds. Speaks the
relay's resumption protocol: the receiver says which offset it has reached, the
sender starts there (the server always has the whole image, so any offset can
be resumed). The digest of the image is computed in one pass beside it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from kadeploy.broadcast.relay import OFFSET, new_digest

log = logging.getLogger("kadeploy.broadcast")

SEND_CHUNK = 8 * 1024 * 1024
# sendfile(2) from the page cache; False = read + send (kept to measure what zero-copy buys).
USE_SENDFILE = True
HASH_CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True)
class Target:
    """A relay listening for the stream."""

    hostname: str
    address: str
    port: int


async def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Digest of a file, computed off the event loop (hashlib releases the GIL)."""

    def compute() -> str:
        digest = new_digest(algorithm)
        with open(path, "rb") as source:
            while chunk := source.read(HASH_CHUNK):
                digest.update(chunk)
        return digest.hexdigest()

    return await asyncio.to_thread(compute)


class SourceSender:
    """Send the image to one child, moving on to fallbacks when it fails (if `repair`)."""

    def __init__(self, image: Path, total: int, targets: Sequence[Target], *, repair: bool,
                 stall: float, connect_timeout: float, dead: set[str],
                 on_failure: Callable[[str, str], None],
                 on_orphans: Callable[[str], None] | None = None) -> None:
        self._image = image
        self._total = total
        self._queue = list(targets)
        self._repair = repair
        self._stall = stall
        self._connect_timeout = connect_timeout
        self._dead = dead
        self._on_failure = on_failure
        # tree repair: called with a dead child's name, so that its children get fed instead
        self._on_orphans = on_orphans
        self._attempt: asyncio.Task[None] | None = None
        self._current: str | None = None

    def abort(self, hostname: str) -> None:
        """The coordinator learnt that `hostname` is dead: stop sending to it now."""
        if self._current == hostname and self._attempt is not None:
            self._attempt.cancel()

    async def run(self) -> None:
        while self._queue:
            target = self._queue.pop(0)
            if target.hostname in self._dead:
                self._orphaned(target.hostname)
                continue
            self._current = target.hostname
            log.info("broadcast: the server feeds %s", target.hostname)
            self._attempt = asyncio.ensure_future(self._send_to(target))
            try:
                await self._attempt
                if not self._repair:
                    return
                # The child has the whole image but may die before forwarding it all: stay its
                # predecessor until the broadcast ends (this task is then cancelled) and feed
                # its next live node if it dies.
                while target.hostname not in self._dead:
                    await asyncio.sleep(0.2)
                self._orphaned(target.hostname)
                continue
            except asyncio.CancelledError:
                if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                    raise  # we were cancelled ourselves, not the attempt
                reason = None  # aborted: the coordinator already knows why
            except (OSError, asyncio.TimeoutError, ConnectionError, asyncio.IncompleteReadError) as exc:
                reason = _describe(exc)
            finally:
                self._current = None
            if reason is not None and target.hostname not in self._dead:
                # the coordinator adds it to the shared `dead` set, and tells the relays
                self._on_failure(target.hostname, reason)
                self._dead.add(target.hostname)
            if not self._repair:
                return
            self._orphaned(target.hostname)

    def _orphaned(self, hostname: str) -> None:
        if self._repair and self._on_orphans is not None:
            self._on_orphans(hostname)

    async def _send_to(self, target: Target) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (target.address, target.port)), self._connect_timeout)
            offset = OFFSET.unpack(await asyncio.wait_for(_recv_exact(loop, sock, OFFSET.size), self._stall))[0]
            if offset:
                log.info("broadcast: %s resumes at offset %d", target.hostname, offset)
            if offset >= self._total:
                return
            with open(self._image, "rb") as source:
                while offset < self._total:
                    count = min(SEND_CHUNK, self._total - offset)
                    try:
                        sent = await asyncio.wait_for(_send_chunk(loop, sock, source, offset, count), self._stall)
                    except asyncio.TimeoutError:
                        raise TimeoutError(f"stalled: no data accepted for {self._stall:g}s") from None
                    if sent == 0:
                        raise ConnectionResetError("connection closed by the node")
                    offset += sent
            await _wait_ack(loop, sock, target.hostname, self._dead)
        finally:
            sock.close()


async def _send_chunk(loop: asyncio.AbstractEventLoop, sock: socket.socket, source: BinaryIO,
                      offset: int, count: int) -> int:
    if USE_SENDFILE:
        return await loop.sock_sendfile(sock, source, offset, count, fallback=True)
    source.seek(offset)
    data = source.read(count)
    await loop.sock_sendall(sock, data)
    return len(data)


async def _wait_ack(loop: asyncio.AbstractEventLoop, sock: socket.socket, hostname: str, dead: set[str]) -> None:
    """End-of-stream acknowledgement; a slow child is waited for, a dead one is not."""
    while hostname not in dead:
        try:
            await asyncio.wait_for(_recv_exact(loop, sock, OFFSET.size), 1.0)
            return
        except asyncio.TimeoutError:
            continue


async def _recv_exact(loop: asyncio.AbstractEventLoop, sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await loop.sock_recv(sock, size - len(data))
        if not chunk:
            raise ConnectionResetError("connection closed by the node")
        data += chunk
    return data


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return str(exc) or "connection timeout"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
