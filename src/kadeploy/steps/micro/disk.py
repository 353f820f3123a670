"""Micro-steps that prepare the disk in the deployment environment.

Room: steps. Partitioning runs the cluster's script with Kadeploy3's
variables; formatting, mounting and unmounting run the commands of
`steps/commands.py` for the partitions of the plan; `sync` flushes the
nodes' caches before they reboot.
"""

from __future__ import annotations

from typing import Protocol

from kadeploy.engine import MicroContext, StepResult
from kadeploy.steps import commands
from kadeploy.steps.micro.shared import Deployment, NodeShell, microstep, remote, variables


class DiskRun(NodeShell, Deployment, Protocol):
    """What the disk micro-steps read: the plan's partitions and the cluster's partitioning script."""

    @property
    def partitioning_script(self) -> str: ...


@microstep("create_partition_table", "run the cluster's partitioning script")
async def create_partition_table(run: DiskRun, ctx: MicroContext, nodes: list[str]) -> StepResult:
    script = run.partitioning_script.encode()
    return await remote(run, nodes, commands.run_script(variables(run)), input=script, timeout=ctx.timeout)


@microstep("format_deploy_part", "mkfs the deployment partition")
async def format_deploy_part(run: DiskRun, ctx: MicroContext, nodes: list[str]) -> StepResult:
    return await remote(run, nodes, commands.format_deploy_part(run.plan), timeout=ctx.timeout)


@microstep("format_tmp_part", "mkfs the /tmp partition")
async def format_tmp_part(run: DiskRun, ctx: MicroContext, nodes: list[str]) -> StepResult:
    return await remote(run, nodes, commands.format_tmp_part(run.plan), timeout=ctx.timeout)


@microstep("format_swap_part", "mkswap the swap partition")
async def format_swap_part(run: DiskRun, ctx: MicroContext, nodes: list[str]) -> StepResult:
    return await remote(run, nodes, commands.format_swap_part(run.plan), timeout=ctx.timeout)


@microstep("mount_deploy_part", "mount the deployment partition on the extraction directory")
async def mount_deploy_part(run: DiskRun, ctx: MicroContext, nodes: list[str]) -> StepResult:
    return await remote(run, nodes, commands.mount_deploy_part(run.plan), timeout=ctx.timeout)


@microstep("umount_deploy_part", "unmount the deployment partition")
async def umount_deploy_part(run: DiskRun, ctx: MicroContext, nodes: list[str]) -> StepResult:
    return await remote(run, nodes, commands.umount_deploy_part(run.plan), timeout=ctx.timeout)


@microstep("mount_tmp_part", "mount the /tmp partition")
async def mount_tmp_part(run: DiskRun, ctx: MicroContext, nodes: list[str]) -> StepResult:
    return await remote(run, nodes, commands.mount_tmp_part(run.plan), timeout=ctx.timeout)


@microstep("sync", "flush the nodes' disk caches")
async def sync(run: DiskRun, ctx: MicroContext, nodes: list[str]) -> StepResult:
    return await remote(run, nodes, "sync", timeout=ctx.timeout)
