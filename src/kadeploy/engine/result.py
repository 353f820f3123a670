"""What a workflow leaves behind: per-node records (for stats), outcome, resume points."""

from __future__ import annotations

from dataclasses import dataclass, field

from kadeploy.nodeset import sort_key
from kadeploy.states import SUCCEEDED, NodeState


@dataclass
class StepRecord:
    """One node at one macro-step, as kastat3 needs it (`stepN`, `timeout_stepN`...).

    `implementation` is the one last run, `retries` counts retries *and*
    fallbacks at this macro-step, `duration` is the last attempt's (the timeout
    value when it timed out).
    """

    implementation: str
    timeout: float
    retries: int = 0
    duration: float = 0.0


@dataclass
class NodeRecord:
    """Everything the engine knows about one node of the workflow."""

    hostname: str
    steps: list[StepRecord | None]
    state: NodeState = NodeState.WAITING  # then processing, and finally ok, ko, brk or aborted
    error: str | None = None        # "<Implementation>-<micro>: <text>" for failed nodes
    macro: str | None = None        # implementation last entered
    micro: str | None = None        # micro-step (task) last entered

    @property
    def success(self) -> bool:
        """True for succeeded and breakpointed nodes, as Kadeploy3 logs them."""
        return self.state in SUCCEEDED


@dataclass(frozen=True)
class ResumePoint:
    """Where a failed or breakpointed node can start again (issue 4(a)).

    `implementation` None means the first implementation of the macro-step;
    `micro` None means its first micro-step.
    """

    hostname: str
    macro_index: int
    macro: str
    implementation: str | None = None
    micro: str | None = None


@dataclass
class WorkflowResult:
    """Outcome of one workflow: who succeeded, failed, stopped at a breakpoint."""

    ok: list[str] = field(default_factory=list)
    ko: dict[str, str] = field(default_factory=dict)
    brk: list[str] = field(default_factory=list)
    processing: list[str] = field(default_factory=list)
    records: dict[str, NodeRecord] = field(default_factory=dict)
    resume_points: dict[str, ResumePoint] = field(default_factory=dict)
    aborted: bool = False
    duration: float = 0.0

    @property
    def reported_ok(self) -> list[str]:
        """Succeeded plus breakpointed nodes: what Kadeploy3 reports as OK."""
        return sorted([*self.ok, *self.brk], key=sort_key)

    @property
    def success_ratio(self) -> float:
        total = len(self.ok) + len(self.brk) + len(self.ko) + len(self.processing)
        return len(self.reported_ok) / total if total else 1.0
