"""The server's side of a node agent (the chain's relay.py, BitTorrent's btnode.py), stated once.

Both broadcasts start one stdlib agent per node (`exec python3 -c <source>
<json config>`), read JSON events from its stdout, write JSON commands to its
stdin, and end it the same way: EOF on stdin, a bounded wait for the command to
end, then a kill. The agents are started with `Executor.start_many`: each on
its own SSH channel from the server (flat), or, for as many nodes as make the
executor use its tree, by the tree's agents (the server then holds at most
`tree_arity` connections; the agents' streams travel in the tree's messages).
Both give a `NodeProcess`, which is all this module uses. What differs (the
events, the verdicts' wording of start-up failures) is named by the caller;
the lifecycle lives here so that a fix to it reaches both methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import shlex
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

from kadeploy.broadcast.source import file_digest
from kadeploy.remote import ConnectError, Executor, Launch, NodeProcess

#: the stdlib helpers both agents use (emit, Crc32, new_digest): prepended to each agent's source when sent
NODE_COMMON = Path(__file__).with_name("nodecommon.py")
#: how long an agent has to exit after EOF on its stdin before it is killed
STOP_GRACE = 5.0
#: how long the tail of a failed agent's stderr is waited for
STDERR_WAIT = 2.0


class AgentNode(Protocol):
    """What the lifecycle needs of a caller's per-node record."""

    hostname: str
    address: str
    process: NodeProcess | None


NodeT = TypeVar("NodeT", bound=AgentNode)


@functools.lru_cache(maxsize=4)
def shipped_source(source: Path) -> str:
    """The text a node runs for the agent `source`: the shared helpers, then the agent itself.

    Read once per process: it is the same for every node of every broadcast."""
    return NODE_COMMON.read_text() + "\n\n" + source.read_text()


@functools.lru_cache(maxsize=4)
def _quoted_source(source: Path) -> str:
    return shlex.quote(shipped_source(source))


def agent_line(source: Path) -> str:
    """The part of an agent's command that every node shares: python3 and the whole quoted source."""
    return f"exec python3 -c {_quoted_source(source)}"


def agent_argument(config: Mapping[str, Any]) -> str:
    """A node's own part of its agent's command: its configuration (quoted when appended)."""
    return json.dumps(dict(config))


def agent_command(source: Path, config: Mapping[str, Any]) -> str:
    """The node command that starts an agent: its whole source and its config as quoted arguments."""
    return f"{agent_line(source)} {shlex.quote(agent_argument(config))}"


async def start_many(executor: Executor, nodes: Iterable[AgentNode], source: Path,
                     configs: Mapping[str, Mapping[str, Any]]) -> Launch:
    """Begin starting the agent `source` on `nodes`, each with its own config (flat or tree: the executor's
    choice for that many nodes); each node is then awaited by `start_agent`."""
    nodes = list(nodes)
    return await executor.start_many({node.hostname: node.address for node in nodes}, agent_line(source),
                                     {node.hostname: agent_argument(configs[node.hostname]) for node in nodes})


def expected_digest(image: Path, given: str | None, algorithm: str) -> asyncio.Future[str]:
    """The digest every node's must equal: the one given, or the image's, computed meanwhile."""
    if given is not None:
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        future.set_result(given)
        return future
    return asyncio.ensure_future(file_digest(image, algorithm))


def parse_event(line: bytes) -> dict[str, Any]:
    """One event line of an agent; {} for anything that is not a JSON object."""
    try:
        event = json.loads(line)
    except ValueError:
        return {}
    return event if isinstance(event, dict) else {}


async def start_all(nodes: Iterable[NodeT], window: int, start: Callable[[NodeT], Awaitable[None]]) -> None:
    """`start` every node, at most `window` at once (thousands at once starve each other)."""
    gate = asyncio.Semaphore(max(1, window))

    async def one(node: NodeT) -> None:
        async with gate:
            await start(node)

    await asyncio.gather(*(one(node) for node in nodes))


async def start_agent(launch: Launch, node: AgentNode, timeout: float, label: str,
                      until: Collection[str] = ("ready",)) -> dict[str, Any] | str:
    """Wait for the agent on `node` to run (node.process is set as soon as it runs, so that stop_agents
    ends it) and read its events until one whose kind is in `until`: that event, or why the node failed."""
    try:
        node.process = await launch.start(node.hostname, timeout)
        while True:
            line = await asyncio.wait_for(node.process.stdout.readline(), timeout)
            if not line:
                raise ConnectError(f"{label} did not start: {await stderr_tail(node.process)}")
            event = parse_event(line)
            if event.get("ev") in until:
                return event
    except asyncio.TimeoutError:
        return f"{label} start-up timeout"
    except ConnectError as exc:
        return exc.reason
    except Exception as exc:  # noqa: BLE001 - any failure of one node is that node's KO
        return f"{label} start-up failed: {exc}"


async def events(node: AgentNode, log: Callable[[str], None] | None = None) -> AsyncIterator[dict[str, Any]]:
    """The agent's events until its channel closes (or is lost: keepalive, reset)."""
    assert node.process is not None
    while True:
        try:
            line = await node.process.stdout.readline()
        except Exception as exc:  # noqa: BLE001 - the connection was lost
            if log is not None:
                log(f"channel to {node.hostname} lost: {exc}")
            return
        if not line:
            return
        yield parse_event(line)


async def death_reason(process: NodeProcess, label: str) -> str:
    """Why an agent whose channel closed before its verdict is KO (its exit status, its stderr)."""
    tail = await stderr_tail(process)
    status = process.exit_status
    why = f"exit status {status}" if status is not None else "its connection was lost"
    return f"{label} died ({why}){': ' + tail if tail else ''}"


def verdict(event: Mapping[str, Any], total: int, expected: str) -> str:
    """An agent's `done` event judged: "" when the node has the whole image byte exact and its
    local pipeline succeeded, else the reason it is KO."""
    if int(event.get("received", -1)) != total:
        return f"Incomplete stream: {event.get('received')} of {total} bytes"
    if event.get("digest") != expected:
        return f"Digest mismatch: the node computed {event.get('digest')}, the server {expected}"
    if int(event.get("sink_status", 1)) != 0:
        return (f"Local pipeline failed (exit status {event.get('sink_status')}): "
                f"{event.get('sink_error') or 'no error output'}")
    return ""


def send(process: NodeProcess | None, command: Mapping[str, Any]) -> None:
    """One JSON command line to an agent; a gone agent's channel is not an error here (its watcher decides)."""
    if process is None:
        return
    with contextlib.suppress(Exception):
        process.stdin.write((json.dumps(command) + "\n").encode())


async def stop_agents(processes: Iterable[NodeProcess | None]) -> None:
    """End of a broadcast: close every control channel (EOF), kill what does not exit within STOP_GRACE."""
    running = [process for process in processes if process is not None]
    for process in running:
        with contextlib.suppress(Exception):
            process.stdin.write_eof()

    async def stop(process: NodeProcess) -> None:
        try:
            await asyncio.wait_for(process.wait_closed(), STOP_GRACE)
        except (asyncio.TimeoutError, Exception):  # noqa: BLE001
            await process.kill()

    await asyncio.gather(*(stop(process) for process in running))


async def stderr_tail(process: NodeProcess | None) -> str:
    """The last 500 characters of an agent's stderr (what it said before failing)."""
    if process is None:
        return ""
    try:
        data = await asyncio.wait_for(process.stderr.read(65536), STDERR_WAIT)
    except (asyncio.TimeoutError, Exception):  # noqa: BLE001
        data = b""
    return (process.first_stderr + data).decode("utf-8", "replace").strip()[-500:]
