"""testbed.fake room: the JSON-lines control protocol of a fake testbed, on its two carriers.

`serve_control` is the control socket `<dir>/run/control.sock` that
`kadeploy-testbed status|power|fault|down`, `etc/scripts/fake-bmc` and the
benchmark speak: one request line, one answer line, then the connection
closes (what `socat` and `testbed.cli.control` expect). `serve_channel` and
`WorkerChannel` carry the same requests between the daemon and its worker
processes over one socketpair each, with an `id` per request so that many
can be in flight (hundreds of power commands arrive at once during a
reboot window). Both map errors the same way, so an answer does not depend
on which process produced it. Imports `kadeploy.errors` only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from kadeploy.errors import KadeployError

log = logging.getLogger("kadeploy_testbed.fake")

Dispatch = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]

CONTROL_READ_TIMEOUT = 30.0
#: a `status` answer holds every node of a worker: about 250 bytes each
LINE_LIMIT = 1 << 26


async def answer(dispatch: Dispatch, request: Any) -> dict[str, Any]:
    """`dispatch(request)`, with our errors and malformed requests turned into `{"ok": false}` answers."""
    try:
        if not isinstance(request, dict):
            raise TypeError("a request is a JSON object")
        return await dispatch(request)
    except KadeployError as exc:
        return {"ok": False, "error": exc.message}
    except (ValueError, KeyError, TypeError) as exc:
        return {"ok": False, "error": f"bad request: {exc}"}


async def serve_control(path: Path, dispatch: Dispatch) -> asyncio.AbstractServer:
    """Listen on the unix socket `path`: one request line, one answer line per connection."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), CONTROL_READ_TIMEOUT)
            try:
                request = json.loads(line)
            except ValueError as exc:
                reply: dict[str, Any] = {"ok": False, "error": f"bad request: {exc}"}
            else:
                reply = await answer(dispatch, request)
            writer.write(json.dumps(reply).encode() + b"\n")
            await asyncio.wait_for(writer.drain(), CONTROL_READ_TIMEOUT)
        except (TimeoutError, OSError):
            pass
        finally:
            writer.close()

    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    return await asyncio.start_unix_server(handle, path=str(path), limit=1 << 20)


async def serve_channel(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, dispatch: Dispatch) -> None:
    """A worker's side of its channel: answer every `{"id": N, ...}` request until the daemon hangs up.

    Requests run concurrently (a power action waits for the node's boot task
    to be cancelled; a status must not wait behind it). Returns at end of
    stream: the daemon is gone, and the worker stops.
    """
    tasks: set[asyncio.Task[None]] = set()

    async def one(request: dict[str, Any]) -> None:
        ident = request.pop("id", None)
        reply = await answer(dispatch, request)
        reply["id"] = ident
        with contextlib.suppress(ConnectionError, RuntimeError):
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()

    try:
        while line := await reader.readline():
            try:
                request = json.loads(line)
            except ValueError:
                log.error("worker channel: garbled request %r", line[:200])
                continue
            task = asyncio.ensure_future(one(request))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    except (ConnectionError, asyncio.LimitOverrunError, ValueError) as exc:
        log.error("worker channel: %s", exc)
    finally:
        for task in list(tasks):
            task.cancel()


class WorkerGone(KadeployError):
    """The worker at the other end of a channel exited or closed it."""

    def __init__(self, message: str) -> None:
        super().__init__(0, message)


class WorkerChannel:
    """The daemon's side of one worker's channel: `await request({...}, timeout)` gives the worker's answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: str) -> None:
        self.reader = reader
        self.writer = writer
        self.name = name
        self.closed = asyncio.Event()
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next = 0

    async def read_answers(self) -> None:
        """Route answers to their requests until end of stream; then every pending request fails."""
        try:
            while line := await self.reader.readline():
                try:
                    reply = json.loads(line)
                except ValueError:
                    log.error("%s: garbled answer %r", self.name, line[:200])
                    continue
                future = self._pending.pop(reply.pop("id", -1), None)
                if future is not None and not future.done():
                    future.set_result(reply)
        except (ConnectionError, asyncio.LimitOverrunError, ValueError) as exc:
            log.error("%s: channel broken: %s", self.name, exc)
        finally:
            self.closed.set()
            pending, self._pending = self._pending, {}
            for future in pending.values():
                if not future.done():
                    future.set_exception(WorkerGone(f"{self.name} closed its channel"))

    async def request(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        if self.closed.is_set():
            raise WorkerGone(f"{self.name} closed its channel")
        self._next += 1
        ident = self._next
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        try:
            self.writer.write(json.dumps({**request, "id": ident}).encode() + b"\n")
            await asyncio.wait_for(self.writer.drain(), timeout)
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise KadeployError(0, f"{self.name} did not answer {request.get('op')!r} within {timeout:g}s") from None
        except (ConnectionError, RuntimeError) as exc:
            raise WorkerGone(f"{self.name}: channel broken ({exc})") from None
        finally:
            self._pending.pop(ident, None)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()
