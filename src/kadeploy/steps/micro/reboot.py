"""Micro-steps that restart or power the nodes, and wait for them to come back.

Room: steps. `reboot` and `power` run the cluster's power commands through
`boot.power`'s escalation (soft, hard, very_hard), inside the reboot window
and the per-BMC gate; `reboot_from_deploy_env` asks the deployment
environment itself; `wait_reboot` probes the nodes' ports until they are
back. Every reboot drops the nodes' SSH connections: they lead to the system
that went away.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from kadeploy.boot import power as boot_power
from kadeploy.boot import probe
from kadeploy.boot.commands import CommandTable
from kadeploy.boot.window import MinIntervalGate, RebootWindow
from kadeploy.engine import MicroContext, StepResult
from kadeploy.states import NodeState
from kadeploy.steps import commands
from kadeploy.steps.macrosteps import workflow_implementation
from kadeploy.steps.micro.shared import NodeShell, microstep, remote


class RebootRun(NodeShell, Protocol):
    """What the reboot and power micro-steps read: power commands, window, gate, levels, probe settings."""

    @property
    def commands(self) -> CommandTable: ...
    @property
    def reboot_window(self) -> RebootWindow: ...
    @property
    def gate(self) -> MinIntervalGate | None: ...
    @property
    def reboot_level(self) -> str:
        """The requested level: soft, hard or very_hard."""
    @property
    def reboot_kind(self) -> str:
        """kareboot3's kind (simple, set_pxe, deploy_env, recorded_env); empty for deployments."""
    @property
    def power_kind(self) -> str:
        """kapower3's on, off or status; empty for the other workflows."""
    @property
    def power_output(self) -> dict[str, str]:
        """hostname -> power status text; `power` fills it, the runner prints it."""
    @property
    def reboot_timeout(self) -> Callable[[int], float]: ...
    @property
    def kexec_timeout(self) -> Callable[[int], float]: ...
    @property
    def ssh_port(self) -> int: ...
    @property
    def deploy_env_port(self) -> int: ...
    @property
    def sleep_before_ping(self) -> float: ...
    @property
    def probe_interval(self) -> float: ...
    @property
    def check_window(self) -> int: ...


def _output(ctx: MicroContext) -> Callable[[int, str], None]:
    """Where the escalation prints its lines: the node set's output, prefixed with its id."""
    return lambda level, text: ctx.output.log(level, ctx.prefix + text, ctx.nodeset_id)


@microstep("reboot", "reboot through the power commands (soft, hard, very_hard escalation)")
async def reboot(run: RebootRun, ctx: MicroContext, nodes: list[str]) -> StepResult:
    if ctx.implementation == "BootNewEnvHardReboot":
        level = "hard"
    else:
        level = boot_power.retry_start_level(run.reboot_level, ctx.attempt)
    for node in nodes:
        ctx.set_state(node, NodeState.REBOOT_IN_PROGRESS)
    run.executor.forget(nodes)
    return await boot_power.escalate("reboot", nodes, level, run.commands, run.reboot_window,
                                     command_timeout=min(ctx.timeout or 120.0, 120.0),
                                     output=_output(ctx), gate=run.gate)


@microstep("reboot_from_deploy_env", "reboot from the deployment environment (`reboot` over SSH)")
async def reboot_from_deploy_env(run: RebootRun, ctx: MicroContext, nodes: list[str]) -> StepResult:
    for node in nodes:
        ctx.set_state(node, NodeState.REBOOT_IN_PROGRESS)
    async with run.reboot_window.slot():
        result = await remote(run, nodes, commands.reboot_from_deploy_env(), timeout=30,
                              relay=False)  # the node goes down
    run.executor.forget(nodes)
    return result


@microstep("wait_reboot", "wait until the nodes answer on their SSH port again (and the old one is closed)")
async def wait_reboot(run: RebootRun, ctx: MicroContext, nodes: list[str]) -> StepResult:
    n = len(nodes)
    into_deploy_env = ctx.macro == "SetDeploymentEnv" or run.reboot_kind == "deploy_env"
    # no firmware in the way (kexec, pivot root): the declaration says which timeout bounds the wait
    declared = workflow_implementation(ctx.kind, ctx.implementation)
    after_kexec = declared is not None and declared.waits_for == "kexec"
    timeout = run.kexec_timeout(n) if after_kexec else run.reboot_timeout(n)
    ports_up = [run.deploy_env_port] if into_deploy_env else []
    ports_down = [] if into_deploy_env or ctx.kind == "Reboot" and run.reboot_kind == "simple" \
        else [run.deploy_env_port]

    def reached(node: str, seconds: float) -> None:
        ctx.set_state(node, NodeState.REBOOTED)
        ctx.output.log(5, f"{ctx.prefix}  {node} is here after {round(seconds)}s", ctx.nodeset_id)

    result = await probe.wait_reboot(run.subset(nodes), ssh_port=run.ssh_port, ports_up=ports_up,
                                     ports_down=ports_down, timeout=timeout,
                                     initial_sleep=min(run.sleep_before_ping, timeout),
                                     interval=run.probe_interval, window=run.check_window, on_reached=reached)
    run.executor.forget(nodes)
    return result


@microstep("power", "power on, off or status through the power commands")
async def power(run: RebootRun, ctx: MicroContext, nodes: list[str]) -> StepResult:
    if run.power_kind == "status":
        status = await boot_power.power_status(nodes, run.commands, run.reboot_window, gate=run.gate)
        for node, text in status.status.items():
            run.power_output[node] = text.removesuffix("\n")  # Kadeploy3 chomps the command's output
        return StepResult(ok=list(status.ok), ko=dict(status.ko))
    kind = "power_on" if run.power_kind == "on" else "power_off"
    return await boot_power.escalate(kind, nodes, run.reboot_level, run.commands, run.reboot_window,
                                     command_timeout=120.0, output=_output(ctx), gate=run.gate)
