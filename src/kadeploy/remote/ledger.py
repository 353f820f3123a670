"""The tree mode's bookkeeping: which node is queued, granted to which relay, started, done.

Pure logic, no I/O (unit-tested on its own). The server is the only scheduler
of a tree run: agents ask for work (`want`, their free child slots) and get
nodes from one queue, so nothing is assigned ahead of a free slot and a slow
branch simply asks less often (TakTuk's adaptive work stealing, with the
server as the one pool every idle relay steals from).

The queue keeps the nodes' order (the caller's, by name: nodes next to each
other in a cluster's numbering share a rack and a switch) and grants by it
(`NodeQueue`): every subtree is for a run of neighbours (its span), split
among its children as they are granted, so few links cross from one run to
another. A relay with free slots and nothing queued in its span waits
(parked) until a relay is late to ask for its own span (`STEAL_AFTER`) or
failed, and then takes that span whole. (On the fake testbed, links between
worker processes are real SSH handshakes while links within one are not:
grants in plain queue order made nearly every node of the second worker a
cross-worker link.)

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

import itertools
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping

from kadeploy.remote.result import CommandResult

#: how many times a lost relay is granted again before it is taken as gone
MAX_JOINS = 2
#: seconds a granted relay has to ask for its span's nodes before an idle relay may take them
STEAL_AFTER = 2.0


class NodeQueue:
    """Queued nodes in their order, each granted with a span: the run of neighbours its subtree is for.

    A relay is granted the queued nodes of its own span, split in as many
    contiguous parts as it has free slots (each child heads one part and gets
    it as its span): subtrees are runs of neighbours laid out in preorder, and
    a run of nodes is crossed by a handful of links (about one per level), not
    by every node past it. The server's span is the whole order. Stealing
    (`Ledger.dispatch`) takes a late relay's span whole (`steal`).
    """

    def __init__(self, hosts: Iterable[str]) -> None:
        self._rank: dict[str, int] = {}
        self._hosts: list[str] = []
        #: the queued nodes' ranks, ascending
        self._pending: list[int] = []
        #: the ranks [low, high) a granted node's subtree is for
        self._span: dict[str, tuple[int, int]] = {}
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

    def drain(self) -> list[str]:
        """Every queued node, in order; the queue is left empty."""
        hosts, self._pending = [self._hosts[rank] for rank in self._pending], []
        return hosts

    def rank(self, host: str) -> int:
        """`host`'s place in the order."""
        return self._rank[host]

    def take(self, holder: str | None, count: int) -> list[str]:
        """Up to `count` queued nodes of `holder`'s span (None: the server, whose span is everything),
        each heading a contiguous part of it."""
        return self._split(*self._below(holder), count)

    def has_work(self, holder: str) -> bool:
        """Whether `holder`'s span still holds queued nodes (besides itself)."""
        low, high = self._below(holder)
        return bisect_left(self._pending, high) > bisect_left(self._pending, low)

    def steal(self, victim: str, count: int) -> list[str]:
        """The queued nodes of `victim`'s span, split in up to `count` parts for a thief; the victim keeps
        only itself."""
        taken = self.take(victim, count)
        rank = self._rank[victim]
        self._span[victim] = (rank, rank + 1)
        return taken

    def _below(self, holder: str | None) -> tuple[int, int]:
        """The ranks of `holder`'s span without `holder` itself (None: the whole order)."""
        if holder is None:
            return 0, len(self._hosts)
        rank = self._rank.get(holder, len(self._hosts))
        low, high = self._span.get(holder, (rank, rank + 1))
        return max(low, rank + 1), high

    def _split(self, low: int, high: int, count: int) -> list[str]:
        first = bisect_left(self._pending, low)
        inside = self._pending[first:bisect_left(self._pending, high)]
        parts = min(count, len(inside))
        if not parts:
            return []
        heads = [inside[part * len(inside) // parts] for part in range(parts)]
        for head, end in zip(heads, heads[1:] + [high]):
            self._span[self._hosts[head]] = (head, end)
        for head in reversed(heads):
            del self._pending[bisect_left(self._pending, head)]
        return [self._hosts[head] for head in heads]


class Ledger:
    """The state of one tree run, updated from the agents' events."""

    def __init__(self, hosts: Mapping[str, str], *, steal_after: float = STEAL_AFTER,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.address = dict(hosts)
        self._steal_after = steal_after
        self._clock = clock
        #: granted nodes in grant order, with when: the relays a thief may take a span from once late
        self._granted_at: deque[tuple[float, str]] = deque()
        #: granted nodes that will never ask (their agent failed or is gone): their span may go at once
        self._never: deque[str] = deque()
        #: relays that asked for work at least once (their span is theirs to split)
        self.asked: set[str] = set()
        #: nodes granted to a thief from a late or failed relay's span (for the run's log)
        self.stolen = 0
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

    def first_level(self, free: int, alone: bool = False) -> list[str]:
        """Nodes the server starts itself, for `free` free first-level slots: at the start (or `alone`,
        no first-level link left) the queue spread over them; then a late relay's span, if any."""
        if not free:
            return []
        if not self.parent or alone:
            return self._take(None, self.queue.take(None, free))
        victim = self._late()
        return self._take(None, self.queue.steal(victim, free)) if victim is not None else []

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
        """An agent has `count` free slots: grant what its span holds, park the rest of the wish."""
        if not self.reachable(agent):
            return []
        self.asked.add(agent)
        granted = self._take(agent, self.queue.take(agent, count))
        if len(granted) < count:
            self.parked[agent] = count - len(granted)
        else:
            self.parked.pop(agent, None)
        return [(host, self.address[host]) for host in granted]

    def dispatch(self) -> dict[str, list[tuple[str, str]]]:
        """Grants for parked wants: a relay idle while a late one (granted `steal_after` ago and not
        asking yet, or failed) has queued nodes in its span takes that span (TakTuk's work stealing).

        Called after every event: a victim is looked for first, the parked relays (thousands of idle
        leaves) only walked when there is one."""
        grants: dict[str, list[tuple[str, str]]] = {}
        if not self.parked:
            return grants
        thieves = iter(list(self.parked))
        while self.queue:
            victim = self._late()
            if victim is None:
                break
            thief = next((agent for agent in thieves if agent in self.parked and self.reachable(agent)), None)
            if thief is None:
                self._never.appendleft(victim)  # nobody to take it now: first in line next time
                break
            count = self.parked.pop(thief)
            taken = self._take(thief, self.queue.steal(victim, count))
            self.stolen += len(taken)
            grants.setdefault(thief, []).extend((host, self.address[host]) for host in taken)
            if len(taken) < count:
                self.parked[thief] = count - len(taken)
                thieves = itertools.chain(thieves, [thief])  # its turn again after the others
        return grants

    def _late(self) -> str | None:
        """The next relay whose span may be stolen: failed ones first, then the longest late to ask."""
        while self._never:
            host = self._never.popleft()
            if self.queue.has_work(host):
                return host
        deadline = self._clock() - self._steal_after
        while self._granted_at and self._granted_at[0][0] <= deadline:
            _, host = self._granted_at.popleft()
            if host not in self.asked and self.queue.has_work(host):
                return host
        return None

    def joins(self) -> tuple[dict[str, list[tuple[str, str]]], list[str]]:
        """The lost relays to grant again now: grants to their (reachable) parents, and the first-level
        ones the server links to itself."""
        grants: dict[str, list[tuple[str, str]]] = {}
        links: list[str] = []
        for host in sorted(self.rejoin, key=self.queue.rank):
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
        self._never.append(host)

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
        self._never.append(host)

    def drop_queue(self, error: str) -> None:
        """The caller wants no more node started: every queued node gets `error` as its result."""
        for host in self.queue.drain():
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

    def _take(self, agent: str | None, taken: list[str]) -> list[str]:
        """Record nodes taken from the queue as granted to `agent` (None: the server)."""
        now = self._clock()
        for host in taken:
            self.parent[host] = agent
            self.children.setdefault(agent, set()).add(host)
            self.grants[host] = self.grants.get(host, 0) + 1
            self._granted_at.append((now, host))
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
