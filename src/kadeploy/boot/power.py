"""Reboot and power escalation (reference 6.1), and power status.

For a kind (`reboot`, `power_on`, `power_off`) and a starting level, each
level's commands run on the server, one per node or one per complete group,
inside the server-wide `RebootWindow` (and the per-BMC `MinIntervalGate` when
given: a command whose BMC session was refused runs again after a backoff, as
its `retry` says); nodes whose command is missing, skipped or exits non-zero go on to the
next level; those still failing after the last level are KO with the last
error. Only exit statuses are judged: whether a node really rebooted is
`kadeploy.boot.probe`'s job. A macro-step retry should start at `hard`
(`retry_start_level`), "to avoid loop reboot on the same environment".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

from kadeploy.boot.commands import (
    DEFAULT_CONNECTOR,
    ESCALATION_KINDS,
    LEVELS,
    CommandTable,
    Invocation,
    RemoteOp,
)
from kadeploy.boot.bmcsession import session_refused
from kadeploy.boot.drivers import IPMIDriver, PowerDriverError, RedfishDriver, SessionRefused
from kadeploy.boot.process import run_process
from kadeploy.boot.result import StepResult
from kadeploy.boot.window import MinIntervalGate, RebootWindow
from kadeploy.errors import ErrorCode, KadeployError
from kadeploy.nodeset import fold

__all__ = [
    "DEFAULT_CONNECTOR",
    "CommandTable",
    "IPMIDriver",
    "MinIntervalGate",
    "RebootWindow",
    "RedfishDriver",
    "RemoteOp",
    "StatusResult",
    "StepResult",
    "escalate",
    "power_status",
    "retry_start_level",
]

Output = Callable[[int, str], None]

log = logging.getLogger("kadeploy.boot.power")


@dataclass
class StatusResult(StepResult):
    """`power_status`: per node the command's stdout (what kapower3 prints as `node: <stdout>`)."""

    status: dict[str, str] = field(default_factory=dict)


def retry_start_level(requested: str, attempt: int, levels: Sequence[str] = LEVELS) -> str:
    """The level a reboot starts at: a retried macro-step skips `soft` and starts one level up."""
    if attempt > 0 and requested == levels[0] and len(levels) > 1:
        return levels[1]
    return requested


@dataclass
class _Outcome:
    ok: bool
    error: str = ""
    stdout: str = ""
    refused: bool = False  # the BMC session could not be opened: the action was not sent


async def _run_invocation(
    invocation: Invocation,
    label: str,
    window: RebootWindow,
    gate: MinIntervalGate | None,
    timeout: float,
) -> _Outcome:
    """Run one command; one whose BMC session was refused runs again as the gate's policy says.

    The wait between attempts holds neither the BMC's slot nor the reboot window,
    so other commands go on meanwhile.
    """
    retry = gate.retry if gate is not None else None
    attempt = 0
    while True:
        outcome = await _attempt(invocation, label, window, gate, timeout)
        if outcome.ok or not outcome.refused or retry is None or attempt >= retry.retries:
            if outcome.refused and attempt:
                outcome.error = f"{outcome.error} ({attempt + 1} attempts)"
            return outcome
        delay = retry.delay(attempt)
        log.info("%s on %s: BMC session refused (%s), attempt %d of %d again in %.1fs", label,
                 fold(list(invocation.nodes)), outcome.error, attempt + 2, retry.retries + 1, delay)
        await asyncio.sleep(delay)
        attempt += 1


async def _attempt(
    invocation: Invocation,
    label: str,
    window: RebootWindow,
    gate: MinIntervalGate | None,
    timeout: float,
) -> _Outcome:
    async with AsyncExitStack() as stack:
        # the gate first: waiting for a busy BMC must not hold a window slot
        if gate is not None:
            await stack.enter_async_context(gate.hold(invocation.bmc_key))
        await stack.enter_async_context(window.slot())
        if invocation.driver is not None:
            try:
                if invocation.action == "status":
                    return _Outcome(True, stdout=await asyncio.wait_for(invocation.driver.status(timeout), timeout))
                await asyncio.wait_for(invocation.driver.power(invocation.action, timeout), timeout)  # type: ignore[arg-type]
            except PowerDriverError as exc:
                return _Outcome(False, str(exc), refused=isinstance(exc, SessionRefused))
            except asyncio.TimeoutError:
                return _Outcome(False, f"{label} command timed out after {timeout:g}s")
            return _Outcome(True)
        assert invocation.command is not None
        result = await run_process(invocation.command, timeout)
    if result.timed_out:
        return _Outcome(False, f"{label} command timed out after {timeout:g}s")
    if result.exit_status != 0:
        last_lines = [line for line in result.stderr.splitlines() if line.strip()]
        error = last_lines[-1].strip() if last_lines else f"{label} command exited with status {result.exit_status}"
        return _Outcome(False, error, result.stdout, refused=session_refused(result.stderr))
    return _Outcome(True, stdout=result.stdout)


async def escalate(
    kind: str,
    nodes: Sequence[str],
    start_level: str,
    table: CommandTable,
    window: RebootWindow,
    *,
    levels: Sequence[str] | None = None,
    command_timeout: float = 60.0,
    output: Output | None = None,
    gate: MinIntervalGate | None = None,
) -> StepResult:
    """Run `kind` on `nodes` from `start_level` up, escalating the failed nodes."""
    if kind not in ESCALATION_KINDS:
        raise ValueError(f"unknown escalation kind {kind!r}")
    levels = tuple(levels or table.levels)
    if start_level not in levels:
        raise KadeployError(
            ErrorCode.INVALID_OPTION,
            f"Invalid {kind} level {start_level!r} (expected one of {', '.join(levels)})",
        )
    emit = output or (lambda level, text: None)
    operation = list(dict.fromkeys(nodes))
    succeeded: set[str] = set()
    errors: dict[str, str] = {}
    remaining = operation
    for level in levels[levels.index(start_level):]:
        if not remaining:
            break
        label = f"{level}_{kind}"
        emit(3, f"   * Performing a {level} {kind} on {fold(remaining)}")
        plan = table.plan(kind, level, remaining, operation)
        next_level: dict[str, None] = {}
        for hostname in plan.missing:
            errors[hostname] = f"{label} command is not provided"
            emit(3, f"   ! No {level} {kind} command is defined for {hostname}")
            next_level[hostname] = None
        for hostname, reason in plan.skipped.items():
            errors[hostname] = reason
            emit(3, f"   * {reason}")
            next_level[hostname] = None
        outcomes = await asyncio.gather(
            *(_run_invocation(inv, label, window, gate, command_timeout) for inv in plan.invocations)
        )
        for invocation, outcome in zip(plan.invocations, outcomes):
            for hostname in invocation.nodes:  # a group's status is copied to all its members
                if outcome.ok:
                    succeeded.add(hostname)
                    errors.pop(hostname, None)
                else:
                    succeeded.discard(hostname)
                    errors[hostname] = outcome.error
                    next_level[hostname] = None
        remaining = [hostname for hostname in operation if hostname in next_level]
    return StepResult(
        ok=[hostname for hostname in operation if hostname in succeeded],
        ko={hostname: errors.get(hostname, f"{kind} failed") for hostname in operation if hostname not in succeeded},
    )


async def power_status(
    nodes: Sequence[str],
    table: CommandTable,
    window: RebootWindow,
    *,
    command_timeout: float = 60.0,
    gate: MinIntervalGate | None = None,
) -> StatusResult:
    """Run each node's `power_status` command once; its stdout is the node's status."""
    result = StatusResult()
    invocations: list[Invocation] = []
    for hostname in dict.fromkeys(nodes):
        invocation = table.single("power_status", hostname)
        if invocation is None:
            result.ko[hostname] = "power_status command is not provided"
            continue
        if invocation.driver is not None:
            invocation = Invocation(invocation.nodes, driver=invocation.driver, action="status", bmc_key=invocation.bmc_key)
        invocations.append(invocation)
    outcomes = await asyncio.gather(
        *(_run_invocation(inv, "power_status", window, gate, command_timeout) for inv in invocations)
    )
    for invocation, outcome in zip(invocations, outcomes):
        hostname = invocation.nodes[0]
        if outcome.ok:
            result.ok.append(hostname)
            result.status[hostname] = outcome.stdout.strip()
        else:
            result.ko[hostname] = outcome.error
    return result
