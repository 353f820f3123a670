"""One command running on one node, in its own process group, killable.

`RemoteProcess` is what the executor builds every call on, and what the
broadcast uses directly for its long-lived relays (stdin/stdout as a control
channel). The wrapper of `shell.wrap_command` prints the process group id as the
first stderr line; `kill()` uses it to kill everything the command started.

`NodeProcess` is the surface the broadcast needs of a long-lived command: a
`RemoteProcess` (flat: its own SSH channel) and a `tree.TreeStream` (tree: the
node's command started by the node's agent, its streams carried by the tree's
messages) both provide it.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

import asyncssh

from kadeploy.remote.shell import kill_command, parse_pgid


class ByteWriter(Protocol):
    """A long-lived command's stdin."""

    def write(self, data: bytes) -> None: ...
    def write_eof(self) -> None: ...


class ByteReader(Protocol):
    """A long-lived command's stdout or stderr."""

    async def readline(self) -> bytes: ...
    async def read(self, n: int = -1) -> bytes: ...


class NodeProcess(Protocol):
    """A long-lived command on one node, as its driver (the broadcast) sees it."""

    hostname: str
    first_stderr: bytes

    @property
    def stdin(self) -> ByteWriter: ...
    @property
    def stdout(self) -> ByteReader: ...
    @property
    def stderr(self) -> ByteReader: ...
    @property
    def exit_status(self) -> int | None: ...

    async def kill(self, timeout: float = 5.0) -> None: ...
    async def wait_closed(self) -> None: ...
    def watch_liveness(self, interval: float, count_max: int) -> None: ...


class RemoteProcess:
    """A started remote command: its streams, its process group and how to kill it."""

    def __init__(self, hostname: str, connection: asyncssh.SSHClientConnection,
                 process: asyncssh.SSHClientProcess, pgid: int | None, first_stderr: bytes) -> None:
        self.hostname = hostname
        self.connection = connection
        self.process = process
        self.pgid = pgid
        # When the wrapper did not print the marker (no setsid on the node), the
        # line is ordinary stderr and is given back to the reader.
        self.first_stderr = first_stderr
        self.killed = False

    @classmethod
    async def start(cls, hostname: str, connection: asyncssh.SSHClientConnection, command_line: str,
                    *, marker_timeout: float = 10.0) -> RemoteProcess:
        """Open a channel running `command_line` (already wrapped) and read the pgid marker."""
        process = await connection.create_process(command_line, encoding=None)
        try:
            async with asyncio.timeout(marker_timeout):
                line = await process.stderr.readline()
        except TimeoutError:
            line = b""
        except BaseException:
            # Cancelled while waiting for the marker: the command may already run in its own
            # process group, which closing the channel does not end. Kill it before giving up.
            await asyncio.shield(cls._abandon(connection, process))
            raise
        pgid = parse_pgid(line)
        return cls(hostname, connection, process, pgid, b"" if pgid is not None else line)

    @staticmethod
    async def _abandon(connection: asyncssh.SSHClientConnection, process: asyncssh.SSHClientProcess,
                       timeout: float = 5.0) -> None:
        """Kill a command whose start was interrupted; never raises."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(timeout):
                pgid = parse_pgid(await process.stderr.readline())
                if pgid is not None:
                    await connection.run(kill_command(pgid), check=False)
        process.close()

    def watch_liveness(self, interval: float, count_max: int) -> None:
        """Close this process's connection when the node stops answering for about
        `interval * (count_max + 1)` seconds.

        A node that loses power sends neither FIN nor RST: without this, a channel
        that waits for the node's next line waits forever. SSH keepalives are
        per connection, so this also applies to the other channels on it.
        """
        with contextlib.suppress(Exception):
            self.connection.set_keepalive(interval, count_max)

    @property
    def stdin(self) -> asyncssh.SSHWriter[bytes]:
        return self.process.stdin

    @property
    def stdout(self) -> asyncssh.SSHReader[bytes]:
        return self.process.stdout

    @property
    def stderr(self) -> asyncssh.SSHReader[bytes]:
        return self.process.stderr

    async def kill(self, timeout: float = 5.0) -> None:
        """Kill the remote process group over the same connection, then close the channel.

        Never raises: the node may already be gone, which is what a kill wants anyway.
        """
        self.killed = True
        if self.pgid is not None and not self.connection.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.connection.run(kill_command(self.pgid), check=False), timeout=timeout)
        self.process.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.process.wait_closed(), timeout=timeout)

    async def wait_closed(self) -> None:
        """Until the channel is closed (the command ended, or the connection was lost)."""
        await self.process.wait_closed()

    @property
    def exit_status(self) -> int | None:
        return self.process.exit_status

    @property
    def exit_signal(self) -> str | None:
        signal = self.process.exit_signal
        return signal[0] if signal else None
