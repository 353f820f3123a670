"""What the administrator and the user add to a deployment: install archives and custom operations.

Room: steps. The administrator's pre-install and post-install archives and
the environment's post-install archives are unpacked on the nodes, then
their script run, with Kadeploy3's variables (`manage_*_install`);
`run_custom_operation` runs one custom operation (`exec`, `send`, `run`, as
`--custom-steps` and the cluster's `automata` describe them), which the
engine weaves in as its own micro-step.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from kadeploy.engine import CustomOperation, MicroContext, StepResult
from kadeploy.errors import ErrorCode, KadeployError
from kadeploy.steps import commands
from kadeploy.steps.context import FileRef
from kadeploy.steps.micro.shared import Deployment, NodeShell, microstep, remote, variables
from kadeploy.steps.plan import Archive


class CustomRun(NodeShell, Deployment, Protocol):
    """What the archive steps and custom operations read: the plan and the files fetched for them."""

    @property
    def archives(self) -> dict[Archive, FileRef]: ...
    @property
    def custom_files(self) -> dict[str, FileRef]:
        """A custom operation's `file` -> its fetched copy."""


async def _install_archives(run: CustomRun, ctx: MicroContext, nodes: list[str],
                            archives: Iterable[Archive]) -> StepResult:
    """Unpack each archive then run its script; a node that fails one is dropped from the next."""
    archive_variables = variables(run)
    remaining = list(nodes)
    failed: dict[str, str] = {}
    for archive in archives:
        file_ref = run.archives.get(archive)
        if file_ref is None:
            raise KadeployError(ErrorCode.INVALID_FILE, f"The archive {archive.file} was not fetched")
        ctx.debug(3, f"Send the archive {archive.file}")
        result = await remote(run, remaining, commands.unpack_archive(run.plan, archive.compression),
                              input=file_ref.path, timeout=ctx.timeout)
        failed.update(result.ko)
        passed = set(result.ok)
        remaining = [n for n in remaining if n in passed]
        script = commands.run_archive_script(run.plan, archive.script, archive_variables)
        if script and remaining:
            result = await remote(run, remaining, script, timeout=ctx.timeout)
            failed.update(result.ko)
            passed = set(result.ok)
            remaining = [n for n in remaining if n in passed]
    return StepResult(ok=remaining, ko=failed)


@microstep("manage_admin_pre_install", "run the administrator's pre-install archive")
async def manage_admin_pre_install(run: CustomRun, ctx: MicroContext, nodes: list[str]) -> StepResult:
    preinstall = run.plan.preinstall
    return await _install_archives(run, ctx, nodes, [preinstall] if preinstall else [])


@microstep("manage_admin_post_install", "run the administrator's post-install archives")
async def manage_admin_post_install(run: CustomRun, ctx: MicroContext, nodes: list[str]) -> StepResult:
    return await _install_archives(run, ctx, nodes, run.plan.admin_postinstalls)


@microstep("manage_user_post_install", "run the environment's post-install archives")
async def manage_user_post_install(run: CustomRun, ctx: MicroContext, nodes: list[str]) -> StepResult:
    return await _install_archives(run, ctx, nodes, run.plan.user_postinstalls)


async def run_custom_operation(run: CustomRun, op: CustomOperation, ctx: MicroContext,
                               nodes: list[str]) -> StepResult:
    """One custom operation on these nodes, bounded by its own timeout, else the micro-step's."""
    operation_variables = variables(run)
    timeout = op.timeout or ctx.timeout
    if op.action == "exec":
        return await remote(run, nodes, f"{commands.export_statement(operation_variables)}{op.command}",
                            timeout=timeout)
    file_ref = run.custom_files.get(op.file or "")
    if file_ref is None:
        raise KadeployError(ErrorCode.INVALID_CUSTOMOP, f"custom operation {op.name}: file {op.file} not fetched")
    if op.action == "send":
        destination = commands.custom_send_destination(op.destination or "", operation_variables)
        target = destination.rstrip("/") + "/" + Path(op.file or "").name
        cmd = f"mkdir -p {shlex.quote(destination)} && cat - > {shlex.quote(target)}"
        return await remote(run, nodes, cmd, input=file_ref.path, timeout=timeout)
    return await remote(run, nodes, commands.run_script(operation_variables, op.params or ""),
                        input=file_ref.path, timeout=timeout)
