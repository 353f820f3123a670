"""The engine's view of the micro-steps: the `StepLibrary` protocol and `MicroContext`.

`kadeploy.steps` implements `StepLibrary`; the engine only calls it. A step is
an async call on a list of hostnames that returns a `StepResult`.

Cancellation contract: a step may be cancelled at any await (micro-step or
macro-step timeout, workflow kill). It must then kill what it started on the
nodes and on the server (remote process groups, local helpers) in a
`try/finally` or `except asyncio.CancelledError` block, quickly, and let the
`CancelledError` propagate. It must not swallow it.

Errors: a step returns failed nodes in `StepResult.ko`; it raises
`KadeployError` only for an error that must abort the whole workflow (a
missing file, a wrong configuration). Any other exception fails the step's
nodes with the exception text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from kadeploy.engine.model import CustomOperation, StepResult
from kadeploy.engine.output import OutputSink


@dataclass(frozen=True)
class MicroContext:
    """Everything a micro-step may want to know about where it runs.

    `attempt` counts the previous tries of this implementation for these nodes
    (0 the first time; Kadeploy3's `reboot` starts at `hard` when > 0).
    `micro_attempt` counts the previous tries of this very micro-step.
    `timeout` is the micro-step's own timeout, else what is left of the
    macro-step's, else None: steps use it to bound their own waits.
    """

    wid: str
    cluster: str
    kind: str                   # "Deploy", "Reboot" or "Power"
    macro: str                  # interface: "SetDeploymentEnv"
    implementation: str         # "SetDeploymentEnvUntrusted"
    micro: str                  # task name as printed: "reboot", "custom_pre_send_environment-n1"
    attempt: int
    nodeset_id: str | None      # label as printed between brackets, None for the first node set
    output: OutputSink
    timeout: float | None
    macro_index: int = 0
    micro_attempt: int = 0

    @property
    def prefix(self) -> str:
        return f"[{self.nodeset_id}] " if self.nodeset_id else ""

    def debug(self, level: int, text: str) -> None:
        """Print a sub-operation line (`   * Performing a soft reboot on ...`)."""
        self.output.log(level, f"{self.prefix}   * {text}", self.nodeset_id)

    def set_state(self, hostname: str, state: str) -> None:
        """Report an in-progress state for a node (`reboot_in_progress`, `rebooted`...)."""
        self.output.node_state(hostname, self.implementation, self.micro, state)


class StepLibrary(Protocol):
    """The micro-steps of deploy, reboot and power workflows (implemented by `kadeploy.steps`)."""

    def microsteps(self, implementation: str) -> list[str]:
        """The micro-steps of an implementation, already pruned for this operation (reference 5.3).

        Raises `KadeployError` for an unknown implementation.
        """
        ...

    def bypassed(self, implementation: str) -> list[str]:
        """The micro-steps of the implementation that the pruning removed, in order (printed as
        `* Bypassing the step ...`)."""
        ...

    async def run(self, micro: str, ctx: MicroContext, nodes: list[str]) -> StepResult:
        """Run one micro-step on these nodes."""
        ...

    async def run_custom(self, op: CustomOperation, ctx: MicroContext, nodes: list[str]) -> StepResult:
        """Run one custom operation (exec, send or run) on these nodes."""
        ...
