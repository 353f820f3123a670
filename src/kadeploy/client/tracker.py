"""Per macro-step node counts over a whole workflow, for the live progress display.

Client room. Why not `/status` alone: it lists only the micro-steps running
now, with their nodes in progress (`**`); a macro-step vanishes from it as
soon as its nodes move on, and its OK/KO lists stay empty (as in Kadeploy3,
where a node entering a micro-step is reported "ok"). So the display would
only ever show the current step with 0 OK and 0 KO. Per-node `/state`
(`macro`, `state`) polled over the run tells, for every macro-step seen, how
many nodes passed it (they are in a later macro-step or finished), failed in
it (`ko` there) or are still in it. Pure: snapshots in, counts out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kadeploy.client.output import MacroProgress
from kadeploy.states import SUCCEEDED, NodeState

# Kadeploy3's macro-step interfaces in workflow order; an implementation is `<interface><Name>`
MACRO_INTERFACES = ("SetDeploymentEnv", "BroadcastEnv", "BootNewEnv")
FAILED_STATES = frozenset({NodeState.KO, NodeState.ABORTED, NodeState.DISCARDED})
DONE_OK_STATES = SUCCEEDED


class StepTracker:
    """Remembers every macro-step implementation a workflow went through and where each node is."""

    def __init__(self) -> None:
        self._rows: dict[str, float] = {}               # implementation -> last known step time (s)
        self._unknown: list[str] = []                    # interfaces outside MACRO_INTERFACES, first seen first
        self._passed_in: dict[str, dict[str, str]] = {}  # node -> interface -> implementation it ran last
        self._where: dict[str, tuple[str | None, str]] = {}  # node -> (current implementation, state)

    def interface(self, implementation: str) -> str:
        return next((name for name in MACRO_INTERFACES if implementation.startswith(name)), implementation)

    def _rank(self, implementation: str) -> int:
        interface = self.interface(implementation)
        if interface in MACRO_INTERFACES:
            return MACRO_INTERFACES.index(interface)
        if interface not in self._unknown:
            self._unknown.append(interface)
        return len(MACRO_INTERFACES) + self._unknown.index(interface)

    def _enter(self, node: str, implementation: str) -> None:
        self._rows.setdefault(implementation, 0.0)
        self._rank(implementation)
        self._passed_in.setdefault(node, {})[self.interface(implementation)] = implementation

    def observe(self, states: Mapping[str, Any] | None, status: Mapping[str, Any] | None = None) -> None:
        """Take one `/state` snapshot (per node) and optionally the `/status` one (step times)."""
        for cluster_status in (status or {}).values():
            if not isinstance(cluster_status, Mapping):
                continue
            for implementation, micros in cluster_status.items():
                self._rows.setdefault(str(implementation), 0.0)
                self._rank(str(implementation))
                if isinstance(micros, Mapping):
                    times = [entry.get("time") for entry in micros.values() if isinstance(entry, Mapping)]
                    numbers = [float(t) for t in times if isinstance(t, (int, float))]
                    if numbers:
                        self._rows[str(implementation)] = max(numbers)
        for node, entry in (states or {}).items():
            if not isinstance(entry, Mapping):
                continue
            macro = entry.get("macro")
            state = str(entry.get("state") or "")
            if isinstance(macro, str) and macro:
                self._enter(node, macro)
                self._where[node] = (macro, state)
            else:
                self._where[node] = (None, state)

    def progress(self) -> dict[str, MacroProgress]:
        """Counts per implementation, in workflow order (a fallback right after what it replaced)."""
        order = sorted(self._rows, key=lambda name: self._rank(name))  # stable: first seen first within a rank
        rows = {name: MacroProgress(time=self._rows[name]) for name in order}
        for node, (current, state) in self._where.items():
            if current is not None and current in rows:
                if state in FAILED_STATES:
                    rows[current].ko += 1
                else:
                    rows[current].running += 1
            finished_ok = current is None and state in DONE_OK_STATES
            current_rank = None if current is None else self._rank(current)
            for implementation in self._passed_in.get(node, {}).values():
                if implementation == current or implementation not in rows:
                    continue
                if finished_ok or (current_rank is not None and current_rank > self._rank(implementation)):
                    rows[implementation].ok += 1
        return rows
