"""The workflow: node sets through macro-steps, with retries, fallbacks, timeouts and breakpoints.

One `Workflow` per cluster and operation. Each macro-step instance runs as its
own asyncio task on its node set; when nodes leave an instance the workflow
sends them on at once: next macro-step (OK), same implementation again while
it has retries, next implementation (fallback), or final failure (KO). An
implementation's `timeout` cancels its instance and fails the nodes still in
it with `Timeout in the <Implementation> step`. Cancelling the task that runs
`Workflow.run` (or calling `Workflow.kill`) cancels every instance: that is the
kill switch.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from kadeploy.engine.library import StepLibrary
from kadeploy.engine.macrostep import MacroStepRun
from kadeploy.engine.model import ImplementationSpec, MacroStepSpec
from kadeploy.engine.output import KINDS, OutputSink
from kadeploy.engine.result import ResumePoint, WorkflowResult
from kadeploy.engine.state import Position, RunState, sorted_nodes
from kadeploy.engine.tasks import Breakpoint, StepTask, build_tasks
from kadeploy.errors import ErrorCode, KadeployError
from kadeploy.nodeset import fold
from kadeploy.states import FAILED, NodeState, StepExit

#: final states a resumed deployment can start again from
RESUMABLE = frozenset({NodeState.KO, NodeState.BRK, NodeState.ABORTED})

log = logging.getLogger("kadeploy.engine")

KILL_GRACE = 30.0
"""Seconds a cancelled step gets to clean up (kill its remote processes) before we stop waiting."""


@dataclass(frozen=True)
class _Plan:
    """An implementation ready to run: its spec (breakpoint applied), pruned micro-steps, tasks."""

    impl: ImplementationSpec
    microsteps: list[str]
    bypassed: list[str]
    tasks: list[StepTask]


@dataclass(frozen=True)
class _Start:
    macro_index: int
    implementation_index: int
    task_index: int
    resumed: bool


class Workflow:
    """Drives the nodes of one cluster through `macrosteps` with steps from `library`.

    `macrosteps` is `[(interface, [ImplementationSpec, ...]), ...]`, e.g. the
    three deploy macro-steps or the single `("Reboot", [ImplementationSpec("Simple")])`.
    `breakpoint` is `Macro` or `Macro:micro` (Macro = interface or implementation
    name); it must name a step this workflow uses (else `KadeployError`).
    `cluster_prefix` (multi-cluster operations) labels every line `[<prefix>.<id>] `.
    A workflow runs once.
    """

    def __init__(self, kind: str, cluster: str, macrosteps: list[MacroStepSpec], library: StepLibrary,
                 output: OutputSink, breakpoint: str | None = None, cluster_prefix: str | None = None,
                 wid: str = "") -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        if not macrosteps:
            raise KadeployError(ErrorCode.INVALID_OPTION, f"The {kind} workflow of {cluster} has no macro-step")
        self.kind = kind
        self.cluster = cluster
        self.macrosteps = [(interface, list(impls)) for interface, impls in macrosteps]
        self.library = library
        self.output = output
        self.cluster_prefix = cluster_prefix
        self.wid = wid
        self.breakpoint = Breakpoint.parse(breakpoint) if breakpoint else None
        self._plans = self._make_plans()
        self._state: RunState | None = None
        self._runner: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self._wake = asyncio.Event()
        self._failure: BaseException | None = None
        self._stopping = False
        self._aborted = False

    # -- set-up ---------------------------------------------------------------
    def _make_plans(self) -> list[list[_Plan]]:
        plans: list[list[_Plan]] = []
        used = False
        for interface, impls in self.macrosteps:
            if not impls:
                raise KadeployError(ErrorCode.INVALID_OPTION, f"The macro-step {interface} has no implementation")
            row = []
            for impl in impls:
                microsteps = list(self.library.microsteps(impl.name))
                micro_break = None
                if self.breakpoint and self.breakpoint.matches(interface, impl.name):
                    if self.breakpoint.micro is None:
                        impl = dataclasses.replace(impl, breakpoint=True)
                        used = True
                    elif self.breakpoint.micro in microsteps:
                        micro_break = self.breakpoint.micro
                        used = True
                row.append(_Plan(impl, microsteps, list(self.library.bypassed(impl.name)),
                                 build_tasks(impl, microsteps, micro_break)))
            plans.append(row)
        if self.breakpoint and not used:
            raise KadeployError(ErrorCode.INVALID_OPTION,
                                f"The step '{self.breakpoint}' is not used during the operation")
        return plans

    def _start_points(self, nodes: list[str], resume: Mapping[str, ResumePoint] | None) -> dict[_Start, list[str]]:
        groups: dict[_Start, list[str]] = {}
        for node in nodes:
            point = resume.get(node) if resume else None
            start = _Start(0, 0, 0, False) if point is None else self._resolve(point)
            groups.setdefault(start, []).append(node)
        return groups

    def _resolve(self, point: ResumePoint) -> _Start:
        """Turn a resume point into indexes of this workflow, refusing one it cannot honour."""
        where = f"Cannot resume {point.hostname}"
        if not 0 <= point.macro_index < len(self.macrosteps) or self.macrosteps[point.macro_index][0] != point.macro:
            raise KadeployError(ErrorCode.INVALID_OPTION, f"{where}: this workflow has no macro-step {point.macro} "
                                                          f"at position {point.macro_index + 1}")
        row = self._plans[point.macro_index]
        if point.implementation is None:
            return _Start(point.macro_index, 0, 0, False)
        names = [plan.impl.name for plan in row]
        if point.implementation not in names:
            raise KadeployError(ErrorCode.INVALID_OPTION,
                                f"{where}: {point.implementation} is not an implementation of {point.macro} here")
        impl_index = names.index(point.implementation)
        task_index = 0
        if point.micro is not None:
            tasks = [task.name for task in row[impl_index].tasks]
            if point.micro not in tasks:
                raise KadeployError(ErrorCode.INVALID_OPTION,
                                    f"{where}: {point.implementation} has no micro-step {point.micro} here")
            task_index = tasks.index(point.micro)
        return _Start(point.macro_index, impl_index, task_index, True)

    # -- running ----------------------------------------------------------------
    async def run(self, nodes: list[str], resume: Mapping[str, ResumePoint] | None = None) -> WorkflowResult:
        """Run the workflow on these nodes; nodes in `resume` start at their resume point.

        Raises `KadeployError` if a step aborts the operation, `CancelledError`
        when killed; `result` then holds the partial outcome.
        """
        if self._state is not None:
            raise RuntimeError("a Workflow runs only once")
        nodes = list(dict.fromkeys(nodes))
        if not nodes:
            raise KadeployError(ErrorCode.INVALID_NODELIST, f"No node to work on in cluster {self.cluster}")
        groups = self._start_points(nodes, resume)
        self._state = state = RunState(self.kind, self.cluster, self.output, self.cluster_prefix,
                                       len(self.macrosteps), nodes)
        self._runner = asyncio.current_task()
        state.log(0, f"Launching a {state.opname} on {fold(nodes)}")
        for number, (start, group) in enumerate(groups.items()):
            nsid = 0 if number == 0 else state.new_nsid()
            self._spawn(self._macro(group, nsid, start.macro_index, start.implementation_index, 0,
                                    start.task_index, start.resumed))
        try:
            while self._tasks and self._failure is None:
                self._wake.clear()
                await self._wake.wait()
        except asyncio.CancelledError:
            await self._cancel_all()
            self._abort(f"{state.opname.capitalize()} aborted")
            state.log(2, f" * Kill a {state.opname} instance")
            state.log(0, f"{state.opname.capitalize()} aborted")
            raise
        if self._failure is not None:
            await self._cancel_all()
            failure = self._failure
            self._abort(str(failure))
            raise failure
        lost = state.unfinished()
        if lost:  # a step cancelled itself: its nodes must still end somewhere
            log.error("workflow %s: %d node(s) left without a verdict", self.wid, len(lost))
            for node in lost:
                state.set_error(node, "the step was cancelled unexpectedly")
            state.finish(lost, NodeState.KO)
        state.log(0, f"End of {state.opname} on cluster {self.cluster} after {state.seconds_since()}s")
        return self.result

    def kill(self) -> None:
        """Cancel the task running `run()`: every step is cancelled, unfinished nodes end `aborted`."""
        if self._runner is not None and not self._runner.done():
            self._runner.cancel()

    def _spawn(self, coro) -> None:
        if self._stopping:
            coro.close()
            return
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None and self._failure is None:
            self._failure = _unwrap(task.exception())
        if not self._tasks or self._failure is not None:
            self._wake.set()

    async def _cancel_all(self) -> None:
        self._stopping = True
        while self._tasks:
            pending = list(self._tasks)
            for task in pending:
                task.cancel()
            done, still = await asyncio.wait(pending, timeout=KILL_GRACE)
            for task in done:
                self._tasks.discard(task)
            if still:
                log.error("%d step(s) of workflow %s ignored cancellation for %ss", len(still), self.wid, KILL_GRACE)
                self._tasks.difference_update(still)

    def _abort(self, text: str) -> None:
        state = self._require_state()
        self._aborted = True
        unfinished = state.unfinished()
        for node in unfinished:
            state.set_error(node, text)
        state.finish(unfinished, NodeState.ABORTED)

    # -- one macro-step instance --------------------------------------------------
    async def _macro(self, nodes: list[str], nsid: int, macro_index: int, impl_index: int, attempt: int,
                     start_task: int = 0, resumed: bool = False) -> None:
        state = self._require_state()
        interface = self.macrosteps[macro_index][0]
        plan = self._plans[macro_index][impl_index]
        impl = plan.impl
        if impl.breakpoint and not resumed:
            for node in nodes:
                state.positions[node] = Position(macro_index, impl_index, impl.name)
                state.records[node].macro, state.records[node].micro = impl.name, None
            self._on_result(StepExit.BRK, nodes, nsid, macro_index, impl_index, attempt)
            return
        run = MacroStepRun(
            state=state, library=self.library, wid=self.wid, macro_index=macro_index, macro=interface,
            impl_index=impl_index, impl=impl, attempt=attempt, tasks=plan.tasks, nodes=nodes, nsid=nsid,
            on_raise=lambda status, done, done_nsid: self._on_result(status, done, done_nsid, macro_index,
                                                                     impl_index, attempt),
            start_task=start_task, skip_first_breakpoint=resumed, bypassed=plan.bypassed)
        try:
            async with asyncio.timeout(impl.timeout if impl.timeout > 0 else None) as deadline:
                await run.run()
        except TimeoutError:
            if not deadline.expired():
                raise
            remaining = run.remaining()
            if not remaining:
                return
            state.log(1, f"Timeout in the {impl.name} step, let's kill the instance", nsid)
            for node in remaining:
                state.set_error(node, f"Timeout in the {impl.name} step")
            state.set_duration(remaining, macro_index, impl.timeout)
            if len(remaining) < len(nodes):
                nsid = state.new_nsid()
            self._on_result(StepExit.KO, remaining, nsid, macro_index, impl_index, attempt)
            return
        for status, kept, kept_nsid in run.take_kept():
            self._on_result(status, kept, kept_nsid, macro_index, impl_index, attempt)

    def _on_result(self, status: StepExit, nodes: list[str], nsid: int, macro_index: int, impl_index: int,
                   attempt: int) -> None:
        """Send nodes leaving a macro-step instance where they go next."""
        state = self._require_state()
        nodes = sorted_nodes(nodes)
        if status == StepExit.BRK:
            state.log(1, f"Breakpoint reached for {fold(nodes)}", nsid)
            state.finish(nodes, NodeState.BRK)
        elif status == StepExit.OK:
            if macro_index + 1 < len(self.macrosteps):
                self._spawn(self._macro(nodes, nsid, macro_index + 1, 0, 0))
            else:
                state.log(1, f"End of {state.opname} for {fold(nodes)} after {state.seconds_since()}s", nsid)
                state.finish(nodes, NodeState.OK)
        else:
            row = self._plans[macro_index]
            if attempt < row[impl_index].impl.retries:
                state.count_retry(nodes, macro_index)
                self._spawn(self._macro(nodes, nsid, macro_index, impl_index, attempt + 1))
            elif impl_index + 1 < len(row):
                state.count_retry(nodes, macro_index)
                self._spawn(self._macro(nodes, nsid, macro_index, impl_index + 1, 0))
            else:
                state.log(1, f"{state.opname.capitalize()} failed for {fold(nodes)} after {state.seconds_since()}s",
                          nsid)
                state.finish(nodes, NodeState.KO)

    # -- views ------------------------------------------------------------------------
    def _require_state(self) -> RunState:
        if self._state is None:
            raise RuntimeError("the workflow has not started")
        return self._state

    @property
    def running(self) -> bool:
        return self._state is not None and bool(self._tasks)

    def status(self) -> dict[str, dict[str, dict]]:
        """The live `/status` view: `{implementation: {micro: {"nodes": {"OK", "KO", "**"}, "time"}}}`."""
        return self._state.status() if self._state is not None else {}

    @property
    def result(self) -> WorkflowResult:
        """The outcome so far (final once `run` has returned, raised or been cancelled)."""
        state = self._require_state()
        result = WorkflowResult(aborted=self._aborted, duration=state.now() - state.started,
                                records=dict(state.records))
        for node in sorted_nodes(state.records):
            record = state.records[node]
            if record.state == NodeState.OK:
                result.ok.append(node)
            elif record.state == NodeState.BRK:
                result.brk.append(node)
            elif record.state in FAILED:
                result.ko[node] = record.error or record.state
            else:
                result.processing.append(node)
            point = self._resume_point(node, record.state)
            if point is not None:
                result.resume_points[node] = point
        return result

    def _resume_point(self, node: str, node_state: NodeState) -> ResumePoint | None:
        state = self._require_state()
        position = state.positions.get(node)
        if node_state not in RESUMABLE:
            return None
        if position is None:
            return ResumePoint(node, 0, self.macrosteps[0][0])
        interface = self.macrosteps[position.macro_index][0]
        if node_state == NodeState.BRK:
            return ResumePoint(node, position.macro_index, interface, position.implementation, position.micro)
        # Failed or killed nodes redo the whole macro-step, its implementations in order.
        return ResumePoint(node, position.macro_index, interface)


def _unwrap(exc: BaseException) -> BaseException:
    """A step's `KadeployError` comes back wrapped in task-group exception groups: dig it out."""
    if isinstance(exc, BaseExceptionGroup):
        found = exc.subgroup(lambda e: isinstance(e, KadeployError))
        if found is not None:
            while isinstance(found, BaseExceptionGroup):
                found = found.exceptions[0]
            return found
        first = exc
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        return first
    return exc
