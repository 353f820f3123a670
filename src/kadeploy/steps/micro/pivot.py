"""Micro-steps that start the deployed system without any reboot: `check_same_kernel` and `switch_root`.

Room: steps. BootNewEnvPivotRoot (Kadeploy2's "pivot" method) changes the
node's root to the deployed partition and execs the deployed system's init
from the deployment environment's PID 1, as an initramfs does. The deployed
system then runs on the kernel that is already running, so the method
applies only when the environment's kernel is that kernel:
`check_same_kernel` fails the other nodes with both versions, and the
workflow sends them to the next implementation of BootNewEnv (Kexec,
Classical...) as for any failure; the line printed here says why.

The switch itself needs the deployment environment's init to cooperate
(only PID 1 may `switch_root`): `switch_root` writes the deployed root's
path into the init's FIFO (`commands.PIVOT_HOOK`); an environment whose
init has no such hook fails the node with that reason instead of pretending.
Like a reboot, the switch drops the nodes' SSH connections.
"""

from __future__ import annotations

from typing import Protocol

from kadeploy.engine import MicroContext, StepResult
from kadeploy.states import NodeState
from kadeploy.steps import commands
from kadeploy.steps.micro.shared import NodeShell, microstep, remote
from kadeploy.steps.plan import DeployPlan


class PivotRun(NodeShell, Protocol):
    """What the pivot micro-steps read: the plan (extraction dir, the environment's kernel, OS kind)."""

    @property
    def plan(self) -> DeployPlan: ...


@microstep("check_same_kernel", "check that the environment's kernel is the running one (pivot root)")
async def check_same_kernel(run: PivotRun, ctx: MicroContext, nodes: list[str]) -> StepResult:
    plan = run.plan
    if plan.os_kind != "linux" or not plan.env_kernel:
        result = StepResult(ko={n: "pivot root needs a linux environment with a kernel" for n in nodes})
    else:
        result = await remote(run, nodes, commands.same_kernel_check(plan), timeout=ctx.timeout or 60)
    for node, reason in result.ko.items():
        ctx.output.log(2, f"{ctx.prefix}  {node}: {ctx.implementation} does not apply ({reason.strip()}); "
                          "the next implementation of the macro-step will boot it", ctx.nodeset_id)
    return result


@microstep("switch_root", "make the deployed partition the root and exec its init from PID 1 (no reboot)")
async def switch_root(run: PivotRun, ctx: MicroContext, nodes: list[str]) -> StepResult:
    for node in nodes:
        ctx.set_state(node, NodeState.REBOOT_IN_PROGRESS)
    result = await remote(run, nodes, commands.switch_root_request(run.plan), timeout=60,
                          relay=False)  # the deployment environment ends
    run.executor.forget(nodes)
    return result
