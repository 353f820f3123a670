"""The tree mode's bookkeeping: which node is queued, granted to which relay, started, done.

Pure logic, no I/O (unit-tested on its own). The server is the only scheduler
of a tree run: agents ask for work (`want`, their free child slots) and get
nodes from one queue, so nothing is assigned ahead of a free slot and a slow
branch simply asks less often (TakTuk's adaptive work stealing, with the
server as the one pool every idle relay steals from).

The queue keeps the nodes' order (the caller's, by name: nodes next to each
other in a cluster's numbering share a rack and a switch) and grants by it
(`NodeQueue`): the first level is spread over the whole list, and a relay
gets the queued nodes that follow its own, so each first-level subtree grows
over a run of neighbours and its links stay within them. A relay whose
neighbours are all taken gets the next queued ones further on: stealing is
not limited by it. (On the fake testbed, links between worker processes are
real SSH handshakes while links within one are not: grants in plain queue
order made nearly every node of the second worker a cross-worker link.)

A relay that is lost (its parent's link to it ended, or it was silent for the
stall time and cut off) is granted again to its parent (`rejoin`), beyond
that parent's arity: if its agent is alive, an orphan waiting with its
command and subtree (`agent.py`), the new link adopts it and nothing of its
subtree is lost; it then lists its children (`synced`), and a node it had
been granted but does not hold is granted to it again. If the node answers
`gone` (its agent died: the run lock is taken and nobody listens), or no
join succeeds in MAX_JOINS tries, the node is decided (a started command is
lost, never rerun) and its children are granted to its own parent in turn.
The per-run lock on each node means no node ever runs twice; results keep
what they had.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping

from kadeploy.remote.result import CommandResult

#: how many times a lost relay is granted again before it is taken as gone
MAX_JOINS = 2


class NodeQueue:
    """Queued nodes in their order, taken spread out (the first level) or after a relay's own place."""

    def __init__(self, hosts: Iterable[str]) -> None:
        self._rank: dict[str, int] = {}
        self._hosts: list[str] = []
        #: the queued nodes' ranks, ascending
        self._pending: list[int] = []
        for host in hosts:
            self.append(host)

    def __len__(self) -> int:
        return len(self._pending)

    def __iter__(self) -> Iterator[str]:
        return (self._hosts[rank] for rank in self._pending)

    def append(self, host: str) -> None:
        """Queue `host` (last in the order if it is new)."""
        if host not in self._rank:
            self._rank[host] = len(self._hosts)
            self._hosts.append(host)
        rank = self._rank[host]
        index = bisect_left(self._pending, rank)
        if index == len(self._pending) or self._pending[index] != rank:
            self._pending.insert(index, rank)

    def spread(self, count: int) -> list[str]:
        """`count` nodes evenly spaced over the queue (the first of them the first queued)."""
        total = len(self._pending)
        indexes = sorted({index * total // count for index in range(count)}) if count and total else []
        taken = [self._hosts[self._pending[index]] for index in indexes]
        for index in reversed(indexes):
            del self._pending[index]
        return taken

    def after(self, host: str, count: int) -> list[str]:
        """The `count` queued nodes that follow `host` in the order, going round to the first ones."""
        start = bisect_left(self._pending, self._rank.get(host, len(self._hosts)))
        ranks = self._pending[start:start + count]
        del self._pending[start:start + count]
        if len(ranks) < count:
            more = self._pending[:count - len(ranks)]
            del self._pending[:count - len(ranks)]
            ranks += more
        return [self._hosts[rank] for rank in ranks]


class Ledger:
    """The state of one tree run, updated from the agents' events."""

    def __init__(self, hosts: Mapping[str, str]) -> None:
        self.address = dict(hosts)
        self._order = {host: index for index, host in enumerate(hosts)}
        self.queue = NodeQueue(hosts)
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
        #: nodes to grant again to their parent (their link was lost): node -> joins tried so far
        self.rejoin: dict[str, int] = {}
        #: nodes of `rejoin` granted again, waiting for their hello or their failure
        self.joining: set[str] = set()
        #: what happened to lost relays, for the run's log: lost, adopted, started afresh, gone
        self.counts = {"lost": 0, "adopted": 0, "afresh": 0, "gone": 0}
        #: the first nodes decided as gone, for the run's log
        self.gone_sample: list[str] = []

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

    def reachable(self, agent: str) -> bool:
        """Whether a message to `agent` gets through: it and every relay above it hold their link."""
        node: str | None = agent
        while node is not None:
            if node in self.rejoin or node not in self.parent:
                return False
            node = self.parent[node]
        return True

    def want(self, agent: str, count: int) -> list[tuple[str, str]]:
        """An agent has `count` free slots: grant what the queue holds, park the rest of the wish."""
        if not self.reachable(agent):
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
            if not self.reachable(agent):
                continue  # kept parked: its want stands once it is adopted
            count = self.parked.pop(agent)
            nodes = self.want(agent, count)
            if nodes:
                grants[agent] = nodes
        return grants

    def joins(self) -> tuple[dict[str, list[tuple[str, str]]], list[str]]:
        """The lost relays to grant again now: grants to their (reachable) parents, and the first-level
        ones the server links to itself."""
        grants: dict[str, list[tuple[str, str]]] = {}
        links: list[str] = []
        for host in sorted(self.rejoin, key=self._order.__getitem__):
            if host in self.joining:
                continue
            parent = self.parent.get(host, "")
            if parent is None:
                links.append(host)
            elif parent != "" and self.reachable(parent):
                grants.setdefault(parent, []).append((host, self.address[host]))
            else:
                continue
            self.joining.add(host)
            self.rejoin[host] += 1
        return grants, links

    def on_hello(self, host: str, adopted: bool) -> None:
        """A joining node answered: afresh (no agent of the run was there; what it had been granted goes
        again), or adopted (wait for its `synced`)."""
        if host in self.joining and not adopted:
            self.counts["afresh"] += 1
            self._joined(host, ())

    def on_synced(self, host: str, children: list[str]) -> None:
        """An adopted node replayed its journal and holds `children` (a node granted to it that it
        does not hold is granted to it again: the grant died with its old link)."""
        if host in self.parent:
            if host in self.joining:
                self.counts["adopted"] += 1
            self._joined(host, children)

    def on_kept(self, host: str, by: str) -> None:
        """`by`, granted `host` again, still held it: nothing was lost on that link."""
        if host in self.joining and self.parent.get(host, "") == by:
            self.rejoin.pop(host, None)
            self.joining.discard(host)

    def on_gone(self, host: str, error: str) -> None:
        """The node's agent of this run died (its lock is taken, nobody answers)."""
        if host in self.parent:
            self._gone(host, error)

    def _joined(self, host: str, live: list[str] | tuple[()]) -> None:
        if host in self.joining:
            self.rejoin.pop(host, None)
            self.joining.discard(host)
        for child in self.children.get(host, ()):
            if child in live or not self._undecided(child):
                continue
            if child not in self.rejoin:
                self.rejoin[child] = 0  # granted to it but not held (the grant died with a lost link)
            else:
                self.joining.discard(child)  # its join's grant died too: granted again

    def _gone(self, host: str, error: str) -> None:
        """Decide `host` (a started command is lost), hand its children to its parent, drop it."""
        self.counts["gone"] += 1
        if len(self.gone_sample) < 3:
            self.gone_sample.append(host)
        self.rejoin.pop(host, None)
        self.joining.discard(host)
        if host not in self.results:
            if host in self.started:
                error = (f"Relay {host} lost: the command had started on this node, "
                         "it was stopped and its result did not come back")
            self._decide(CommandResult(host, None, error=error))
        parent = self.parent.get(host)
        for child in self.children.pop(host, set()):
            self.parent[child] = parent
            self.children.setdefault(parent, set()).add(child)
            self.joining.discard(child)
            if self._undecided(child):
                self.rejoin[child] = 0
            else:
                self.rejoin.pop(child, None)
        self._detach(host)
        self.parent.pop(host, None)
        self.parked.pop(host, None)
        self.started.discard(host)

    def _undecided(self, node: str) -> bool:
        return any(host not in self.results for host in self._subtree(node))

    def on_started(self, host: str) -> None:
        if host in self.parent:
            self.started.add(host)

    def on_result(self, result: CommandResult) -> bool:
        """Record a node's result; False for a node not in the tree or already decided."""
        if result.hostname not in self.parent or result.hostname in self.results:
            return False
        self._decide(result)
        return True

    def on_failed(self, host: str, error: str, by: str | None = None) -> None:
        """`by` (None: the server) could not reach the node (its agent never said hello): that is its
        result; for a joining node, one more failed try."""
        if host not in self.parent or self.parent[host] != by:
            return  # not (or no longer) that relay's child
        if host in self.rejoin:
            self._failed_join(host, error)
            return
        if host not in self.results:
            self._decide(CommandResult(host, None, error=error))
        self._detach(host)
        self.parent.pop(host, None)

    def drop_queue(self, error: str) -> None:
        """The caller wants no more node started: every queued node gets `error` as its result."""
        for host in self.queue.spread(len(self.queue)):
            if host not in self.results:
                self._decide(CommandResult(host, None, error=error))
        self.parked.clear()

    def give_up(self, error: str) -> None:
        """No relay is left: every undecided node gets `error` as its result."""
        for host in self.address:
            if host not in self.results:
                self._decide(CommandResult(host, None, error=error))

    def on_lost(self, agent: str, by: str | None = None, error: str | None = None) -> None:
        """`by` (None: the server) lost its link to `agent`, which had said hello or was cut off for
        its silence (`error`: why): grant it again."""
        if agent not in self.parent or self.parent[agent] != by:
            return  # not (or no longer) that relay's child
        if agent in self.rejoin:
            if agent in self.joining:
                self._failed_join(agent, error or f"Relay {agent} lost: its link ended again after it was rejoined")
            return
        if self._undecided(agent):
            self.counts["lost"] += 1
            self.rejoin[agent] = 0
            return
        # nothing of its subtree is left to decide: it is only dropped (messages to it would not pass)
        self._detach(agent)
        for node in self._subtree(agent):
            self.parked.pop(node, None)
            self.children.pop(node, None)
            self.parent.pop(node, None)

    def _failed_join(self, host: str, error: str) -> None:
        self.joining.discard(host)
        if self.rejoin[host] >= MAX_JOINS:
            self._gone(host, error)

    def _decide(self, result: CommandResult) -> None:
        self.results[result.hostname] = result
        self.decided.append(result.hostname)

    def _take(self, agent: str | None, count: int) -> list[str]:
        taken = self.queue.spread(count) if agent is None else self.queue.after(agent, count)
        for host in taken:
            self.parent[host] = agent
            self.children.setdefault(agent, set()).add(host)
            self.grants[host] = self.grants.get(host, 0) + 1
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
