"""The tree mode's bookkeeping: which node is queued, granted to which relay, started, done.

Pure logic, no I/O (unit-tested on its own). The server is the only scheduler
of a tree run: agents ask for work (`want`, their free child slots) and get
nodes from one queue, so nothing is assigned ahead of a free slot and a slow
branch simply asks less often (TakTuk's adaptive work stealing, with the
server as the one pool every idle relay steals from). A relay that is lost
(dead, or silent for the stall time) gives back the nodes of its subtree that
had not reported `started`; the ones that had are failed with a clear error
(their commands were cut with the relay, never rerun), and the ones that have
a result keep it. A node given back may in fact have started behind a stalled
relay: the per-run lock on the node refuses a second start, so no node ever
runs twice.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

from kadeploy.remote.result import CommandResult


class Ledger:
    """The state of one tree run, updated from the agents' events."""

    def __init__(self, hosts: Mapping[str, str]) -> None:
        self.address = dict(hosts)
        self._order = {host: index for index, host in enumerate(hosts)}
        self.queue: deque[str] = deque(hosts)
        #: the agent a node was granted to (None: started by the server itself, first level)
        self.parent: dict[str, str | None] = {}
        self.children: dict[str | None, set[str]] = {None: set()}
        self.started: set[str] = set()
        self.results: dict[str, CommandResult] = {}
        #: agents waiting for work: agent -> how many nodes it can still take
        self.parked: dict[str, int] = {}
        #: how many times each node was given to an agent or the server (the tests read it)
        self.grants: dict[str, int] = {}
        #: nodes whose result was decided, in order, for a caller that follows them (a stream run)
        self.decided: list[str] = []

    @property
    def done(self) -> bool:
        return len(self.results) == len(self.address)

    def first_level(self, free: int) -> list[str]:
        """Nodes the server starts itself, for `free` free first-level slots."""
        return self._take(None, free)

    def root(self, agent: str) -> str | None:
        """The first-level agent whose link carries messages to `agent` (None if not in the tree)."""
        node: str | None = agent
        while node is not None:
            parent = self.parent.get(node, "")
            if parent == "":
                return None
            if parent is None:
                return node
            node = parent
        return None

    def want(self, agent: str, count: int) -> list[tuple[str, str]]:
        """An agent has `count` free slots: grant what the queue holds, park the rest of the wish."""
        if agent not in self.parent:
            return []
        granted = self._take(agent, count)
        if len(granted) < count:
            self.parked[agent] = count - len(granted)
        else:
            self.parked.pop(agent, None)
        return [(host, self.address[host]) for host in granted]

    def dispatch(self) -> dict[str, list[tuple[str, str]]]:
        """Grants for parked wants, after nodes were given back to the queue."""
        grants: dict[str, list[tuple[str, str]]] = {}
        for agent in list(self.parked):
            if not self.queue:
                break
            count = self.parked.pop(agent)
            nodes = self.want(agent, count)
            if nodes:
                grants[agent] = nodes
        return grants

    def on_started(self, host: str) -> None:
        if host in self.parent:
            self.started.add(host)

    def on_result(self, result: CommandResult) -> bool:
        """Record a node's result; False for a node not in the tree or already decided."""
        if result.hostname not in self.parent or result.hostname in self.results:
            return False
        self._decide(result)
        return True

    def on_failed(self, host: str, error: str) -> None:
        """The node could not be reached (its agent never started): that is its result."""
        if host in self.parent and host not in self.results:
            self._decide(CommandResult(host, None, error=error))
        self._detach(host)

    def drop_queue(self, error: str) -> None:
        """The caller wants no more node started: every queued node gets `error` as its result."""
        while self.queue:
            host = self.queue.popleft()
            if host not in self.results:
                self._decide(CommandResult(host, None, error=error))
        self.parked.clear()

    def give_up(self, error: str) -> None:
        """No relay is left: every undecided node gets `error` as its result."""
        for host in self.address:
            if host not in self.results:
                self._decide(CommandResult(host, None, error=error))

    def on_lost(self, agent: str) -> list[str]:
        """A relay went away: its subtree's unstarted nodes go back to the queue (returned)."""
        if agent not in self.parent:
            return []
        requeued: list[str] = []
        self._detach(agent)
        for node in self._subtree(agent):
            self.parked.pop(node, None)
            if node not in self.results:
                if node in self.started:
                    self._decide(CommandResult(
                        node, None, error=f"Relay {agent} lost: the command had started on this node, "
                                          "it was stopped and its result did not come back"))
                else:
                    requeued.append(node)
            self.children.pop(node, None)
            self.parent.pop(node, None)
            self.started.discard(node)
        # given back in front, in the caller's order: they were due before the nodes still queued
        requeued.sort(key=self._order.__getitem__)
        self.queue.extendleft(reversed(requeued))
        return requeued

    def _decide(self, result: CommandResult) -> None:
        self.results[result.hostname] = result
        self.decided.append(result.hostname)

    def _take(self, agent: str | None, count: int) -> list[str]:
        taken = []
        while self.queue and len(taken) < count:
            host = self.queue.popleft()
            self.parent[host] = agent
            self.children.setdefault(agent, set()).add(host)
            self.grants[host] = self.grants.get(host, 0) + 1
            taken.append(host)
        return taken

    def _detach(self, host: str) -> None:
        parent = self.parent.get(host, "")
        if parent != "":
            self.children.get(parent, set()).discard(host)

    def _subtree(self, agent: str) -> list[str]:
        nodes, todo = [], [agent]
        while todo:
            node = todo.pop()
            nodes.append(node)
            todo.extend(self.children.get(node, ()))
        return nodes
