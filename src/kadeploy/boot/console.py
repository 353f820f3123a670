"""The console bridge of kaconsole3 (reference 6.4): a TCP port bridged to a PTY.

The server opens a TCP port for one console workflow; the client connects and
its bytes go to the configured console command (`conman ...`, `ipmitool ...
sol activate`) running in a PTY, and back. One client at a time: another one
gets `[Kaconsole] console already attached`. Four ESC bytes in a row from the
client end the session, as in Kadeploy3.

Unlike Kadeploy3, where anyone who finds the port gets the console, the client
must first send the workflow's one-time token on a line of its own (`<token>\\n`);
nothing flows before that, and a wrong token closes the connection. The
session ends with its client: the token cannot be replayed.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import secrets
from contextlib import suppress

from kadeploy.boot.process import kill_group

ALREADY_ATTACHED = b"[Kaconsole] console already attached\r\n"
INVALID_TOKEN = b"[Kaconsole] invalid token\r\n"
ESCAPE = b"\x1b" * 4
_READ_SIZE = 4096

__all__ = ["ALREADY_ATTACHED", "ConsoleSession", "ESCAPE", "new_token"]


def new_token() -> str:
    """A token for one console workflow, returned to its owner only."""
    return secrets.token_urlsafe(32)


class ConsoleSession:
    """One console workflow: a listening port, at most one client, one PTY command."""

    def __init__(
        self,
        command: str,
        token: str,
        *,
        bind: str = "0.0.0.0",
        port: int = 0,
        token_timeout: float = 10.0,
    ) -> None:
        if not token:
            raise ValueError("a console session needs a token")
        self.command = command
        self.token = token.encode()
        self.bind = bind
        self.requested_port = port
        self.token_timeout = token_timeout
        self.port: int | None = None
        self.attached = False
        self.error: str | None = None
        self._server: asyncio.AbstractServer | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._master: int | None = None
        self._closed = asyncio.Event()
        self._used = False

    async def start(self) -> int:
        """Start listening; returns the port to publish as `tcp://<server>:<port>`."""
        self._server = await asyncio.start_server(self._handle, self.bind, self.requested_port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def wait_closed(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._closed.wait(), timeout)

    async def close(self) -> None:
        """Stop listening and kill the console command's process group (DELETE /console/:id)."""
        if self._server is not None:
            self._server.close()
        self._kill()
        if self._process is not None:
            with suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._process.wait(), 5.0)
        self._close_master()
        self._closed.set()

    # -- one client --------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.attached or self._used or self.closed:
                writer.write(ALREADY_ATTACHED)
                await _drain(writer)
                return
            try:
                line = await asyncio.wait_for(reader.readline(), self.token_timeout)
            except (asyncio.TimeoutError, ConnectionError):
                return
            if self.attached or self._used or not hmac.compare_digest(line.rstrip(b"\r\n"), self.token):
                writer.write(ALREADY_ATTACHED if (self.attached or self._used) else INVALID_TOKEN)
                await _drain(writer)
                return
            self._used = True
            self.attached = True
            try:
                await self._bridge(reader, writer)
            finally:
                self.attached = False
                await self.close()
        finally:
            writer.close()
            with suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2.0)

    async def _bridge(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        master, slave = os.openpty()
        self._master = master
        try:
            self._process = await asyncio.create_subprocess_exec(
                "/bin/sh", "-c", self.command,
                stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
            )
        except OSError as exc:
            self.error = f"Cannot start the console command: {exc}"
            writer.write(f"[Kaconsole] {self.error}\r\n".encode())
            return
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        loop = asyncio.get_running_loop()
        output_done = loop.create_future()

        def on_output() -> None:
            try:
                data = os.read(master, _READ_SIZE)
            except BlockingIOError:
                return
            except OSError:  # EIO: the command exited and the PTY is gone
                data = b""
            if not data:
                loop.remove_reader(master)
                if not output_done.done():
                    output_done.set_result(None)
                return
            writer.write(data)

        loop.add_reader(master, on_output)
        client_task = asyncio.ensure_future(self._client_to_pty(reader, master))
        try:
            await asyncio.wait({client_task, output_done}, return_when=asyncio.FIRST_COMPLETED)
            with suppress(ConnectionError):
                await _drain(writer)
        finally:
            with suppress(ValueError, OSError):
                loop.remove_reader(master)
            client_task.cancel()
            with suppress(asyncio.CancelledError, ConnectionError):
                await client_task

    async def _client_to_pty(self, reader: asyncio.StreamReader, master: int) -> None:
        trailing_escapes = 0
        while True:
            data = await reader.read(_READ_SIZE)
            if not data:
                return
            escape_at = _find_escape(data, trailing_escapes)
            if escape_at is not None:
                await _write_all(master, data[:escape_at])
                return
            stripped = data.rstrip(b"\x1b")
            trailing_escapes = len(data) - len(stripped) + (trailing_escapes if not stripped else 0)
            await _write_all(master, data)

    # -- teardown ------------------------------------------------------------------------

    def _kill(self) -> None:
        if self._process is not None:
            kill_group(self._process)

    def _close_master(self) -> None:
        if self._master is not None:
            with suppress(OSError):
                os.close(self._master)
            self._master = None


def _find_escape(data: bytes, carried: int) -> int | None:
    """Index in `data` where the 4-ESC escape starts (counting ESCs carried from before), or None."""
    run = carried
    for index, byte in enumerate(data):
        run = run + 1 if byte == 0x1B else 0
        if run >= len(ESCAPE):
            return max(0, index + 1 - len(ESCAPE))
    return None


async def _write_all(fd: int, data: bytes) -> None:
    """Write to the non-blocking PTY master, waiting (bounded) while its buffer is full."""
    view = memoryview(data)
    waited = 0.0
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            if waited > 10.0:
                raise ConnectionError("console command does not read its input") from None
            await asyncio.sleep(0.01)
            waited += 0.01
            continue
        view = view[written:]


async def _drain(writer: asyncio.StreamWriter) -> None:
    with suppress(ConnectionError):
        await asyncio.wait_for(writer.drain(), 5.0)
