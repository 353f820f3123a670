"""Book-keeping shared by a workflow and its macro-step instances.

One `RunState` per `Workflow.run`: node set ids, where each node is, its last
error, its stats record, the micro-steps running now (for `/status`), and the
prefixed output. Single event loop, so no locks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

from kadeploy.engine.output import OPERATION_NAMES, OutputSink, line_prefix, nodeset_label
from kadeploy.engine.result import NodeRecord, StepRecord
from kadeploy.nodeset import fold, sort_key
from kadeploy.states import SUCCEEDED, UNFINISHED, NodeState


@dataclass
class Position:
    """Where a node is: macro-step, implementation and task indexes (and names, for resume)."""

    macro_index: int
    implementation_index: int
    implementation: str
    task_index: int = 0
    micro: str | None = None


@dataclass
class ActiveMicro:
    """A micro-step running now on some nodes, for the `/status` view."""

    implementation: str
    micro: str
    nodes: list[str]
    started: float


def sorted_nodes(nodes: Iterable[str]) -> list[str]:
    return sorted(nodes, key=sort_key)


class RunState:
    def __init__(self, kind: str, cluster: str, output: OutputSink, cluster_prefix: str | None,
                 macro_count: int, nodes: list[str]) -> None:
        self.kind = kind
        self.opname = OPERATION_NAMES[kind]
        self.cluster = cluster
        self.output = output
        self.cluster_prefix = cluster_prefix
        self.started = asyncio.get_running_loop().time()
        self._last_nsid = 0
        self.records = {node: NodeRecord(node, [None] * macro_count) for node in nodes}
        self.positions: dict[str, Position] = {}
        self.active: dict[int, ActiveMicro] = {}
        self._next_active = 0

    # -- time and output ---------------------------------------------------
    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def seconds_since(self, start: float | None = None) -> int:
        """Whole seconds, as Kadeploy3 prints them."""
        return int(round(self.now() - (self.started if start is None else start)))

    def label(self, nsid: int | None) -> str | None:
        return nodeset_label(nsid, self.cluster_prefix)

    def log(self, level: int, text: str, nsid: int | None = None) -> None:
        self.output.log(level, f"{line_prefix(nsid, self.cluster_prefix)}{text}", self.label(nsid))

    # -- node sets ---------------------------------------------------------
    def new_nsid(self) -> int:
        self._last_nsid += 1
        return self._last_nsid

    def split(self, nsid: int, ok: list[str], ko: list[str]) -> tuple[int, int]:
        """Give both halves of a node set new ids and print Kadeploy3's split block."""
        ok_nsid, ko_nsid = self.new_nsid(), self.new_nsid()
        initial = line_prefix(nsid, self.cluster_prefix) or "[0] "
        self.log(1, "---")
        self.log(1, f"Nodeset {initial}split into :")
        self.log(1, f"  {line_prefix(ok_nsid, self.cluster_prefix)}{fold(ok)}")
        self.log(1, f"  {line_prefix(ko_nsid, self.cluster_prefix)}{fold(ko)}")
        self.log(1, "---")
        return ok_nsid, ko_nsid

    # -- nodes -------------------------------------------------------------
    def enter_macro(self, nodes: list[str], macro_index: int, impl_index: int, implementation: str,
                    timeout: float) -> None:
        for node in nodes:
            record = self.records[node]
            step = record.steps[macro_index]
            if step is None:
                record.steps[macro_index] = StepRecord(implementation, timeout)
            else:  # a retry or a fallback keeps its count
                step.implementation, step.timeout, step.duration = implementation, timeout, 0.0
            record.state = NodeState.PROCESSING
            record.macro, record.micro = implementation, None
            self.positions[node] = Position(macro_index, impl_index, implementation)

    def enter_task(self, nodes: list[str], task_index: int, micro: str, report: bool = True) -> None:
        for node in nodes:
            self.positions[node].task_index, self.positions[node].micro = task_index, micro
            record = self.records[node]
            record.micro = micro
            if report:
                # Kadeploy3 reports a node entering a micro-step with state "ok".
                self.output.node_state(node, record.macro, micro, NodeState.OK)

    def set_error(self, node: str, text: str) -> None:
        """Remember `<Implementation>-<micro>: <text>` for a node that failed where it stands."""
        record = self.records[node]
        if record.macro is None:
            record.error = text
        elif record.micro is None:
            record.error = f"{record.macro}: {text}"
        else:
            record.error = f"{record.macro}-{record.micro}: {text}"

    def count_retry(self, nodes: list[str], macro_index: int) -> None:
        for node in nodes:
            step = self.records[node].steps[macro_index]
            if step is not None:
                step.retries += 1

    def set_duration(self, nodes: list[str], macro_index: int, duration: float) -> None:
        for node in nodes:
            step = self.records[node].steps[macro_index]
            if step is not None:
                step.duration = duration

    def finish(self, nodes: list[str], state: NodeState) -> None:
        """Final state of nodes: `ok`, `ko`, `brk` or `aborted` (reported to the sink)."""
        for node in nodes:
            record = self.records[node]
            record.state = state
            if state in SUCCEEDED:
                record.error = None
                self.output.node_state(node, None, None, state)
            else:
                self.output.node_state(node, record.macro, record.micro, state, record.error)

    def unfinished(self) -> list[str]:
        return sorted_nodes(n for n, r in self.records.items() if r.state in UNFINISHED)

    # -- /status -------------------------------------------------------------
    def begin_micro(self, implementation: str, micro: str, nodes: list[str]) -> int:
        self._next_active += 1
        self.active[self._next_active] = ActiveMicro(implementation, micro, list(nodes), self.now())
        return self._next_active

    def end_micro(self, key: int) -> None:
        self.active.pop(key, None)

    def status(self) -> dict[str, dict[str, dict]]:
        view: dict[str, dict[str, dict]] = {}
        for entry in self.active.values():
            micro = view.setdefault(entry.implementation, {}).setdefault(
                entry.micro, {"nodes": {"OK": [], "KO": [], "**": []}, "time": 0})
            micro["nodes"]["**"] = sorted_nodes([*micro["nodes"]["**"], *entry.nodes])
            micro["time"] = max(micro["time"], self.seconds_since(entry.started))
        return view
