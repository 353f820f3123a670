"""One instance of a macro-step implementation running its micro-steps on one node set.

Inside an instance, node sets split at micro-step level: nodes that pass a
micro-step go on at once while failed ones retry that micro-step (if it has
retries) or leave the instance. Leaving nodes are *raised* to the workflow
immediately (Kadeploy3's `raisable`, the default) or kept until the whole
instance is done. The workflow bounds the instance with the implementation's
timeout by cancelling it; `remaining()` then names the nodes still inside.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from kadeploy.engine.library import MicroContext, StepLibrary
from kadeploy.engine.model import ImplementationSpec, StepResult
from kadeploy.engine.state import RunState, sorted_nodes
from kadeploy.engine.tasks import StepTask
from kadeploy.errors import KadeployError
from kadeploy.nodeset import fold
from kadeploy.states import StepExit

log = logging.getLogger("kadeploy.engine")

# status, nodes, node set id
RaiseCallback = Callable[[StepExit, list[str], int], None]

OK, KO, BRK = StepExit.OK, StepExit.KO, StepExit.BRK


class MacroStepRun:
    def __init__(self, *, state: RunState, library: StepLibrary, wid: str, macro_index: int, macro: str,
                 impl_index: int, impl: ImplementationSpec, attempt: int, tasks: list[StepTask], nodes: list[str], nsid: int,
                 on_raise: RaiseCallback, start_task: int = 0, skip_first_breakpoint: bool = False,
                 bypassed: list[str] | None = None) -> None:
        self.state = state
        self.library = library
        self.wid = wid
        self.macro_index = macro_index
        self.macro = macro
        self.impl_index = impl_index
        self.impl = impl
        self.attempt = attempt
        self.tasks = tasks
        self.nodes = list(nodes)
        self.nsid = nsid
        self.on_raise = on_raise
        self.start_task = start_task
        self.skip_first_breakpoint = skip_first_breakpoint
        self.bypassed = bypassed or []
        self.held: dict[str, None] = dict.fromkeys(nodes)   # nodes not raised yet (ordered set)
        self.kept: list[tuple[StepExit, list[str], int]] = []   # finished but not raisable
        self.started = state.now()
        self._group: asyncio.TaskGroup | None = None

    @property
    def step_name(self) -> str:
        return f"{self.state.kind}[{self.impl.name}]"

    def remaining(self) -> list[str]:
        return sorted_nodes(self.held)

    async def run(self) -> None:
        """Run every node through the task list; returns when no node is left inside."""
        for micro in self.bypassed:
            self.state.log(5, f" * Bypassing the step {self.step_name}-{micro}", self.nsid)
        self.state.log(1, f"Performing a {self.step_name} step", self.nsid)
        self.state.enter_macro(self.nodes, self.macro_index, self.impl_index, self.impl.name, self.impl.timeout)
        async with asyncio.TaskGroup() as group:
            self._group = group
            group.create_task(self._path(self.nodes, self.nsid, self.start_task, 0, self.skip_first_breakpoint))

    def take_kept(self) -> list[tuple[StepExit, list[str], int]]:
        """Non-raisable results, handed to the workflow once the instance is over."""
        kept, self.kept = self.kept, []
        for _, nodes, _ in kept:
            for node in nodes:
                self.held.pop(node, None)
        oks = [n for status, nodes, _ in kept if status == OK for n in nodes]
        kos = [n for status, nodes, _ in kept if status == KO for n in nodes]
        if oks and kos:
            ok_nsid, ko_nsid = self.state.split(self.nsid, oks, kos)
            return [(OK, oks, ok_nsid), (KO, kos, ko_nsid)]
        return [(OK, oks, self.nsid)] if oks else [(KO, kos, self.nsid)] if kos else []

    # -- micro-step progression ---------------------------------------------
    async def _path(self, nodes: list[str], nsid: int, index: int, tries: int, skip_breakpoint: bool) -> None:
        while index < len(self.tasks):
            task = self.tasks[index]
            if task.breakpoint and not skip_breakpoint:
                self._break(nodes, nsid, task, index)
                return
            skip_breakpoint = False
            ok, ko = await self._run_task(task, index, nodes, nsid, tries)
            ok_nsid = ko_nsid = nsid
            if ok and ko:
                ok_nsid, ko_nsid = self.state.split(nsid, ok, ko)
            if ko:
                if tries < task.retries:
                    assert self._group is not None
                    self._group.create_task(self._path(ko, ko_nsid, index, tries + 1, True))
                else:
                    self._fail(ko, ko_nsid, task)
            if not ok:
                return
            nodes, nsid, index, tries = ok, ok_nsid, index + 1, 0
        self._success(nodes, nsid)

    async def _run_task(self, task: StepTask, index: int, nodes: list[str], nsid: int,
                        tries: int) -> tuple[list[str], list[str]]:
        state = self.state
        state.enter_task(nodes, index, task.name)
        state.log(3, f"  {task.display}", nsid)
        ctx = MicroContext(
            wid=self.wid, cluster=state.cluster, kind=state.kind, macro=self.macro,
            implementation=self.impl.name, micro=task.name, attempt=self.attempt,
            nodeset_id=state.label(nsid), output=state.output, timeout=self._task_budget(task),
            macro_index=self.macro_index, micro_attempt=tries)
        started = state.now()
        key = state.begin_micro(self.impl.name, task.name, nodes)
        timeout = task.timeout if task.timeout > 0 else None
        try:
            async with asyncio.timeout(timeout) as deadline:
                if task.operation is not None:
                    result = await self.library.run_custom(task.operation, ctx, list(nodes))
                else:
                    result = await self.library.run(task.micro, ctx, list(nodes))
        except TimeoutError as exc:
            if not deadline.expired():
                return self._crashed(task, nodes, exc)
            state.log(1, f"Timeout in {task.name} before the end of the step, let's kill the instance", nsid)
            for node in nodes:
                state.set_error(node, f"Timeout in the {task.name} step")
            return [], list(nodes)
        except KadeployError:
            raise
        except Exception as exc:  # a bug in a step fails its nodes, not the server
            return self._crashed(task, nodes, exc)
        finally:
            state.end_micro(key)
        state.log(4, f"   ~ Time in {task.name}: {state.seconds_since(started)}s", nsid)
        return self._classify(nodes, result)

    def _task_budget(self, task: StepTask) -> float | None:
        if task.timeout > 0:
            return task.timeout
        if self.impl.timeout > 0:
            return max(self.impl.timeout - (self.state.now() - self.started), 0.0)
        return None

    def _crashed(self, task: StepTask, nodes: list[str], exc: BaseException) -> tuple[list[str], list[str]]:
        log.error("micro-step %s of %s raised", task.name, self.impl.name, exc_info=exc)
        for node in nodes:
            self.state.set_error(node, f"{type(exc).__name__}: {exc}")
        return [], list(nodes)

    def _classify(self, nodes: list[str], result: StepResult) -> tuple[list[str], list[str]]:
        succeeded = set(result.ok).difference(result.ko)  # a node in both lists failed
        ok = [n for n in nodes if n in succeeded]
        ko = [n for n in nodes if n not in succeeded]
        for node in ko:
            self.state.set_error(node, result.ko.get(node, "the step gave no result for this node"))
        return ok, ko

    # -- nodes leaving the instance --------------------------------------------
    def _raisable(self, task: StepTask | None) -> bool:
        return self.impl.raisable and (task is None or task.raisable)

    def _success(self, nodes: list[str], nsid: int) -> None:
        elapsed = self.state.seconds_since(self.started)
        self.state.log(1, f"End of step {self.step_name} after {elapsed}s", nsid)
        self.state.set_duration(nodes, self.macro_index, self.state.now() - self.started)
        last = self.tasks[-1] if self.tasks else None
        self._leave(OK, nodes, nsid, self._raisable(last))

    def _fail(self, nodes: list[str], nsid: int, task: StepTask) -> None:
        elapsed = self.state.seconds_since(self.started)
        self.state.log(2, f"!!! The nodes {fold(nodes)} failed on step {task.name}", nsid)
        self.state.log(1, f"Step {self.step_name} failed for {fold(nodes)} after {elapsed}s", nsid)
        self.state.set_duration(nodes, self.macro_index, self.state.now() - self.started)
        self._leave(KO, nodes, nsid, self._raisable(task))

    def _break(self, nodes: list[str], nsid: int, task: StepTask, index: int) -> None:
        self.state.enter_task(nodes, index, task.name, report=False)
        self.state.log(2, f"*** Breakpoint on {task.name} reached for {fold(nodes)}", nsid)
        self.state.log(1, f"Step {self.step_name} breakpointed", nsid)
        self.state.set_duration(nodes, self.macro_index, self.state.now() - self.started)
        self._leave(BRK, nodes, nsid, True)

    def _leave(self, status: StepExit, nodes: list[str], nsid: int, raisable: bool) -> None:
        if not raisable:
            self.kept.append((status, list(nodes), nsid))
            return
        for node in nodes:
            self.held.pop(node, None)
        self.on_raise(status, list(nodes), nsid)
