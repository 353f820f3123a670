"""Micro-steps that make the written image a system the user can boot and reach.

Room: steps. The user's SSH key goes into the deployment environment
(`send_key_in_deploy_env`) and into the deployed system (`send_key`); the
environment's kernel files are checked and the cluster's bootloader script
installed on the deployed partition; `check_nodes` checks, for
SetDeploymentEnvProd, that the nodes run the production system from its
partition.
"""

from __future__ import annotations

from typing import Protocol

from kadeploy.engine import MicroContext, StepResult
from kadeploy.steps import commands
from kadeploy.steps.micro.shared import Deployment, NodeShell, microstep, remote, variables


class SystemRun(NodeShell, Deployment, Protocol):
    """What the system micro-steps read: the plan, the user's key and the cluster's bootloader script."""

    @property
    def ssh_key(self) -> bytes | None:
        """The user's public key (`kadeploy3 -k`), or None without one."""
    @property
    def bootloader_script(self) -> str: ...


@microstep("send_key_in_deploy_env", "install the user's SSH key in the deployment environment")
async def send_key_in_deploy_env(run: SystemRun, ctx: MicroContext, nodes: list[str]) -> StepResult:
    if run.ssh_key is None:
        return StepResult(ok=list(nodes))
    return await remote(run, nodes, commands.append_authorized_keys(), input=run.ssh_key, timeout=ctx.timeout)


@microstep("check_nodes", "check that the nodes run the production environment from its partition (Prod)")
async def check_nodes(run: SystemRun, ctx: MicroContext, nodes: list[str]) -> StepResult:
    plan = run.plan
    prod = commands.partition_device(plan.block_device, plan.prod_part_num)
    results = await run.executor.run(run.subset(nodes), commands.root_device_check(prod),
                                     timeout=ctx.timeout or 60)
    ok, ko = [], {}
    for node in nodes:
        result = results[node]
        if result.ok and result.stdout.strip() == prod:
            ok.append(node)
        else:
            ko[node] = result.reason if not result.ok else f"The production environment is not booted on {prod}"
    # a root named differently (by-uuid, kernel name) may still be the prod partition
    renamed = [node for node in ko if results[node].ok]
    if renamed:
        again = await run.executor.run(run.subset(renamed), commands.same_root_device_check(prod),
                                       timeout=ctx.timeout or 60)
        for node in renamed:
            if again[node].ok:
                ok.append(node)
                del ko[node]
    return StepResult(ok=ok, ko=ko)


@microstep("check_kernel_files", "check that the environment's kernel and initrd exist on the partition")
async def check_kernel_files(run: SystemRun, ctx: MicroContext, nodes: list[str]) -> StepResult:
    return await remote(run, nodes, commands.check_kernel_files(run.plan), timeout=ctx.timeout)


@microstep("send_key", "install the user's SSH key in the deployed system")
async def send_key(run: SystemRun, ctx: MicroContext, nodes: list[str]) -> StepResult:
    if run.ssh_key is None:
        return StepResult(ok=list(nodes))
    return await remote(run, nodes, commands.append_authorized_keys(run.plan.extraction_dir),
                        input=run.ssh_key, timeout=ctx.timeout)


@microstep("install_bootloader", "run the cluster's bootloader installation script")
async def install_bootloader(run: SystemRun, ctx: MicroContext, nodes: list[str]) -> StepResult:
    script = run.bootloader_script.encode()
    return await remote(run, nodes, commands.run_script(variables(run)), input=script, timeout=ctx.timeout)
