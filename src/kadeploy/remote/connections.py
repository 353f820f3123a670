"""The per-host cache of SSH connections, with bounded concurrent handshakes.

Connections are opened lazily, kept across calls (a deployment runs dozens of
micro-steps on the same nodes) and dropped with `forget` after a reboot. Host
keys are not checked: nodes are reinstalled constantly, so their keys change.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from pathlib import Path

import asyncssh

from kadeploy.errors import ErrorCode, KadeployError
from kadeploy.remote.tuning import encryption_algs, kex_algs, quiet_asyncssh_logging


class ConnectError(Exception):
    """A node could not be reached; `reason` is the per-node error text."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def describe_connect_error(exc: BaseException) -> str:
    """Short, Kadeploy-like text for a failed connection (what `ssh` would print)."""
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError, socket.timeout)):
        return "Connection timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "Connection refused"
    if isinstance(exc, asyncssh.PermissionDenied):
        return "Authentication failed (permission denied)"
    if isinstance(exc, asyncssh.DisconnectError):
        return f"Connection closed by the node: {exc.reason}"
    if isinstance(exc, socket.gaierror):
        return f"Unknown host: {exc.strerror}"
    if isinstance(exc, OSError):
        if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return "No route to host"
        return exc.strerror or str(exc)
    return str(exc) or type(exc).__name__


class ConnectionPool:
    """Open, cache and drop SSH connections keyed by hostname."""

    def __init__(self, private_key: Path | None, *, user: str = "root", port: int = 22,
                 connect_timeout: float = 10.0, handshakes: int = 32,
                 keepalive_interval: float = 15.0, agent_path: str | None = None) -> None:
        """`agent_path`: an ssh-agent socket forwarded to the nodes (the tree mode's relays), None: none."""
        self._keys: list[asyncssh.SSHKey] = []
        if private_key is not None:
            try:
                self._keys = [asyncssh.read_private_key(str(private_key))]
            except (OSError, asyncssh.KeyImportError) as exc:
                raise KadeployError(ErrorCode.BAD_CONFIGURATION,
                                    f"Cannot read the SSH private key {private_key}: {exc}") from None
        self._port = port
        self._connect_timeout = connect_timeout
        # Handshakes cost CPU on both sides; bounding them separately from the
        # channel window keeps a 500-node first call from stalling the loop.
        self._handshakes = asyncio.Semaphore(handshakes)
        # Built once: asyncssh otherwise re-validates every option per connection.
        self._options = asyncssh.SSHClientConnectionOptions(
            username=user, client_keys=self._keys, known_hosts=None, agent_path=agent_path,
            agent_forwarding=agent_path is not None, config=None,
            password=None, kbdint_auth=False, gss_auth=False, host_based_auth=False,
            encryption_algs=encryption_algs(), kex_algs=kex_algs(),
            keepalive_interval=keepalive_interval, keepalive_count_max=3)
        quiet_asyncssh_logging()
        self._connections: dict[str, asyncssh.SSHClientConnection] = {}
        self._pending: dict[str, asyncio.Task[asyncssh.SSHClientConnection]] = {}

    async def get(self, hostname: str, address: str) -> asyncssh.SSHClientConnection:
        """The cached connection to `hostname`, opened now if needed; raises ConnectError."""
        connection = self._connections.get(hostname)
        if connection is not None and not _is_closed(connection):
            return connection
        self._connections.pop(hostname, None)
        task = self._pending.get(hostname)
        if task is None:
            task = asyncio.ensure_future(self._open(address))
            self._pending[hostname] = task
            task.add_done_callback(lambda done, name=hostname: self._opened(name, done))
        # shield: one caller being cancelled must not abort the handshake others wait for
        return await asyncio.shield(task)

    def _opened(self, hostname: str, task: asyncio.Task[asyncssh.SSHClientConnection]) -> None:
        if self._pending.get(hostname) is task:
            del self._pending[hostname]
        if not task.cancelled() and task.exception() is None:
            self._connections[hostname] = task.result()

    async def _open(self, address: str) -> asyncssh.SSHClientConnection:
        async with self._handshakes:
            try:
                return await asyncio.wait_for(
                    asyncssh.connect(address, port=self._port, options=self._options),
                    timeout=self._connect_timeout,
                )
            except (OSError, asyncssh.Error, asyncio.TimeoutError) as exc:
                raise ConnectError(describe_connect_error(exc)) from None

    def drop(self, hostname: str) -> None:
        """Close and forget the connection to one host (it died or the node rebooted)."""
        connection = self._connections.pop(hostname, None)
        if connection is not None:
            connection.close()

    async def close(self) -> None:
        """Close every connection and wait for them to finish closing."""
        for task in list(self._pending.values()):
            task.cancel()
        connections = list(self._connections.values())
        self._connections.clear()
        for connection in connections:
            connection.close()
        for connection in connections:
            try:
                await asyncio.wait_for(connection.wait_closed(), timeout=5)
            except (asyncio.TimeoutError, OSError, asyncssh.Error):
                pass


def _is_closed(connection: asyncssh.SSHClientConnection) -> bool:
    return connection.is_closed()
