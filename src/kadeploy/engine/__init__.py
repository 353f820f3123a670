"""engine room: the workflow automaton (reference section 5). Imports only errors and nodeset.

The engine knows nothing of SSH, PXE or SQL: it drives node sets through
macro-steps and micro-steps that a `StepLibrary` supplies, and writes
Kadeploy3's output lines to an `OutputSink`.

Describing a workflow::

    macrosteps = [
        ("SetDeploymentEnv", [ImplementationSpec("SetDeploymentEnvUntrusted", retries=2, timeout=200)]),
        ("BroadcastEnv",     [ImplementationSpec("BroadcastEnvKascade", retries=2, timeout=300)]),
        ("BootNewEnv",       [ImplementationSpec("BootNewEnvClassical", timeout=150),
                              ImplementationSpec("BootNewEnvHardReboot", retries=1, timeout=120)]),
    ]
    # (kadeploy.steps.macrosteps declares the implementations and Kadeploy3's default automaton)
    wf = Workflow("Deploy", "c1", macrosteps, library, output, breakpoint="BroadcastEnv:sync",
                  wid="D-...")
    result = await wf.run(nodes)              # WorkflowResult
    wf.status()                               # live /status view while it runs
    wf.kill()                                 # or cancel the task running run()

Semantics (Kadeploy3's, reference 5.1, 5.5, 5.8):

* Each implementation lists micro-steps (`library.microsteps(name)`, already
  pruned) with custom operations woven in as their own micro-steps
  (`custom_pre_<micro>-<name>`, `custom_sub_...`, `custom_post_...`).
* A micro-step returns `StepResult(ok, ko)`. Failed nodes split off
  (`Nodeset [0] split into :`, new node set ids, lines prefixed `[id] `);
  they retry the micro-step while it has `retries`, else leave the macro-step
  instance as KO. Successful nodes go on at once.
* KO nodes retry the same implementation from its first micro-step while it
  has `retries` (`MicroContext.attempt` counts the tries), then fall back to
  the next implementation, then fail with the error
  `<Implementation>-<micro>: <text>`.
* `timeout` of an implementation (0 = none) bounds each instance: on expiry
  its tasks are cancelled and the nodes still inside fail with
  `Timeout in the <Implementation> step`. Micro-step timeouts likewise give
  `Timeout in the <micro> step`.
* `raisable=False` (implementation or micro-step) keeps finished nodes in the
  instance until all of its nodes are done.
* Breakpoint `Macro` stops nodes before that macro-step; `Macro:micro` before
  that micro-step. Breakpointed nodes end with state `brk` and count as OK.
* A step raising `KadeployError` aborts the workflow: `run` re-raises it and
  unfinished nodes end `aborted`. Cancelling `run` kills the workflow the same
  way (then `CancelledError` propagates). Steps must clean up on
  `CancelledError` (see `kadeploy.engine.library`).

Beyond Kadeploy3:

* Resume: `result.resume_points` gives, for each failed, killed or
  breakpointed node, a `ResumePoint`; `Workflow(...).run(nodes, resume=points)`
  starts those nodes there (breakpointed nodes at the very micro-step, failed
  ones at the start of the macro-step they failed in), without redoing the
  macro-steps they passed. The breakpoint a node resumes from is not re-applied.
* `run_with_retries(make_workflow, nodes, max_rounds, min_success)` reruns the
  failed nodes in new rounds; `merge_results` gives the overall outcome.

Per-node stats (`result.records[node]`, a `NodeRecord`): for each macro-step
index a `StepRecord(implementation, timeout, retries, duration)`, plus final
`state`, `error`, and the last `macro`/`micro` reached.
"""

from kadeploy.engine.library import MicroContext, StepLibrary
from kadeploy.engine.model import (
    CustomOperation,
    ImplementationSpec,
    MacroStepSpec,
    MicroStepConf,
    StepResult,
)
from kadeploy.engine.output import KINDS, OPERATION_NAMES, ListOutput, OutputSink
from kadeploy.engine.policy import merge_results, run_with_retries
from kadeploy.engine.result import NodeRecord, ResumePoint, StepRecord, WorkflowResult
from kadeploy.engine.tasks import Breakpoint
from kadeploy.engine.workflow import Workflow

__all__ = [
    "KINDS", "OPERATION_NAMES", "Breakpoint", "CustomOperation", "ImplementationSpec",
    "ListOutput", "MacroStepSpec", "MicroContext", "MicroStepConf", "NodeRecord",
    "OutputSink", "ResumePoint", "StepLibrary", "StepRecord", "StepResult", "Workflow", "WorkflowResult",
    "merge_results", "run_with_retries",
]
