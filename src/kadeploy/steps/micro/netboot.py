"""Micro-steps that choose what the nodes boot next: their PXE profile and their VLAN.

Room: steps. `switch_pxe` writes the profile (deployment kernel, deployed
partition, or the user's own profile) for the nodes' current and, before
`set_vlan` moves them, their VLAN addresses; `set_vlan` runs the
administrator's `network/vlan/set_cmd` and from then on the nodes are
reached at their address in that VLAN.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from kadeploy.boot.process import run_process
from kadeploy.boot.pxe import BootTarget, LocalBootEnv, PXEProfiles
from kadeploy.engine import MicroContext, StepResult
from kadeploy.steps.micro.shared import DEFAULT_COMMAND_TIMEOUT, DeploymentKernel, microstep
from kadeploy.steps.plan import DeployPlan


class NetbootRun(DeploymentKernel, Protocol):
    """What the network-boot micro-steps read: PXE writers, kernels, the user's profile, the VLAN command."""

    @property
    def plan(self) -> DeployPlan: ...
    @property
    def user(self) -> str: ...
    @property
    def reboot_kind(self) -> str: ...
    @property
    def pxe(self) -> PXEProfiles: ...
    @property
    def user_pxe_profile(self) -> str | None: ...
    @property
    def user_pxe_singularities(self) -> dict[str, str]: ...
    @property
    def user_pxe_files(self) -> list[Path] | dict[str, Path]: ...
    @property
    def vlan_command(self) -> Callable[[list[str], str], str] | None: ...

    def boot_targets(self, nodes: list[str], *, into_vlan: bool) -> list[BootTarget]: ...

    def moved_to_vlan(self, nodes: list[str], vlan: str) -> None: ...


@microstep("switch_pxe", "write the nodes' PXE profiles for the next boot (deployment, deployed or user's system)")
async def switch_pxe(run: NetbootRun, ctx: MicroContext, nodes: list[str]) -> StepResult:
    # outside SetDeploymentEnv, set_vlan moves the nodes into --vlan next: they boot there
    targets = run.boot_targets(nodes, into_vlan=ctx.macro != "SetDeploymentEnv")
    if ctx.macro == "SetDeploymentEnv" or run.reboot_kind == "deploy_env":
        return await asyncio.to_thread(run.pxe.deploy_kernel, targets, run.deploy_kernel,
                                       run.deploy_initrd, run.deploy_kernel_params)
    if run.user_pxe_profile is not None:
        return await asyncio.to_thread(run.pxe.user_profile, targets, run.user_pxe_profile, run.user,
                                       run.user_pxe_singularities, run.user_pxe_files)
    plan = run.plan
    env = LocalBootEnv(os=plan.os_kind, kernel=plan.env_kernel, initrd=plan.env_initrd,
                       kernel_params=plan.kernel_params, hypervisor=plan.hypervisor,
                       hypervisor_params=plan.hypervisor_params)
    return await asyncio.to_thread(run.pxe.local_boot, targets, plan.disk_index, plan.final_boot_partition,
                                   env, block_device=plan.block_device)


@microstep("set_vlan", "move the nodes to the requested VLAN (the administrator's set_cmd)")
async def set_vlan(run: NetbootRun, ctx: MicroContext, nodes: list[str]) -> StepResult:
    vlan = "DEFAULT" if ctx.macro == "SetDeploymentEnv" else (run.plan.vlan or "DEFAULT")
    if run.vlan_command is None:
        return StepResult(ko={n: "No VLAN command is configured (network/vlan/set_cmd)" for n in nodes})
    timeout = ctx.timeout or DEFAULT_COMMAND_TIMEOUT
    outcome = await run_process(run.vlan_command(nodes, vlan), timeout)
    if outcome.timed_out:
        return StepResult(ko={n: f"The VLAN command (network/vlan/set_cmd) timed out after {timeout:g}s"
                              for n in nodes})
    if outcome.exit_status != 0:
        return StepResult(ko={n: outcome.stderr.strip() or "set_vlan failed" for n in nodes})
    run.moved_to_vlan(nodes, vlan)
    return StepResult(ok=list(nodes))
