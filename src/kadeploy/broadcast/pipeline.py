"""The coordinator of a relay pipeline (chain, fault-tolerant chain, tree).

Starts one relay per node (the executor's long-lived processes,
`Executor.start_many`: one SSH channel each, or through the executor's tree
for as many nodes as make it use its tree), wires each one to its children,
feeds the first node(s) from the server, and decides every node's fate from
the relays' events and from their channels: a channel that closes before
`done` (or a tree stream that ends, its relay lost) is a dead node. With `repair` (the
fault-tolerant chain, and the tree) a dead node is announced to every relay:
in the chain its predecessor moves on to the next live node; in the tree its
parent (a relay, or the server) adopts its children, each resumed at its own
offset. Without it (`chain`), the nodes below a dead node are failed at once
(Kastafior's semantics).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kadeploy.broadcast import agents
from kadeploy.broadcast.result import BroadcastResult
from kadeploy.cancelling import cancel_and_wait
from kadeploy.broadcast.source import SourceSender, Target
from kadeploy.broadcast.topology import descendants, tree_children
from kadeploy.remote import Executor, Launch, NodeProcess
from kadeploy.states import BroadcastState

log = logging.getLogger("kadeploy.broadcast")

RELAY_SOURCE = Path(__file__).with_name("relay.py")


#: how many successors a kascade relay may fall back to when its next node dies
REPAIR_WINDOW = 64
#: unanswered SSH keepalives after which a relay's node is dead (spread over `stall` seconds)
LIVENESS_PROBES = 2
#: Ring buffer per relay (at least relay.MIN_RING, 32 MiB). Every byte of it is fresh memory
#: the relay touches (up to the image size): 1.2 GB/s on a VM, i.e. 0.8 CPU-s per GiB and
#: node with 256 MiB and a 256 MiB image, as much as the stream's sha256; it is also RAM
#: taken from the deploy system. benchmarks/broadcast.py --nodes 16 --size 256, 2 shared
#: cores, ring 256 -> 64 MiB: kascade 7.20 -> 5.17 s, chain 7.09 -> 5.40 s, tree 6.60 -> 5.26 s.
#: 32 MiB (MIN_RING) still keeps 24 MiB behind each child for repairs (relay.repair_retention:
#: twice what the <= 2 x 4 MiB in flight need), but lets a relay run only 8 MiB ahead of its
#: slowest child (16 MiB with 64). 64 -> 32 MiB: 2.13-2.27 -> 1.93-1.97 CPU-s per GiB and node
#: for 16 relays in network namespaces fed over TCP, 256 MiB, sha256, zero copy (no SSH).
DEFAULT_RING = 32 * 1024 * 1024


def relay_command(config: Mapping[str, Any]) -> str:
    """The node command that starts the relay: its whole source as a quoted argument."""
    return agents.agent_command(RELAY_SOURCE, config)


@dataclass
class PipelineOptions:
    """Tuning of the node relays; defaults suit images of a few GiB on 1-10 GbE."""

    stall: float = 30.0               # a child taking no data for this long is dead
    connect_timeout: float = 10.0     # relay-to-relay TCP connection
    start_timeout: float = 30.0       # SSH connection + relay start-up, per node, once its start began
    start_window: int = 128           # relays being started at once (thousands at once starve each other)
    ring: int = DEFAULT_RING          # ring buffer per node (capped at the image size)
    digest: str = "sha256"
    port: int = 0                     # 0 = ephemeral, reported by each relay
    relay_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # per host (test hooks)


@dataclass
class _Node:
    index: int
    hostname: str
    address: str
    process: NodeProcess | None = None
    port: int | None = None
    state: BroadcastState = BroadcastState.PENDING
    reason: str = ""


class Pipeline:
    """One broadcast over relays; `await Pipeline(...).run(timeout)`."""

    def __init__(self, image: Path, total: int, order: Sequence[tuple[str, str]], sink_command: str, *,
                 executor: Executor, method: str, tree_arity: int, options: PipelineOptions,
                 digest: str | None = None) -> None:
        self._image = image
        self._total = total
        self._nodes = [_Node(index, hostname, address) for index, (hostname, address) in enumerate(order)]
        self._by_host = {node.hostname: node for node in self._nodes}
        self._pending = len(self._nodes)
        self._position: dict[str, int] = {}      # hostname -> position in `_live`
        self._parent: dict[int, int] = {}        # tree: position -> parent position (-1: the server)
        self._sink_command = sink_command
        self._executor = executor
        self._method = method
        self._repair = method in ("kascade", "tree")
        self._tree_arity = tree_arity
        self._options = options
        self._given_digest = digest
        self._digest_task: asyncio.Future[str] | None = None
        self._dead: set[str] = set()
        self._senders: list[SourceSender] = []
        self._layout: dict[int, list[int]] = {}
        self._live: list[_Node] = []
        self._targets: list[Target] = []
        self._tasks: list[asyncio.Future[Any]] = []
        self._node_cpu = 0.0
        self._decided = asyncio.Event()
        self._background: set[asyncio.Future[Any]] = set()
        self._launch: Launch | None = None

    async def run(self, timeout: float | None) -> BroadcastResult:
        started = time.monotonic()
        self._digest_task = agents.expected_digest(self._image, self._given_digest, self._options.digest)
        tasks = self._tasks
        try:
            await asyncio.wait_for(self._stream(), timeout)
        except asyncio.TimeoutError:
            log.warning("broadcast: timeout after %gs; pending: %s", timeout,
                        ", ".join(n.hostname for n in self._nodes if n.state == BroadcastState.PENDING))
            for node in self._nodes:
                if node.state == BroadcastState.PENDING:
                    self._set(node, BroadcastState.KO, f"Broadcast timeout after {timeout:g}s")
        finally:
            await cancel_and_wait(tasks, "broadcast task")  # bounded: the relays must be stopped below
            await self._stop_relays()
        digest = await self._digest_task
        result = BroadcastResult(seconds=time.monotonic() - started, digest=digest, node_cpu_seconds=self._node_cpu)
        for node in self._nodes:
            result.record(node.hostname, node.state == BroadcastState.OK, node.reason)
        return result

    async def _stream(self) -> None:
        self._launch = await agents.start_many(self._executor, self._nodes, RELAY_SOURCE,
                                               {node.hostname: self._relay_config(node) for node in self._nodes})
        await agents.start_all(self._nodes, self._options.start_window, self._start_relay)
        live = [node for node in self._nodes if node.state == BroadcastState.PENDING]
        if not live:
            return
        self._wire(live)
        for node in live:
            self._tasks.append(asyncio.ensure_future(self._watch(node)))
        for sender in self._senders:
            self._tasks.append(asyncio.ensure_future(sender.run()))
        self._check_decided()
        await self._decided.wait()

    def _relay_config(self, node: _Node) -> dict[str, Any]:
        config: dict[str, Any] = {
            "total": self._total, "sink": self._sink_command, "stall": self._options.stall,
            "connect_timeout": self._options.connect_timeout, "ring": self._options.ring,
            "digest": self._options.digest, "port": self._options.port,
        }
        config.update(self._options.relay_options.get(node.hostname, {}))
        return config

    async def _start_relay(self, node: _Node) -> None:
        assert self._launch is not None
        ready = await agents.start_agent(self._launch, node, self._options.start_timeout, "Relay")
        if isinstance(ready, str):
            self._set(node, BroadcastState.KO, ready)
            return
        assert node.process is not None
        try:
            node.port = int(ready["port"])
            # a node that loses power is silent: its channel must close within `stall`
            interval = max(1.0, self._options.stall / (LIVENESS_PROBES + 1))
            node.process.watch_liveness(interval, LIVENESS_PROBES)
        except Exception as exc:  # noqa: BLE001 - any failure of one node is that node's KO
            self._set(node, BroadcastState.KO, f"Relay start-up failed: {exc}")

    def _wire(self, live: list[_Node]) -> None:
        """Tell each relay its children (and fallbacks), create the server's senders."""
        targets = [Target(node.hostname, node.address, node.port or 0) for node in live]
        if self._method == "tree":
            layout = tree_children(len(live), self._tree_arity)
            children_of = {index: [[targets[child]] for child in kids] for index, kids in layout.items()}
        elif self._repair:
            layout = {index: [index + 1] if index + 1 < len(live) else [] for index in range(-1, len(live))}
            # each relay knows a bounded window of fallbacks: O(N) start messages instead of
            # O(N^2) (320 MB of JSON at 4,000 nodes); only a run of REPAIR_WINDOW consecutive
            # dead nodes breaks the chain
            children_of = {index: [targets[index + 1:index + 1 + REPAIR_WINDOW]] if index + 1 < len(live) else []
                           for index in range(-1, len(live))}
        else:
            layout = {index: [index + 1] if index + 1 < len(live) else [] for index in range(-1, len(live))}
            children_of = {index: [[targets[index + 1]]] if index + 1 < len(live) else [] for index in range(-1, len(live))}
        # layout indexes are positions in `live`; keep them for failure propagation and tree repair
        self._layout = {index: kids for index, kids in layout.items()}
        self._live = live
        self._position = {node.hostname: position for position, node in enumerate(live)}
        self._parent = {kid: index for index, kids in layout.items() for kid in kids}
        self._targets = targets
        for position, node in enumerate(live):
            children = [[[t.hostname, t.address, t.port] for t in chain] for chain in children_of[position]]
            command: dict[str, Any] = {"op": "start", "children": children, "repair": self._repair}
            if self._method == "tree":
                command["below"] = self._below(position)
            self._send(node, command)
        for chain in children_of[-1]:
            self._add_sender(chain)

    def _below(self, position: int) -> dict[str, list[list[Any]]]:
        """Tree repair: every inner node under `position` -> its children, so that a relay can
        adopt the children of a dead child (and of a dead grandchild) without asking the server.
        O(N log N) in all; the root of a binary tree of 4,000 nodes gets ~200 kB."""
        below: dict[str, list[list[Any]]] = {}
        for index in descendants(self._layout, position):
            kids = self._layout.get(index, [])
            if kids:
                target = self._targets[index]
                below[target.hostname] = [[self._targets[k].hostname, self._targets[k].address,
                                           self._targets[k].port] for k in kids]
        return below

    def _add_sender(self, chain: Sequence[Target]) -> SourceSender:
        sender = SourceSender(
            self._image, self._total, chain, repair=self._repair, stall=self._options.stall,
            connect_timeout=self._options.connect_timeout, dead=self._dead,
            on_failure=lambda host, reason: self._failed(host, f"Bypassed by the server: {reason}"),
            on_orphans=self._server_adopts if self._method == "tree" else None)
        self._senders.append(sender)
        return sender

    def _server_adopts(self, hostname: str) -> None:
        """Tree repair at the top: a node the server fed is dead, the server feeds its children
        (a dead child's own children in turn, through its sender's `on_orphans`)."""
        position = self._position.get(hostname)
        if position is None:
            return
        for child in self._layout.get(position, []):
            log.info("broadcast: the server adopts %s (below dead %s)", self._targets[child].hostname, hostname)
            sender = self._add_sender([self._targets[child]])
            self._tasks.append(asyncio.ensure_future(sender.run()))

    async def _watch(self, node: _Node) -> None:
        """Read one relay's events until its channel closes."""
        assert node.process is not None
        async for event in agents.events(node, lambda message: log.info("broadcast: %s", message)):
            kind = event.get("ev")
            if kind == "done":
                await self._finished(node, event)
            elif kind == "adopt":
                log.info("broadcast: %s adopts %s (below dead %s) at offset %s", node.hostname,
                         event.get("host"), event.get("dead"), event.get("offset"))
            elif kind == "bypass":
                log.info("broadcast: %s bypassed %s: %s", node.hostname, event.get("host"), event.get("reason"))
                self._failed(str(event.get("host")), f"Bypassed by {node.hostname}: {event.get('reason')}")
            elif kind == "error":
                log.warning("relay on %s: %s", node.hostname, event.get("message"))
        if not self._decided.is_set():
            # A channel that closes mid-broadcast is a dead relay: KO if it had not
            # finished, and routed around in any case (its successors still need data).
            self._failed(node.hostname, await agents.death_reason(node.process, "Relay"))

    async def _finished(self, node: _Node, event: Mapping[str, Any]) -> None:
        assert self._digest_task is not None
        self._node_cpu += float(event.get("cpu", 0.0) or 0.0)
        expected = await self._digest_task
        if node.state != BroadcastState.PENDING:
            return
        reason = agents.verdict(event, self._total, expected)
        self._set(node, BroadcastState.KO if reason else BroadcastState.OK, reason)

    def _failed(self, hostname: str, reason: str) -> None:
        """A node is dead or unreachable from its parent: KO it and route around it."""
        node = self._by_host.get(hostname)
        if node is None:
            return
        first_news = hostname not in self._dead
        self._dead.add(hostname)
        log.info("broadcast: %s failed (%s, first news: %s, state %s)", hostname, reason, first_news, node.state)
        if node.state == BroadcastState.PENDING:
            self._set(node, BroadcastState.KO, reason)
        if not first_news:
            return
        self._spawn(self._kill(node))
        if self._repair:
            for other in self._may_forward_to(hostname):
                self._send(other, {"op": "dead", "host": hostname})
            for sender in self._senders:
                sender.abort(hostname)
        else:
            position = self._position.get(hostname)
            if position is not None:
                for below in descendants(self._layout, position):
                    cut = self._live[below]
                    if cut.state == BroadcastState.PENDING:
                        self._set(cut, BroadcastState.KO, f"Broadcast chain broken at {hostname}")
                        self._spawn(self._kill(cut))

    def _may_forward_to(self, hostname: str) -> list[_Node]:
        """The relays that could ever send to `hostname`: only they need to hear it is dead.

        Telling every relay made each failure cost O(N) channel writes: with a
        thousand failures at 4,000 nodes the event loop was blocked for 90 s.
        Kascade: the REPAIR_WINDOW predecessors whose fallback lists hold it.
        Tree: its ancestors, which adopt the children of a dead descendant.
        """
        position = self._position.get(hostname)
        if position is None:
            return []
        if self._method == "tree":
            found = []
            parent = self._parent.get(position, -1)
            while parent >= 0:
                found.append(self._live[parent])
                parent = self._parent.get(parent, -1)
            return found
        return self._live[max(0, position - REPAIR_WINDOW):position]

    def _set(self, node: _Node, state: BroadcastState, reason: str = "") -> None:
        if node.state == BroadcastState.PENDING and state != BroadcastState.PENDING:
            self._pending -= 1
        node.state = state
        node.reason = reason
        self._check_decided()

    def _check_decided(self) -> None:
        if self._pending <= 0:
            self._decided.set()

    def _send(self, node: _Node, command: Mapping[str, Any]) -> None:
        agents.send(node.process, command)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _kill(self, node: _Node) -> None:
        if node.process is not None:
            await node.process.kill()

    async def _stop_relays(self) -> None:
        """End of the broadcast: close every control channel, kill what does not exit."""
        await agents.stop_agents(node.process for node in self._nodes)
        if self._launch is not None:
            await self._launch.close()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
