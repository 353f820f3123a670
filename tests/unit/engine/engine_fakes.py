"""In-process fake steps for the engine tests: behaviours are small async functions.

A uniquely named module (not conftest) so that tests can import it without
clashing with other rooms' helpers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from kadeploy.engine import ImplementationSpec, MicroContext, StepResult
from kadeploy.errors import ErrorCode, KadeployError

Behaviour = Callable[[MicroContext, list[str]], Awaitable[StepResult]]

NODES = [f"node-{i}.c1" for i in range(1, 5)]

MICROSTEPS = {
    "SetDeploymentEnvDummy": ["dummy_a", "dummy_b"],
    "SetDeploymentEnvUntrusted": ["switch_pxe", "reboot", "wait_reboot", "format_deploy_part"],
    "SetDeploymentEnvKexec": ["kexec", "wait_reboot", "format_deploy_part"],
    "BroadcastEnvKascade": ["send_environment", "manage_user_post_install", "sync"],
    "BroadcastEnvChain": ["send_environment", "sync"],
    "BootNewEnvKexec": ["kexec", "wait_reboot"],
    "BootNewEnvClassical": ["switch_pxe", "reboot_from_deploy_env", "wait_reboot"],
    "BootNewEnvHardReboot": ["switch_pxe", "reboot", "wait_reboot"],
    "Fail": ["step"], "Timeout": ["step"], "Retry": ["step"], "Success": ["step"],
}

STEP = 0.01


async def succeed(ctx: MicroContext, nodes: list[str]) -> StepResult:
    await asyncio.sleep(STEP)
    return StepResult(ok=list(nodes))


def fail(message: str = "boom") -> Behaviour:
    async def behaviour(ctx: MicroContext, nodes: list[str]) -> StepResult:
        await asyncio.sleep(STEP)
        return StepResult(ko={node: message for node in nodes})
    return behaviour


def fail_on(bad: Iterable[str], message: str = "boom", while_attempt_below: int | None = None,
            while_micro_attempt_below: int | None = None) -> Behaviour:
    """Fail `bad` nodes (only on early attempts if a bound is given), succeed the others."""
    bad = set(bad)

    async def behaviour(ctx: MicroContext, nodes: list[str]) -> StepResult:
        await asyncio.sleep(STEP)
        failing = bad
        if while_attempt_below is not None and ctx.attempt >= while_attempt_below:
            failing = set()
        if while_micro_attempt_below is not None and ctx.micro_attempt >= while_micro_attempt_below:
            failing = set()
        return StepResult(ok=[n for n in nodes if n not in failing],
                          ko={n: message for n in nodes if n in failing})
    return behaviour


async def never(ctx: MicroContext, nodes: list[str]) -> StepResult:
    await asyncio.sleep(3600)
    raise AssertionError("never returns")


def sleep_on(slow: Iterable[str], seconds: float) -> Behaviour:
    """Nodes in `slow` take `seconds`; a step returns for all at once, so run them as one set."""
    slow = set(slow)

    async def behaviour(ctx: MicroContext, nodes: list[str]) -> StepResult:
        await asyncio.sleep(seconds if slow & set(nodes) else STEP)
        return StepResult(ok=list(nodes))
    return behaviour


@dataclass
class Call:
    implementation: str
    micro: str
    nodes: tuple[str, ...]
    attempt: int
    micro_attempt: int
    nodeset_id: str | None
    timeout: float | None


@dataclass
class FakeLibrary:
    """A `StepLibrary` whose micro-steps are behaviours keyed by (implementation, micro) or micro."""

    behaviours: dict = field(default_factory=dict)
    microstep_lists: dict[str, list[str]] = field(default_factory=lambda: dict(MICROSTEPS))
    bypassed_lists: dict[str, list[str]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    cancelled: list[Call] = field(default_factory=list)
    running: int = 0

    def microsteps(self, implementation: str) -> list[str]:
        try:
            return list(self.microstep_lists[implementation])
        except KeyError:
            raise KadeployError(ErrorCode.INVALID_OPTION, f"Unknown implementation {implementation}") from None

    def bypassed(self, implementation: str) -> list[str]:
        return list(self.bypassed_lists.get(implementation, []))

    async def run(self, micro: str, ctx: MicroContext, nodes: list[str]) -> StepResult:
        behaviour = self.behaviours.get((ctx.implementation, micro)) or self.behaviours.get(micro) or succeed
        return await self._call(behaviour, ctx, nodes)

    async def run_custom(self, op, ctx: MicroContext, nodes: list[str]) -> StepResult:
        behaviour = self.behaviours.get(("custom", op.name)) or succeed
        return await self._call(behaviour, ctx, nodes)

    async def _call(self, behaviour: Behaviour, ctx: MicroContext, nodes: list[str]) -> StepResult:
        call = Call(ctx.implementation, ctx.micro, tuple(nodes), ctx.attempt, ctx.micro_attempt,
                    ctx.nodeset_id, ctx.timeout)
        self.calls.append(call)
        self.running += 1
        try:
            return await behaviour(ctx, nodes)
        except asyncio.CancelledError:
            self.cancelled.append(call)
            raise
        finally:
            self.running -= 1

    def ran(self, implementation: str, micro: str) -> list[str]:
        """Every node that ran this micro-step, once per run, sorted."""
        return sorted(n for c in self.calls if (c.implementation, c.micro) == (implementation, micro)
                      for n in c.nodes)


def deploy(setenv: list[ImplementationSpec] | None = None, broadcast: list[ImplementationSpec] | None = None,
           boot: list[ImplementationSpec] | None = None):
    """Three deploy macro-steps, Dummy-like defaults where not given."""
    return [
        ("SetDeploymentEnv", setenv or [ImplementationSpec("SetDeploymentEnvUntrusted")]),
        ("BroadcastEnv", broadcast or [ImplementationSpec("BroadcastEnvKascade")]),
        ("BootNewEnv", boot or [ImplementationSpec("BootNewEnvKexec")]),
    ]


def assert_each_node_once(result, nodes=NODES) -> None:
    """ok, ko, brk and processing partition the nodes: nobody lost, nobody twice."""
    seen = [*result.ok, *result.ko, *result.brk, *result.processing]
    assert sorted(seen) == sorted(nodes)
    assert len(seen) == len(set(seen))
