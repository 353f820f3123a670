"""testbed.fake room: a fake node hosts the executor's real tree agent (`kadeploy.remote.agent.Logic`).

The server's tree mode sends `exec python3 -c <agent source>` over SSH; a real
node runs that source as a process (`agent.Agent`: `sh` for the command, `ssh`
for the children). A fake node cannot afford one interpreter per node, so it
runs the same decisions, the agent's `Logic`, with asyncio I/O instead: the
protocol, the run lock, the stall and timeout handling, the want/grant
exchange and the error texts are the agent's own code, not a second
implementation. Only the I/O differs:

* the node's command is the fake node's own (`FakeNode.execute` on the
  classified command), its output captured with the agent's `Capture`;
* a child is started on the fake node at its address: in-process when this
  process serves that node (a session of the target node, cancelled by its
  reboot as any session; a node that is down answers as ssh does, "Connection
  refused"), over a real SSH connection to its fake sshd when another worker
  process serves it;
* ending a child's link gives the child end of file, as a dead ssh gives the
  remote agent: it becomes an orphan (the agent's `Logic` decides what that means);
* a node's live agents are listed by run (`FakeNode.tree_agents`, the real
  agent's Unix socket): an agent started for a run whose agent is alive on the
  node adopts it, its session then being the proxy between the new parent and
  that agent (`agent.proxy`), until the agent ends or another adopts it;
* a stream run's command (the broadcast's relay started through the tree) is
  the fake node's own too, over a channel whose writes go up as the agent's
  `out` events and whose reads come from the server's `in` and `eof`.

The source the server sent must be this checkout's agent: any other is refused
(exit 127), since what would run is not what was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncssh

from kadeploy.remote import agent
from kadeploy_testbed.fake.shell import classify, is_relay_line, relay_command

if TYPE_CHECKING:
    from kadeploy_testbed.fake.node import Channel, FakeNode

AGENT_SOURCE = Path(agent.__file__).read_text()
CONFIG_TIMEOUT = 30.0


def command_of(line: str) -> str | None:
    """`VAR='v' exec sh -c '<command>'` (the tree run's line) -> `<command>`."""
    try:
        words = shlex.split(line)
    except ValueError:
        return None
    while words and "=" in words[0] and not words[0].startswith("="):
        words.pop(0)
    if len(words) != 4 or words[:3] != ["exec", "sh", "-c"]:
        return None
    return words[3]


class _CommandChannel:
    """The node command's channel: stdin from the configuration, output into the agent's captures."""

    def __init__(self, data: bytes, limit: int) -> None:
        self.data = data
        self.stdout = agent.Capture(limit)
        self.stderr = agent.Capture(limit)

    async def read(self, size: int) -> bytes:
        chunk, self.data = self.data[:size], self.data[size:]
        return chunk

    async def readline(self) -> bytes:
        cut = self.data.find(b"\n")
        cut = len(self.data) if cut < 0 else cut + 1
        line, self.data = self.data[:cut], self.data[cut:]
        return line

    def write(self, data: str) -> None:
        self.stdout.feed(data.encode())

    def write_err(self, data: str) -> None:
        self.stderr.feed(data.encode())


class _ChildChannel:
    """An in-process child's end of its link: lines from the parent agent, output to it."""

    def __init__(self, on_stdout: Callable[[bytes], None], on_stderr: Callable[[bytes], None]) -> None:
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self.pending = b""
        self.on_stdout = on_stdout
        self.on_stderr = on_stderr

    async def readline(self) -> bytes:
        while b"\n" not in self.pending:
            chunk = await self.inbox.get()
            if not chunk:
                line, self.pending = self.pending, b""
                self.inbox.put_nowait(b"")  # end of file stays end of file
                return line
            self.pending += chunk
        cut = self.pending.index(b"\n") + 1
        line, self.pending = self.pending[:cut], self.pending[cut:]
        return line

    async def read(self, size: int) -> bytes:
        return await self.readline()

    def write(self, data: str) -> None:
        self.on_stdout(data.encode())

    def write_err(self, data: str) -> None:
        self.on_stderr(data.encode())


class _StreamChannel:
    """A stream run's command channel: reads from the server's `in`/`eof`, writes up as `out` events."""

    def __init__(self, on_output: Callable[[int, bytes], None]) -> None:
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self.pending = b""
        self.at_eof = False
        self.on_output = on_output

    async def _more(self) -> bool:
        if self.at_eof:
            return False
        chunk = await self.inbox.get()
        if not chunk:
            self.at_eof = True
            return False
        self.pending += chunk
        return True

    async def readline(self) -> bytes:
        while b"\n" not in self.pending:
            if not await self._more():
                line, self.pending = self.pending, b""
                return line
        cut = self.pending.index(b"\n") + 1
        line, self.pending = self.pending[:cut], self.pending[cut:]
        return line

    async def read(self, size: int) -> bytes:
        if not self.pending:
            await self._more()
        chunk, self.pending = self.pending[:size], self.pending[size:]
        return chunk

    def write(self, data: str) -> None:
        self.on_output(1, data.encode())

    def write_err(self, data: str) -> None:
        self.on_output(2, data.encode())


class _Link:
    """A parent agent's view of one child: how to write to it, how to end it, what it said on stderr."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.lines = agent.LineBuffer()
        self.stderr = b""
        self.status: int | None = None
        self.ended = False
        self.send: Callable[[bytes], bool] = lambda data: False
        self.close: Callable[[], None] = lambda: None
        self.task: asyncio.Task[Any] | None = None


class HostedAgent:
    """One agent run on a fake node: the agent's `Logic` with this object as its io."""

    def __init__(self, node: FakeNode, channel: Channel) -> None:
        self.node = node
        self.channel = channel
        self.config: dict[str, Any] = {}
        self.logic: agent.Logic | None = None
        self.links: dict[str, _Link] = {}
        self.command_task: asyncio.Task[None] | None = None
        self.stream_channel: _StreamChannel | None = None
        self.wake = asyncio.Event()
        self.ssh_key: asyncssh.SSHKey | None = None
        self.reader: asyncio.Task[None] | None = None
        #: set to end the session through which this agent was last adopted
        self.adopter_done: asyncio.Event | None = None

    async def run(self) -> int:
        try:
            async with asyncio.timeout(CONFIG_TIMEOUT):
                first = await self.channel.readline()
            self.config = json.loads(first)
        except (TimeoutError, ValueError):
            self.channel.write_err("kadeploy agent: no configuration on stdin\n")
            return 1
        if self.config.get("source") != AGENT_SOURCE:
            self.channel.write_err("fake node: the agent source to propagate is not this checkout's\n")
            return 127
        key = (str(self.config.get("run")), str(self.config.get("host")))
        live = self.node.tree_agents.get(key)
        if live is not None:
            return await live.adopt(self.channel)
        self.node.agent_runs += 1
        logic = self.logic = agent.Logic(self.config, self)
        self.reader = asyncio.ensure_future(self._read_parent())
        period = min(0.5, self.config["heartbeat"] / 2)
        try:
            logic.begin(time.monotonic())
            if not logic.gone:
                self.node.tree_agents[key] = self
            while True:
                logic.beat(time.monotonic())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(period):
                        await self.wake.wait()
                self.wake.clear()
                if logic.tick(time.monotonic()):
                    break
            logic.close()
            return 0
        finally:
            # killed or done: what a dead agent process leaves is nothing (watchdog, PDEATHSIG)
            if self.node.tree_agents.get(key) is self:
                del self.node.tree_agents[key]
            if self.adopter_done is not None:
                self.adopter_done.set()
            if self.reader is not None:
                self.reader.cancel()
            if self.command_task is not None:
                self.command_task.cancel()
            for link in list(self.links.values()):
                link.close()

    async def adopt(self, channel: Channel) -> int:
        """Another agent session for our run on this node (a relay granted us again): its channel is our
        parent from now on; that session lasts until we end or another adopts us."""
        assert self.logic is not None
        if self.adopter_done is not None:
            self.adopter_done.set()  # the previous adopter's session ends: its parent sees its end
        done = self.adopter_done = asyncio.Event()
        if self.reader is not None:
            self.reader.cancel()
        self.channel = channel
        self.reader = asyncio.ensure_future(self._read_parent())
        self.logic.on_adopted(time.monotonic())
        self.wake.set()
        await done.wait()
        return 0

    async def _read_parent(self) -> None:
        assert self.logic is not None
        while True:
            line = await self.channel.readline()
            if not line.endswith(b"\n"):
                self.logic.on_parent_eof()
                self.wake.set()
                return
            self.logic.on_parent_line(line[:-1], time.monotonic())
            self.wake.set()

    # -- the io the logic uses ----------------------------------------------------------------

    def send_up(self, data: bytes) -> bool:
        self.channel.write(data.decode())
        return True

    def pid(self) -> int:
        return self.node.context.pgid()

    def take_lock(self) -> bool:
        key = (self.config["run"], self.config["host"])
        if key in self.node.agent_locks:
            return False
        self.node.agent_locks.add(key)
        return True

    def start_command(self, line: str, data: str | None, timeout: float | None) -> str | None:
        command = command_of(line)
        if command is None:
            return f"fake node {self.node.hostname}: not a tree command line: {line[:200]!r}"
        import base64
        channel = _CommandChannel(base64.b64decode(data) if data else b"", self.config["outputs_size"])
        self.command_task = asyncio.ensure_future(self._command(command, channel))
        return None

    async def _command(self, command: str, channel: _CommandChannel) -> None:
        assert self.logic is not None
        try:
            outcome = await self.node.execute(classify(command), command, channel)
        except asyncio.CancelledError:
            if self.logic.command_killed:
                self.logic.on_command_end(-9, channel.stdout.text(), channel.stderr.text())
                self.wake.set()
            raise
        if outcome.stdout:
            channel.write(outcome.stdout)
        if outcome.stderr:
            channel.write_err(outcome.stderr.rstrip("\n") + "\n")
        self.logic.on_command_end(outcome.status, channel.stdout.text(), channel.stderr.text())
        self.wake.set()

    def start_stream(self, line: str) -> str | None:
        shared, arg = self.config["line"], self.config.get("arg")
        # a relay's config is this node's own argument: tokenizing the whole line (the relay's source,
        # ~50 KB) cost the fake worker 24 ms per node, which at 1,000 nodes starting at once held its
        # event loop long enough for agents' heartbeats to miss the stall time
        command = relay_command(arg) if arg is not None and is_relay_line(shared) else classify(line)
        if command.kind != "relay":
            return f"fake node {self.node.hostname}: not a long-lived command it can run: {line[:200]!r}"
        channel = self.stream_channel = _StreamChannel(self._stream_output)
        self.command_task = asyncio.ensure_future(self._stream(command, line, channel))
        return None

    def _stream_output(self, fd: int, data: bytes) -> None:
        if self.logic is not None:
            self.logic.on_command_output(fd, data)

    async def _stream(self, command: Any, line: str, channel: _StreamChannel) -> None:
        assert self.logic is not None
        try:
            outcome = await self.node.execute(command, line, channel)
        except asyncio.CancelledError:
            if self.logic.command_killed:
                self.logic.on_command_end(-9, "", "")
                self.wake.set()
            raise
        if outcome.stderr:
            channel.write_err(outcome.stderr.rstrip("\n") + "\n")
        self.logic.on_command_end(outcome.status, "", "")
        self.wake.set()

    def command_input(self, data: bytes) -> None:
        if self.stream_channel is not None and data:
            self.stream_channel.inbox.put_nowait(data)

    def command_eof(self) -> None:
        if self.stream_channel is not None:
            self.stream_channel.inbox.put_nowait(b"")

    def kill_command(self) -> None:
        if self.command_task is not None:
            self.command_task.cancel()

    def spawn(self, host: str, address: str, config_line: bytes) -> str | None:
        link = _Link(host)
        self.links[host] = link
        target = self.node.context.local_node(address)
        if target is not None:
            self._spawn_local(link, target, config_line)
        else:
            link.task = asyncio.ensure_future(self._spawn_ssh(link, address, config_line))
        return None

    def _spawn_local(self, link: _Link, target: FakeNode, config_line: bytes) -> None:
        if not target.up:
            port = self.node.context.settings.ssh_port
            link.stderr = f"ssh: connect to host {target.spec.ip} port {port}: Connection refused\r\n".encode()
            link.status = 255
            asyncio.get_running_loop().call_soon(self._ended, link)
            return
        channel = _ChildChannel(lambda data: self._child_out(link, data),
                                lambda data: self._child_err(link, data))
        channel.inbox.put_nowait(config_line)

        def send(data: bytes) -> bool:
            if link.ended:
                return False
            channel.inbox.put_nowait(data)
            return True

        link.send = send
        link.close = lambda: channel.inbox.put_nowait(b"")
        link.task = asyncio.ensure_future(target.agent_session(channel))
        link.task.add_done_callback(lambda task: self._local_done(link, task))

    def _local_done(self, link: _Link, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is None:
            link.status = task.result()
        else:
            link.status = -9  # the target rebooted or stopped: its sessions were killed
        self._ended(link)

    async def _spawn_ssh(self, link: _Link, address: str, config_line: bytes) -> None:
        """A child served by another worker process: a real SSH connection to its fake sshd."""
        context = self.node.context
        port = context.settings.ssh_port
        try:
            async with asyncio.timeout(self.config["connect_timeout"]):
                # from this node's own address, as its ssh would connect (the server's come from 127.0.0.1)
                connection = await asyncssh.connect(
                    address, port, username="root", client_keys=[context.deploy_key()], known_hosts=None,
                    agent_path=None, config=None, local_addr=(self.node.spec.ip, 0))
        except (TimeoutError, asyncssh.Error, OSError) as exc:
            reason = "Connection refused" if isinstance(exc, ConnectionRefusedError) else str(exc) or repr(exc)
            link.stderr = f"ssh: connect to host {address} port {port}: {reason}\r\n".encode()
            link.status = 255
            self._ended(link)
            return
        try:
            remote = f"exec {shlex.quote(self.config.get('python', 'python3'))} -c {shlex.quote(self.config['source'])}"
            process = await connection.create_process(remote, encoding=None)
            process.stdin.write(config_line)

            def send(data: bytes) -> bool:
                if link.ended:
                    return False
                process.stdin.write(data)
                return True

            link.send = send
            link.close = connection.abort
            errors = asyncio.ensure_future(self._pump_stderr(link, process))
            while True:
                chunk = await process.stdout.read(agent.READ_SIZE)
                if not chunk:
                    break
                self._child_out(link, chunk)
            await errors
            link.status = process.exit_status if process.exit_status is not None else 255
        except (asyncssh.Error, OSError):
            link.status = 255
        finally:
            connection.abort()
            self._ended(link)

    async def _pump_stderr(self, link: _Link, process: asyncssh.SSHClientProcess[bytes]) -> None:
        with contextlib.suppress(asyncssh.Error, OSError):
            while chunk := await process.stderr.read(agent.READ_SIZE):
                self._child_err(link, chunk)

    def _child_out(self, link: _Link, data: bytes) -> None:
        if link.ended or self.logic is None:
            return
        self.logic.on_child_seen(link.host, time.monotonic())
        try:
            lines = link.lines.feed(data)
        except ValueError:
            self.logic.end_child(link.host, killed=True)
            self.wake.set()
            return
        for line in lines:
            self.logic.on_child_line(link.host, line)
        self.wake.set()

    def _child_err(self, link: _Link, data: bytes) -> None:
        if not link.ended and self.logic is not None:
            self.logic.on_child_seen(link.host, time.monotonic())
            link.stderr = (link.stderr + data)[-4096:]

    def _ended(self, link: _Link) -> None:
        if self.links.get(link.host) is link and self.logic is not None:
            self.logic.end_child(link.host, killed=False)
            self.wake.set()

    def send_down(self, host: str, data: bytes) -> bool:
        link = self.links.get(host)
        return link is not None and link.send(data)

    def close_child(self, host: str, kill: bool) -> tuple[int | None, bytes]:
        link = self.links.pop(host, None)
        if link is None:
            return None, b""
        if kill or link.status is None:
            link.close()  # end of file for the child: it kills its command and its children
        link.ended = True
        return link.status, link.stderr
