"""The parallel SSH executor: one command on N nodes, windowed, with per-node results.

It replaces TakTuk in Kadeploy3 (reference section 7): same stdin to every
node, per-node stdout/stderr/exit status, connection failures reported per node,
never an exception for a node failure. Two modes, declared once in the
vocabulary (Kind.EXEC_MODE): `flat` (here: the server holds one connection per
node; asyncio only, a window of channels and a smaller window of handshakes)
and `tree` (`remote/tree.py`: relays on the nodes, TakTuk's design), used from
`tree_from` nodes on when the executor has tree options.
A timeout or a cancellation of the caller kills the remote process groups.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
from collections.abc import Iterable, Mapping
from pathlib import Path

import asyncssh

from kadeploy.errors import ErrorCode, KadeployError
from kadeploy.remote.connections import ConnectError, ConnectionPool
from kadeploy.remote.launch import FlatLaunch, Launch, TreeLaunch
from kadeploy.remote.process import RemoteProcess
from kadeploy.remote.result import CommandResult
from kadeploy.remote.shell import wrap_command
from kadeploy.remote.sshagent import ForwardedAgent
from kadeploy.remote.tree import TREE_CROSSING, TreeOptions, TreeRun, input_fits_tree
from kadeploy.vocabulary import REGISTRIES, Kind

MODES = REGISTRIES[Kind.EXEC_MODE]

# How stdin given as a Path is read and sent: big enough for throughput,
# small enough that N nodes streaming a large file stay within memory.
STDIN_CHUNK = 256 * 1024


class Executor:
    """Run commands on many nodes over SSH (asyncssh), reusing connections."""

    def __init__(self, private_key: Path | None, *, user: str = "root", port: int = 22,
                 connect_timeout: float = 10.0, window: int = 100, handshakes: int = 32,
                 output_limit: int = 64 * 1024, tree: TreeOptions | None = None,
                 tree_from: int = TREE_CROSSING) -> None:
        """`output_limit`: bytes of stdout and of stderr kept per node (server.conf `outputs_size`);
        `tree`: the tree mode's options (None: always flat), used for runs on `tree_from` nodes or more."""
        self._pool = ConnectionPool(private_key, user=user, port=port, connect_timeout=connect_timeout,
                                    handshakes=handshakes)
        self._window = asyncio.Semaphore(window)
        self._output_limit = output_limit
        self._private_key = private_key
        self._user = user
        self._port = port
        self._connect_timeout = connect_timeout
        self._tree = tree
        self._tree_from = tree_from
        self._tree_pool: ConnectionPool | None = None
        self._agent: ForwardedAgent | None = None
        #: the last tree run (its ledger and first-level peak), for benchmarks and tests
        self.last_tree: TreeRun | None = None
        self.last_mode: str | None = None

    async def start(self, hostname: str, address: str, command: str, *,
                    env: Mapping[str, str] | None = None) -> RemoteProcess:
        """Start `command` on one node and return it running (raises ConnectError).

        For long-lived commands driven by the caller (the broadcast relays); the
        caller must `kill()` it or let it end. Not counted in the window.
        """
        line = wrap_command(command, env)
        for attempt in (0, 1):
            connection = await self._pool.get(hostname, address)
            try:
                return await RemoteProcess.start(hostname, connection, line)
            except (asyncssh.ChannelOpenError, asyncssh.ConnectionLost, asyncssh.DisconnectError,
                    BrokenPipeError, ConnectionResetError) as exc:
                # A cached connection that died (node rebooted behind our back):
                # open it again once, then give up on this node.
                self._pool.drop(hostname)
                if attempt == 1:
                    raise ConnectError(f"Connection lost: {exc}") from None
        raise AssertionError("unreachable")

    async def start_many(self, hosts: Mapping[str, str], command: str,
                         args: Mapping[str, str | None]) -> Launch:
        """Start long-lived commands on many nodes (`command` then each node's `args[host]`, quoted).

        Through the tree when a run on that many nodes would use it (`mode_for`):
        the server then holds at most `tree_arity` connections; flat otherwise,
        `start()` per node. See `remote/launch.py`.
        """
        mode = self.mode_for(len(hosts))
        self.last_mode = mode
        if mode == "flat":
            return FlatLaunch(self, hosts, command, args)
        assert self._tree is not None
        run = TreeRun(await self._first_level_pool(), hosts, command, input=None, timeout=None, env=None,
                      options=self._tree, outputs_size=self._output_limit, user=self._user, port=self._port,
                      connect_timeout=self._connect_timeout, stream_args=args)
        self.last_tree = run
        return TreeLaunch(run)

    async def run(self, hosts: Mapping[str, str], command: str, *, input: bytes | Path | None = None,
                  timeout: float | None = None, env: Mapping[str, str] | None = None,
                  relay: bool = True) -> dict[str, CommandResult]:
        """Run `command` on every host (`hostname -> address`); one result per hostname.

        `input` is sent to every node's stdin (bytes, or a file streamed in
        chunks); stdin is closed otherwise. `timeout` bounds each node's command
        (connection included) and kills its process group when it expires.
        `relay=False` for a command that takes its node down (kexec, reboot,
        switch_root): a node running it must not be a relay of the tree, whose
        subtree it would cut, so such a run is always flat.
        """
        wrap_command(command, env)  # validates env once, before any node is touched
        mode = self.mode_for(len(hosts), input) if relay else "flat"
        self.last_mode = mode
        return await MODES.get(mode)(self, hosts, command, input=input, timeout=timeout, env=env)

    def mode_for(self, count: int, input: bytes | Path | None = None) -> str:
        """`tree` for `tree_from` nodes or more (when configured and the stdin fits inline), else `flat`."""
        if self._tree is None or count < self._tree_from or not input_fits_tree(input):
            return "flat"
        return "tree"

    async def _run_flat(self, hosts: Mapping[str, str], command: str, *, input: bytes | Path | None = None,
                        timeout: float | None = None,
                        env: Mapping[str, str] | None = None) -> dict[str, CommandResult]:
        tasks = {hostname: asyncio.ensure_future(self._run_one(hostname, address, command, input, timeout, env))
                 for hostname, address in hosts.items()}
        try:
            await asyncio.gather(*tasks.values())
        except BaseException:
            # gather has already cancelled the node tasks; each one is now killing
            # its remote process group: wait for that (cancelling them again would
            # abandon the kills half-way).
            await asyncio.gather(*tasks.values(), return_exceptions=True)
            raise
        return {hostname: task.result() for hostname, task in tasks.items()}

    async def _run_tree(self, hosts: Mapping[str, str], command: str, *, input: bytes | Path | None = None,
                        timeout: float | None = None,
                        env: Mapping[str, str] | None = None) -> dict[str, CommandResult]:
        assert self._tree is not None
        data = input if not isinstance(input, Path) else input.read_bytes()
        run = TreeRun(await self._first_level_pool(), hosts, command, input=data, timeout=timeout, env=env,
                      options=self._tree, outputs_size=self._output_limit, user=self._user, port=self._port,
                      connect_timeout=self._connect_timeout)
        self.last_tree = run
        return await run.run()

    async def _first_level_pool(self) -> ConnectionPool:
        """The connections to first-level relays: they forward our ssh-agent (started on first use)."""
        if self._tree_pool is None:
            if self._private_key is None:
                raise KadeployError(ErrorCode.BAD_CONFIGURATION,
                                    "The tree mode of the executor needs the server's SSH private key")
            agent = ForwardedAgent(self._private_key)
            path = await agent.start()
            self._agent = agent
            self._tree_pool = ConnectionPool(self._private_key, user=self._user, port=self._port,
                                             connect_timeout=self._connect_timeout, agent_path=path)
        return self._tree_pool

    async def put(self, hosts: Mapping[str, str], local_path: Path, remote_path: str, *,
                  timeout: float | None = None, mode: int | None = None) -> dict[str, CommandResult]:
        """Copy one local file to `remote_path` on every host (`cat >` with the file as stdin)."""
        command = f"cat > {shlex.quote(remote_path)}"
        if mode is not None:
            command += f" && chmod {mode:o} {shlex.quote(remote_path)}"
        return await self.run(hosts, command, input=Path(local_path), timeout=timeout)

    def forget(self, hostnames: Iterable[str]) -> None:
        """Drop cached connections (the nodes rebooted: the next call reconnects)."""
        for hostname in hostnames:
            self._pool.drop(hostname)
            if self._tree_pool is not None:
                self._tree_pool.drop(hostname)

    async def close(self) -> None:
        """Close all connections (and stop the tree mode's ssh-agent)."""
        await self._pool.close()
        if self._tree_pool is not None:
            await self._tree_pool.close()
            self._tree_pool = None
        if self._agent is not None:
            await self._agent.close()
            self._agent = None

    async def _run_one(self, hostname: str, address: str, command: str, input: bytes | Path | None,
                       timeout: float | None, env: Mapping[str, str] | None) -> CommandResult:
        async with self._window:
            process: RemoteProcess | None = None

            async def execute() -> CommandResult:
                nonlocal process
                process = await self.start(hostname, address, command, env=env)
                return await self._collect(process, input)

            try:
                # asyncio.timeout rather than wait_for: no extra task per node and command
                async with asyncio.timeout(timeout):
                    return await execute()
            except TimeoutError:
                if process is not None:
                    await process.kill()
                    return CommandResult(hostname, None, error=f"Command timeout after {timeout:g}s")
                return CommandResult(hostname, None, error="Connection timeout")
            except ConnectError as exc:
                return CommandResult(hostname, None, error=exc.reason)
            except (asyncssh.Error, OSError) as exc:
                self._pool.drop(hostname)
                return CommandResult(hostname, None, error=f"Connection lost: {exc}")
            except asyncio.CancelledError:
                if process is not None:
                    await asyncio.shield(process.kill())
                raise

    async def _collect(self, process: RemoteProcess, input: bytes | Path | None) -> CommandResult:
        stdout = _Capture(self._output_limit)
        stderr = _Capture(self._output_limit)
        stderr.feed(process.first_stderr)
        readers = [asyncio.ensure_future(_drain(process.stdout, stdout)),
                   asyncio.ensure_future(_drain(process.stderr, stderr))]
        try:
            await _feed(process, input)
            await asyncio.gather(*readers)
            await process.process.wait_closed()
        finally:
            for reader in readers:
                reader.cancel()
        status = process.exit_status
        signal = process.exit_signal
        error = None
        if status is None or status < 0:
            error = f"Killed by signal {signal}" if signal else "Connection lost before the exit status"
            status = None
        return CommandResult(process.hostname, status, stdout.text(), stderr.text(), error)


async def _feed(process: RemoteProcess, input: bytes | Path | None) -> None:
    """Send stdin then EOF; a node that stops reading early is not an error."""
    try:
        if isinstance(input, bytes):
            process.stdin.write(input)
            await process.stdin.drain()
        elif input is not None:
            with open(input, "rb") as source:
                while chunk := source.read(STDIN_CHUNK):
                    process.stdin.write(chunk)
                    await process.stdin.drain()
        process.stdin.write_eof()
    except (BrokenPipeError, ConnectionResetError, asyncssh.Error):
        pass


async def _drain(reader: asyncssh.SSHReader[bytes], capture: _Capture) -> None:
    with contextlib.suppress(asyncssh.Error, OSError):
        while chunk := await reader.read(65536):
            capture.feed(chunk)


class _Capture:
    """Keep the first `limit` bytes of a stream and count the rest (drained, not stored)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._parts: list[bytes] = []
        self._kept = 0
        self.dropped = 0

    def feed(self, chunk: bytes) -> None:
        room = self._limit - self._kept
        if room > 0:
            self._parts.append(chunk[:room])
            self._kept += min(room, len(chunk))
        self.dropped += max(0, len(chunk) - max(room, 0))

    def text(self) -> str:
        data = b"".join(self._parts).decode("utf-8", "replace")
        if self.dropped:
            data += f"\n[... {self.dropped} bytes truncated]"
        return data


MODES.declare("flat", Executor._run_flat,
              "the server holds one SSH connection per node and runs every channel itself")
MODES.declare("tree", Executor._run_tree,
              "TakTuk's design: a stdlib agent sent to the nodes relays to the others "
              "(arity from external/taktuk/tree_arity, work stealing, lost relays taken over)")
