"""Micro-steps that boot a kernel without the firmware: `send_deployment_kernel` and `kexec`.

Room: steps. SetDeploymentEnvKexec copies the deployment kernel to the
running system and kexecs it; BootNewEnvKexec kexecs the deployed kernel
from the deployment environment. Both drop the nodes' SSH connections, as a
reboot does.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Protocol

from kadeploy.engine import MicroContext, StepResult
from kadeploy.states import NodeState
from kadeploy.steps import commands
from kadeploy.steps.micro.shared import DeploymentKernel, NodeShell, microstep, remote
from kadeploy.steps.plan import DeployPlan


class KexecRun(NodeShell, DeploymentKernel, Protocol):
    """What the kexec micro-steps read: the plan and where the deployment kernel is on the server."""

    @property
    def plan(self) -> DeployPlan: ...
    @property
    def pxe_repository(self) -> Path:
        """The directory the deployment kernel and initrd are named relative to."""


@microstep("send_deployment_kernel", "copy the deployment kernel and initrd to the running system (for kexec)")
async def send_deployment_kernel(run: KexecRun, ctx: MicroContext, nodes: list[str]) -> StepResult:
    repository = run.plan.kexec_repository
    hosts = run.subset(nodes)
    await run.executor.run(hosts, f"mkdir -p {shlex.quote(repository)}", timeout=30)
    ok = set(nodes)
    ko: dict[str, str] = {}
    for name in (run.deploy_kernel, run.deploy_initrd):
        if not name:
            continue
        local = run.pxe_repository / name
        results = await run.executor.put({n: hosts[n] for n in ok}, local,
                                         f"{repository}/{Path(name).name}", timeout=ctx.timeout or 120)
        for node, result in results.items():
            if not result.ok:
                ko[node] = result.reason
                ok.discard(node)
    return StepResult(ok=sorted(ok), ko=ko)


@microstep("kexec", "kexec into a kernel already on the node")
async def kexec(run: KexecRun, ctx: MicroContext, nodes: list[str]) -> StepResult:
    plan = run.plan
    if ctx.macro == "SetDeploymentEnv":
        repository = plan.kexec_repository
        command = commands.kexec_load(f"{repository}/{Path(run.deploy_kernel).name}",
                                      f"{repository}/{Path(run.deploy_initrd).name}" if run.deploy_initrd else "",
                                      run.deploy_kernel_params)
    else:
        if plan.os_kind != "linux":
            return StepResult(ko={n: "kexec is only possible for linux environments" for n in nodes})
        params = plan.kernel_params
        if "root=" not in params:
            params = f"{params} root={plan.deploy_part}".strip()
        command = commands.kexec_load(plan.env_kernel, plan.env_initrd, params, plan.extraction_dir)
    for node in nodes:
        ctx.set_state(node, NodeState.REBOOT_IN_PROGRESS)
    result = await remote(run, nodes, command, timeout=60, relay=False)  # the node goes down
    run.executor.forget(nodes)
    return result
