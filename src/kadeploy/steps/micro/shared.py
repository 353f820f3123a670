"""What every micro-step family shares: the declaration, the node shell and the verdict.

Room: steps (imports the engine's model, `boot`, `remote` and the plan; never
`server/`). A micro-step is a coroutine function named as in Kadeploy3's
output, `async def <name>(run, ctx, nodes) -> StepResult`, declared once by
`@microstep("<name>", "summary")` above it in its family's module. `run` is
the cluster's `ClusterRun` (`steps/context.py`) seen through the family's
Protocol: the Protocol lists what the family's micro-steps may read (as
read-only properties) and call, so a reader sees a step's reach in its
signature; `NodeSteps` (`steps/deploy.py`) hands every step the same run.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from kadeploy.engine import MicroContext, StepResult
from kadeploy.remote import Executor
from kadeploy.remote.result import CommandResult
from kadeploy.steps import commands
from kadeploy.steps.plan import DeployPlan
from kadeploy.vocabulary import REGISTRIES, Kind

#: A micro-step: the run (seen through its family's Protocol), where it runs, on which nodes.
MicroStep = Callable[[Any, MicroContext, list[str]], Awaitable[StepResult]]

#: Every micro-step is declared by the `@microstep` line above its function; the
#: configuration, the API, the docs and `NodeSteps` read this registry.
MICROSTEPS = REGISTRIES[Kind.MICROSTEP]

#: seconds a short control command may take when no step timeout bounds it
DEFAULT_COMMAND_TIMEOUT = 300.0


def microstep(name: str, summary: str) -> Callable[[MicroStep], MicroStep]:
    """Declare the function below as the micro-step `name` (Kadeploy3's `ms_<name>`); `summary` goes to the docs."""
    return MICROSTEPS.decorator(name, summary)


class NodeShell(Protocol):
    """The executor handle: commands on the nodes, at the address each is reached at now."""

    @property
    def executor(self) -> Executor: ...

    @property
    def debug(self) -> Callable[[str, str], None] | None:
        """Per-node debug lines (`kadeploy3 -d`), or None when nobody asked for them."""

    def subset(self, nodes: list[str]) -> dict[str, str]:
        """The hostname -> address map of `nodes` (changes when `set_vlan` moves them)."""


class Deployment(Protocol):
    """The resolved plan and the server's version: what the node-side variables are made of."""

    @property
    def plan(self) -> DeployPlan: ...

    @property
    def version(self) -> str: ...


class DeploymentKernel(Protocol):
    """The deployment environment's kernel, initrd and command line (PXE-booted or kexec'd)."""

    @property
    def deploy_kernel(self) -> str: ...
    @property
    def deploy_initrd(self) -> str: ...
    @property
    def deploy_kernel_params(self) -> str: ...


async def remote(run: NodeShell, nodes: list[str], command: str, *, input: bytes | Path | None = None,
                 timeout: float | None = None, env: dict[str, str] | None = None,
                 relay: bool = True) -> StepResult:
    """Run a command on nodes; exit status 0 is OK, anything else KO with its stderr.

    `relay=False`: the command takes its node down, so it never goes through the executor's tree."""
    results = await run.executor.run(run.subset(nodes), command, input=input,
                                     timeout=timeout or DEFAULT_COMMAND_TIMEOUT, env=env, relay=relay)
    _debug(run, command, results)
    return verdict(nodes, results)


def _debug(run: NodeShell, command: str, results: dict[str, CommandResult]) -> None:
    debug = run.debug
    if debug is None:
        return
    for node, result in results.items():
        debug(node, f"COMMAND: {command}")
        for stream, text in (("STDOUT", result.stdout), ("STDERR", result.stderr)):
            for line in text.splitlines():
                debug(node, f"{stream}: {line}")
        debug(node, f"STATUS: {result.exit_status if result.error is None else result.error}")


def variables(run: Deployment) -> dict[str, str]:
    """The variables Kadeploy3 exports to the administrator's scripts (`KADEPLOY_*`)."""
    return commands.deploy_variables(run.plan, run.version)


def verdict(nodes: list[str], results: dict[str, CommandResult]) -> StepResult:
    """One result per node: OK, its failure reason, or "no result" when the executor gave none."""
    ok: list[str] = []
    ko: dict[str, str] = {}
    for node in nodes:
        result = results.get(node)
        if result is None:
            ko[node] = "no result"
        elif result.ok:
            ok.append(node)
        else:
            ko[node] = result.reason
    return StepResult(ok=ok, ko=ko)
