"""The executor's tree mode: one command on N nodes through a tree of relays (TakTuk's design).

The server opens SSH connections to at most `arity` first-level nodes and starts
the agent (`remote/agent.py`, sent over the channel: auto-propagation) on each;
every agent runs the command on its node and starts up to `arity` children
itself with `ssh -A` (the server's own ssh-agent, forwarded hop by hop:
`remote/sshagent.py`), and so on. The server holds the only queue
(`remote/ledger.py`): agents with free slots ask for nodes, so a fast branch
takes more and a slow one less (work stealing from one pool). A relay lost or
silent for `stall` seconds is cut off and granted again to its parent: its
agent, alive, waits as an orphan with its command and subtree and is adopted
by the new link; a dead one is decided and its children are granted to its
parent in turn (`ledger.py`). Messages to a node whose route is being rejoined
wait here until it is reachable again.

Results are the flat mode's: one `CommandResult` per node, with the same
output truncation (`outputs_size`, applied on the node) and the same
connection-error texts. A timeout bounds each node's command from its start
and kills its process group; cancelling the caller sends `kill` down the tree
and then kills the first-level relays' process groups (each agent's command
dies with its agent, and an agent with its parent's connection).

A stream run (`stream_args`: the broadcast's long-lived relays, through
`remote/launch.py`) keeps each node's command running with its streams
carried by the tree's messages: each node is a `TreeStream` (the
`process.NodeProcess` surface of a `RemoteProcess`), its stdin sent down as
`in`/`eof`, its output coming up as `out`, its end as `exit`; the run lasts
until every stream has ended. A stream outlives its relay's link (its agent
is adopted); one whose own agent died ends with the ledger's reason, as a
lost SSH channel would; no node is started twice (the agents' run lock).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import secrets
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

from kadeploy.remote.connections import ConnectError, ConnectionPool
from kadeploy.remote.ledger import Ledger
from kadeploy.remote.process import RemoteProcess
from kadeploy.remote.result import CommandResult
from kadeploy.remote.shell import env_prefix, wrap_command
from kadeploy.remote.tuning import PREFERRED_CIPHERS, PREFERRED_KEX

AGENT_SOURCE = Path(__file__).with_name("agent.py")
log = logging.getLogger("kadeploy.remote")

#: the arity used when server.conf's `external/taktuk/tree_arity` is 0 (Kadeploy3's "dynamic")
DEFAULT_ARITY = 8
#: node count from which the executor runs in tree mode (when configured): the crossing measured on the
#: fake testbed (benchmarks/scale.py, real steps, docs/design.md "Tree mode"): flat deploys 100 and 300
#: nodes sooner; at 500 both take the same time on one fake worker, and the tree 3 x flat's time when
#: half its hops are real SSH handshakes to a second worker on the same two cores; at 1,000 and 4,000 the
#: tree is faster and costs the server less CPU and memory (the sshd lab stops at 256 nodes: flat there)
TREE_CROSSING = 1000
#: stdin a tree run carries inline (base64 in every agent's configuration); larger input runs flat
TREE_INPUT_LIMIT = 1024 * 1024
#: the longest line an agent may send (two captures of `outputs_size` plus JSON escaping)
MAX_EVENT_LINE = 16 * 1024 * 1024


#: the environment variable that moves the crossing (benchmarks/scale.py compares both modes at any N)
TREE_FROM_VARIABLE = "KADEPLOY_TREE_FROM"


def tree_from_environment(environ: Mapping[str, str]) -> int:
    """The node count from which runs go through the tree: TREE_CROSSING, or KADEPLOY_TREE_FROM.

    Why a variable and not a server.conf key: Kadeploy3 has no such key (TakTuk
    was used at every size); this is for measuring both modes at one size.
    """
    value = environ.get(TREE_FROM_VARIABLE)
    if value is None or value == "":
        return TREE_CROSSING
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError(f"{TREE_FROM_VARIABLE} must be a node count of at least 1, not {value!r}")
    return count


@dataclass(frozen=True)
class TreeOptions:
    """How a tree run is shaped and watched."""

    arity: int = DEFAULT_ARITY       # first-level connections of the server, children per agent
    heartbeat: float = 1.0           # an agent's "beat" period
    stall: float = 10.0              # silence after which a relay is cut off (and granted again)
    orphan: float = 60.0             # how long an agent cut off from its parent waits to be adopted
    python: str = "python3"          # the interpreter on the nodes
    lock_dir: str = "/tmp"           # where an agent takes its per-run lock on its node

    def __post_init__(self) -> None:
        if self.arity < 1:
            raise ValueError(f"tree arity must be at least 1, not {self.arity}")
        if not 0 < self.heartbeat < self.stall:
            raise ValueError("the heartbeat must be positive and shorter than the stall time")
        if self.orphan < self.stall:
            raise ValueError("an orphan must wait at least the stall time for its adoption")


def agent_source() -> str:
    return AGENT_SOURCE.read_text()


def child_ssh_argv(*, user: str, port: int, connect_timeout: float) -> list[str]:
    """The `ssh` an agent runs to start a child (the address and the remote command follow)."""
    return ["ssh", "-A", "-T", "-x", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ControlMaster=no",
            "-o", "PreferredAuthentications=publickey",
            "-o", f"ConnectTimeout={max(1, int(connect_timeout))}", "-p", str(port), "-l", user]


def input_fits_tree(input: bytes | Path | None) -> bool:
    """Whether a tree run can carry this stdin inline (larger stdin, e.g. a kernel, runs flat)."""
    if input is None:
        return True
    if isinstance(input, bytes):
        return len(input) <= TREE_INPUT_LIMIT
    try:
        return Path(input).stat().st_size <= TREE_INPUT_LIMIT
    except OSError:
        return False  # the flat mode reports the unreadable file as it always did


class _TreeStdin:
    """A stream's stdin: each write is an `in` message down the tree, EOF an `eof` one."""

    def __init__(self, stream: TreeStream) -> None:
        self._stream = stream

    def write(self, data: bytes) -> None:
        self._stream.send({"op": "in", "to": self._stream.hostname, "data": base64.b64encode(data).decode()})

    def write_eof(self) -> None:
        self._stream.send({"op": "eof", "to": self._stream.hostname})


class TreeStream:
    """One node's long-lived command in a stream run, as a process (`process.NodeProcess`).

    Its output is what the node's agent sent up (`out`), its end the node's
    `exit`, or the ledger's reason when the node was not reached or its agent
    died: that reason is this stream's stderr, as a lost channel's last words.
    """

    def __init__(self, run: TreeRun, hostname: str) -> None:
        self.hostname = hostname
        self.first_stderr = b""
        self._run = run
        self._stdin = _TreeStdin(self)
        self._stdout = asyncio.StreamReader(limit=MAX_EVENT_LINE)
        self._stderr = asyncio.StreamReader(limit=MAX_EVENT_LINE)
        self._started = asyncio.Event()
        self._closed = asyncio.Event()
        self.exit_status: int | None = None
        self.exit_signal: str | None = None
        #: why the stream ended without an exit status (not reached, lost, killed), None otherwise
        self.reason: str | None = None
        self.killed = False

    @property
    def stdin(self) -> _TreeStdin:
        return self._stdin

    @property
    def stdout(self) -> asyncio.StreamReader:
        return self._stdout

    @property
    def stderr(self) -> asyncio.StreamReader:
        return self._stderr

    @property
    def ended(self) -> bool:
        return self._closed.is_set()

    def send(self, message: Mapping[str, Any]) -> None:
        if not self.ended:
            self._run.send_to(self.hostname, message)

    async def wait_started(self) -> None:
        """Until the node's agent took its run lock and starts the command; raises ConnectError
        with the reason when the node ended first (not reached, ssh failed, relay lost)."""
        if not self._started.is_set() and not self.ended:
            waiters = [asyncio.ensure_future(self._started.wait()), asyncio.ensure_future(self._closed.wait())]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
        if not self._started.is_set():
            raise ConnectError(self.reason or "Not started")

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def kill(self, timeout: float = 5.0) -> None:
        """Kill the node's command (its process group, by its agent); never raises."""
        self.killed = True
        if self.ended:
            return
        self.send({"op": "kill", "to": self.hostname})
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._closed.wait()

    def watch_liveness(self, interval: float, count_max: int) -> None:
        """Nothing to do: the tree's heartbeats already end a silent node's stream within `stall`."""

    # -- fed by the run ------------------------------------------------------------------------

    def on_started(self) -> None:
        self._started.set()

    def on_output(self, fd: int, data: bytes) -> None:
        if not self.ended:
            (self._stderr if fd == 2 else self._stdout).feed_data(data)

    def on_exit_signal(self, signal: str) -> None:
        """The node's `exit` named the signal that ended its command (its end follows through the ledger)."""
        if not self.ended:
            self.exit_signal = signal

    def on_end(self, result: CommandResult) -> None:
        if self.ended:
            return
        self.exit_status = result.exit_status
        if result.error:
            self.reason = result.error
            if self._started.is_set():
                self._stderr.feed_data(f"{result.error}\n".encode())
        self._stdout.feed_eof()
        self._stderr.feed_eof()
        self._closed.set()


class TreeRun:
    """One command on many nodes through the tree; `await TreeRun(...).run()`."""

    def __init__(self, pool: ConnectionPool, hosts: Mapping[str, str], command: str, *,
                 input: bytes | None, timeout: float | None, env: Mapping[str, str] | None,
                 options: TreeOptions, outputs_size: int, user: str, port: int,
                 connect_timeout: float, stream_args: Mapping[str, str | None] | None = None) -> None:
        """`stream_args`: a stream run (long-lived commands, `TreeStream`), each node's command being
        `command` followed by its own argument shell-quoted (None: none)."""
        self._pool = pool
        self._options = options
        self._connect_timeout = connect_timeout
        self.ledger = Ledger(hosts)
        self._stream_args = dict(stream_args) if stream_args is not None else None
        #: a stream run's nodes (empty otherwise)
        self.streams: dict[str, TreeStream] = {host: TreeStream(self, host) for host in (stream_args or {})}
        line = f"{env_prefix(env)}{command}" if stream_args is not None else \
            f"{env_prefix(env)}exec sh -c {shlex.quote(command)}"
        self._config: dict[str, Any] = {
            "run": secrets.token_hex(12), "line": line, "stream": stream_args is not None,
            "timeout": timeout, "input": base64.b64encode(input).decode() if input else None,
            "arity": options.arity, "outputs_size": outputs_size, "heartbeat": options.heartbeat,
            "stall": options.stall, "orphan": options.orphan, "connect_timeout": connect_timeout,
            "python": options.python,
            "lock_dir": options.lock_dir,
            "ssh": child_ssh_argv(user=user, port=port, connect_timeout=connect_timeout),
            # the server's own preferences (remote/tuning.py), for the nodes' ssh clients
            "prefer": {"kexalgorithms": list(PREFERRED_KEX), "ciphers": list(PREFERRED_CIPHERS)},
            "source": agent_source(),
        }
        self._start_line = wrap_command(f"exec {shlex.quote(options.python)} -c {shlex.quote(self._config['source'])}")
        self._events: asyncio.Queue[tuple[str, str, Any]] = asyncio.Queue()
        self._links: dict[str, asyncio.Task[None]] = {}
        self._processes: dict[str, RemoteProcess] = {}
        #: messages for nodes whose route is being rejoined, sent once they are reachable again
        self._held: dict[str, list[Mapping[str, Any]]] = {}
        self._stopping = False
        #: the most first-level links open at once (what the server's connection count is bounded by)
        self.peak_links = 0

    async def run(self) -> dict[str, CommandResult]:
        try:
            self._fill_first_level()
            while not self.ledger.done:
                if not self._links:
                    self.ledger.give_up("Not reached: no relay was left to start it")
                    break
                kind, host, payload = await self._events.get()
                self._handle(kind, host, payload)
                self._dispatch()
                self._end_streams()
            self._end_streams()
            if self.ledger.counts["lost"]:
                log.warning("tree run %s on %d nodes (%.60s): relays lost %d, adopted %d, started afresh %d, "
                            "gone %d, nodes stolen %d%s", self._config["run"], len(self.ledger.address),
                            self._config["line"], *self.ledger.counts.values(), self.ledger.stolen,
                            "".join(f"; {host}: {self.ledger.results[host].error}"
                                    for host in self.ledger.gone_sample if host in self.ledger.results))
            await self._stop("quit", self._options.stall)
        except BaseException:
            await asyncio.shield(self._stop("kill", 5.0))
            raise
        finally:
            for stream in self.streams.values():
                stream.on_end(CommandResult(stream.hostname, None, error="The tree run ended"))
        return {host: self.ledger.results[host] for host in self.ledger.address}

    def drain(self, reason: str) -> None:
        """A stream run's caller is done: queued nodes are not started (`reason`), the streams still
        running get EOF (their commands end as when their driver closes their stdin)."""
        self.ledger.drop_queue(reason)
        for stream in self.streams.values():
            if not stream.ended:
                stream.stdin.write_eof()
        self._events.put_nowait(("wake", "", None))

    def _end_streams(self) -> None:
        """The streams of the nodes whose result the ledger decided since the last call end."""
        if self.streams:
            for host in self.ledger.decided:
                stream = self.streams.get(host)
                if stream is not None:
                    stream.on_end(self.ledger.results[host])
        self.ledger.decided.clear()

    # -- the first level ------------------------------------------------------------------------

    def _dispatch(self) -> None:
        """Grants for parked wants and lost relays, first-level links, held messages now deliverable."""
        for agent, nodes in self.ledger.dispatch().items():
            self._grant(agent, nodes)
        grants, links = self.ledger.joins()
        for agent, nodes in grants.items():
            self._grant(agent, nodes)
        for host in links:  # a lost first-level relay: the server links to it again (beyond the arity)
            self._links[host] = asyncio.ensure_future(self._link(host))
        self._fill_first_level()
        for agent in [agent for agent in self._held if self.ledger.reachable(agent)]:
            for message in self._held.pop(agent):
                self.send_to(agent, message)
        for agent in [agent for agent in self._held if agent not in self.ledger.parent]:
            del self._held[agent]  # decided and gone: nobody to tell

    def _fill_first_level(self) -> None:
        free = self._options.arity - len(self._links)
        for host in self.ledger.first_level(max(0, free), alone=not self._links):
            self._links[host] = asyncio.ensure_future(self._link(host))
        self.peak_links = max(self.peak_links, len(self._links))

    async def _link(self, host: str) -> None:
        """Start the agent on a first-level node and turn its stdout into events.

        Posts exactly one closing event ("failed" or "end"), whatever happens, so
        that the run never waits for a link that is gone.
        """
        state = _LinkState()
        try:
            await self._serve_link(host, state)
        except Exception as exc:  # a bug or an unexpected asyncssh error: the link is lost, not the run
            state.reason = state.reason or f"Relay link failed: {exc!r}"
        finally:
            if state.process is None:
                self._events.put_nowait(("failed", host, state.reason or "Connection lost"))
            else:
                self._events.put_nowait(("end", host, (state.hello, state.silent, state.reason)))
            if state.process is not None and state.process.exit_status is None:
                if self._stopping or not (state.hello or state.silent):
                    await asyncio.shield(state.process.kill())
                else:
                    # only the channel: the agent, alive, waits as an orphan for the link that adopts it
                    state.process.process.close()

    async def _serve_link(self, host: str, state: _LinkState) -> None:
        address = self.ledger.address[host]
        try:
            async with asyncio.timeout(self._connect_timeout + self._options.stall):
                connection = await self._pool.get(host, address)
                state.process = await RemoteProcess.start(host, connection, self._start_line)
        except ConnectError as exc:
            state.reason = exc.reason
            return
        except TimeoutError:
            state.reason = "Connection timeout"
            return
        except (asyncssh.Error, OSError) as exc:
            self._pool.drop(host)
            state.reason = f"Connection lost: {exc}"
            return
        process = state.process
        self._processes[host] = process
        config = dict(self._config, host=host)
        if self._stream_args is not None:
            config["arg"] = self._stream_args.get(host)
        process.stdin.write((json.dumps(config, separators=(",", ":")) + "\n").encode())
        while True:
            limit = self._options.stall if state.hello else self._options.stall + self._connect_timeout
            try:
                async with asyncio.timeout(limit):
                    line = await process.stdout.readline()
            except TimeoutError:
                state.reason = f"Agent silent for {limit:g}s: taken as lost"
                state.silent = True
                break
            except (asyncssh.Error, OSError):
                break
            if not line or len(line) > MAX_EVENT_LINE:
                break
            try:
                event = json.loads(line)
                kind = event["ev"]
            except (ValueError, KeyError, TypeError):
                continue
            if kind == "hello" and event.get("host") == host:
                state.hello = True
            if kind != "beat":
                self._events.put_nowait(("event", host, event))
        if not state.hello and state.reason is None:
            state.reason = await _stderr_reason(process)

    def _handle(self, kind: str, link: str, payload: Any) -> None:
        ledger = self.ledger
        if kind == "wake":
            return
        if kind == "failed":
            self._links.pop(link, None)
            ledger.on_failed(link, payload)
            return
        if kind == "end":
            self._links.pop(link, None)
            self._processes.pop(link, None)
            hello, silent, reason = payload
            if ledger.done:
                return
            if hello or silent:  # silent, its agent may be alive and slow: granted again, maybe adopted
                ledger.on_lost(link, None, None if hello else reason)
            else:
                ledger.on_failed(link, reason or "Connection lost before the agent started", None)
            return
        event: dict[str, Any] = payload
        host = event.get("host")
        if not isinstance(host, str) or ledger.root(host) != link:
            return  # a node may only speak for its own subtree
        what = event.get("ev")
        if what == "hello":
            ledger.on_hello(host, bool(event.get("adopted")))
        elif what == "synced":
            children = event.get("children")
            ledger.on_synced(host, [c for c in children if isinstance(c, str)] if isinstance(children, list) else [])
        elif what == "kept":
            ledger.on_kept(host, str(event.get("by")))
        elif what == "gone":
            ledger.on_gone(host, str(event.get("error") or "gone"))
        elif what == "want":
            count = event.get("n")
            if isinstance(count, int) and 0 < count <= self._options.arity:
                nodes = ledger.want(host, count)
                if nodes:
                    self._grant(host, nodes)
        elif what == "started":
            ledger.on_started(host)
            if host in self.streams and host in ledger.started:
                self.streams[host].on_started()
        elif what == "out":
            stream = self.streams.get(host)
            if stream is not None:
                with contextlib.suppress(ValueError, TypeError):
                    stream.on_output(2 if event.get("fd") == 2 else 1, base64.b64decode(event.get("data") or ""))
        elif what == "result" or (what == "exit" and self.streams):
            stream = self.streams.get(host)
            if stream is not None and isinstance(event.get("signal"), str):
                stream.on_exit_signal(event["signal"])
            ledger.on_result(_result(host, event))
        elif what in ("failed", "lost"):
            # reported by the parent of `host` (`by`), which is in the same subtree
            by = event.get("by")
            if isinstance(by, str):
                if what == "failed":
                    ledger.on_failed(host, str(event.get("error") or "Connection failed"), by)
                else:
                    error = event.get("error")
                    ledger.on_lost(host, by, error if isinstance(error, str) else None)

    def _grant(self, agent: str, nodes: list[tuple[str, str]]) -> None:
        granted: list[list[Any]] = [list(node) for node in nodes]
        if self._stream_args is not None:
            granted = [[host, address, self._stream_args.get(host)] for host, address in nodes]
        # its link is ending when it cannot be sent: the "end" event gives the nodes back
        self.send_to(agent, {"op": "grant", "to": agent, "nodes": granted})

    def send_to(self, agent: str, message: Mapping[str, Any]) -> None:
        """One command down the tree to `agent` (through its first-level link); held while its route
        is being rejoined, dropped when the node is no longer in the tree (decided)."""
        if agent in self.ledger.parent and not self.ledger.reachable(agent):
            self._held.setdefault(agent, []).append(message)
            return
        root = self.ledger.root(agent)
        process = self._processes.get(root) if root is not None else None
        if process is None:
            return
        with contextlib.suppress(asyncssh.Error, OSError):
            process.stdin.write((json.dumps(message, separators=(",", ":")) + "\n").encode())

    async def _stop(self, op: str, grace: float) -> None:
        """Tell every first-level relay to `quit` (or `kill`), wait `grace`, then kill what is left."""
        self._stopping = True
        line = (json.dumps({"op": op}) + "\n").encode()
        for process in list(self._processes.values()):
            with contextlib.suppress(asyncssh.Error, OSError):
                process.stdin.write(line)
        tasks = list(self._links.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=grace + 5.0)
        self._links.clear()


@dataclass
class _LinkState:
    """What one first-level link learned: its process, whether its agent said hello, why it ended."""

    process: RemoteProcess | None = None
    hello: bool = False
    silent: bool = False    # cut off for its silence (not refused, not ended): maybe alive
    reason: str | None = None


def _result(host: str, event: Mapping[str, Any]) -> CommandResult:
    status = event.get("status")
    error = event.get("error")
    return CommandResult(host, status if isinstance(status, int) else None,
                         str(event.get("stdout") or ""), str(event.get("stderr") or ""),
                         str(error) if error else None)


async def _stderr_reason(process: RemoteProcess) -> str | None:
    """The last stderr line of a first-level agent that ended (why it could not start)."""
    data = b""
    with contextlib.suppress(TimeoutError, asyncssh.Error, OSError):
        async with asyncio.timeout(1.0):
            data = await process.stderr.read(4096)
    lines = [line.strip() for line in data.decode("utf-8", "replace").splitlines() if line.strip()]
    return f"Agent did not start: {lines[-1][:300]}" if lines else None
