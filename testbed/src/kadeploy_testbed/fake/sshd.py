"""testbed.fake room: the asyncssh side of a fake node (its sshd).

One asyncssh listener per node on `<node ip>:<ssh port>`, public-key login as
root with the deploy key only, one shared host key (the server does not check
host keys; nodes are reinstalled all the time). Each session's command line
is unwrapped (`remote.shell.wrap_command`), answers the wrapper's process-group
marker, and is handed to `FakeNode.execute`; a `kill -- -PGID` from the
executor cancels that session, which then ends with signal KILL as a killed
process group would.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import asyncssh

from kadeploy.remote.shell import PGID_MARKER
from kadeploy_testbed.fake.shell import classify, unwrap

if TYPE_CHECKING:
    from kadeploy_testbed.fake.daemon import FakeContext
    from kadeploy_testbed.fake.node import FakeNode

LOGIN_TIMEOUT = 30.0


class _NodeServer(asyncssh.SSHServer):
    """Tracks the node's connections, so that a reboot drops them as a real one does."""

    def __init__(self, node: FakeNode) -> None:
        self.node = node
        self.connection: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.connection = conn
        self.node.connections.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.connection is not None:
            self.node.connections.discard(self.connection)


class _Channel:
    """The `Channel` a command sees: stdin reads that end at EOF or at a lost channel."""

    def __init__(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        self.process = process

    async def read(self, size: int) -> bytes:
        try:
            return await self.process.stdin.read(size)
        except (asyncssh.Error, OSError, asyncssh.BreakReceived, asyncssh.SignalReceived,
                asyncssh.TerminalSizeChanged):
            return b""

    async def readline(self) -> bytes:
        try:
            return await self.process.stdin.readline()
        except (asyncssh.Error, OSError, asyncssh.BreakReceived, asyncssh.SignalReceived,
                asyncssh.TerminalSizeChanged):
            return b""

    def write(self, data: str) -> None:
        with contextlib.suppress(Exception):
            self.process.stdout.write(data.encode())

    def write_err(self, data: str) -> None:
        with contextlib.suppress(Exception):
            self.process.stderr.write(data.encode())


async def _session(node: FakeNode, context: FakeContext, process: asyncssh.SSHServerProcess[bytes]) -> None:
    unwrapped = unwrap(process.command or "")
    pgid = context.pgid()
    channel = _Channel(process)
    task = asyncio.current_task()
    assert task is not None
    node.sessions[pgid] = task
    try:
        if unwrapped.pgid_marker:
            channel.write_err(f"{PGID_MARKER} {pgid}\n")
        outcome = await node.execute(classify(unwrapped.command), unwrapped.command, channel)
        if outcome.stdout:
            channel.write(outcome.stdout)
        if outcome.stderr:
            channel.write_err(outcome.stderr.rstrip("\n") + "\n")
        with contextlib.suppress(Exception):
            process.exit(outcome.status)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            process.exit_with_signal("KILL")
    except Exception as exc:  # noqa: BLE001 - a node's bug must not take the daemon down
        channel.write_err(f"fake node {node.hostname}: internal error: {exc!r}\n")
        with contextlib.suppress(Exception):
            process.exit(255)
    finally:
        node.sessions.pop(pgid, None)


async def start_node_sshd(node: FakeNode, context: FakeContext) -> Any:
    """Open the node's sshd port; the returned acceptor's `close()` closes it."""

    async def handle(process: asyncssh.SSHServerProcess[bytes]) -> None:
        await _session(node, context, process)

    return await asyncssh.create_server(
        lambda: _NodeServer(node), node.spec.ip, context.settings.ssh_port,
        server_host_keys=[context.host_key], authorized_client_keys=context.authorized_keys,
        process_factory=handle, encoding=None, login_timeout=LOGIN_TIMEOUT,
        allow_scp=False, agent_forwarding=False, x11_forwarding=False, line_editor=False,
        keepalive_interval=0, reuse_address=True,
    )
