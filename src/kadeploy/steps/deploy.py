"""`NodeSteps`: the engine's `StepLibrary` for one cluster of one operation (reference 5.2, 5.3).

It answers which micro-steps an implementation runs here (Kadeploy3's
canonical list, pruned for this deployment) and dispatches each micro-step
by name to its declaration in the registry; the micro-steps themselves live
by family in `kadeploy.steps.micro`, each over the slice of the `ClusterRun`
its family reads.
"""

from __future__ import annotations

from kadeploy.engine import CustomOperation, MicroContext, StepResult
from kadeploy.errors import ErrorCode, KadeployError
from kadeploy.steps.context import ClusterRun
from kadeploy.steps.macrosteps import canonical_microsteps
from kadeploy.steps.micro import MICROSTEPS, MicroStep
from kadeploy.steps.micro.custom import run_custom_operation
from kadeploy.steps.pruning import prune

__all__ = ["MICROSTEPS", "NodeSteps"]


class NodeSteps:
    """`StepLibrary` for deploy, reboot and power workflows of one cluster."""

    def __init__(self, run: ClusterRun, kind: str) -> None:
        self.run_ctx = run
        self.kind = kind  # "Deploy", "Reboot", "Power"

    def microsteps(self, implementation: str) -> list[str]:
        canonical = self._canonical(implementation)
        if self.kind != "Deploy":
            return [m for m in canonical if m != "set_vlan" or self.run_ctx.plan.vlan]
        if implementation.endswith("Dummy"):
            return list(canonical)
        return prune(implementation, canonical, self.run_ctx.plan,
                     has_admin_postinstall=bool(self.run_ctx.plan.admin_postinstalls))

    def bypassed(self, implementation: str) -> list[str]:
        kept = set(self.microsteps(implementation))
        return [name for name in self._canonical(implementation) if name not in kept]

    def _canonical(self, implementation: str) -> tuple[str, ...]:
        canonical = canonical_microsteps(self.kind, implementation)
        if canonical is None:
            raise KadeployError(ErrorCode.INVALID_OPTION, f"Unknown macro-step implementation {implementation!r}")
        return canonical

    async def run(self, micro: str, ctx: MicroContext, nodes: list[str]) -> StepResult:
        try:
            step: MicroStep = MICROSTEPS.get(micro)
        except ValueError as exc:
            raise KadeployError(ErrorCode.INVALID_OPTION, str(exc)) from None
        return await step(self.run_ctx, ctx, nodes)

    async def run_custom(self, op: CustomOperation, ctx: MicroContext, nodes: list[str]) -> StepResult:
        return await run_custom_operation(self.run_ctx, op, ctx, nodes)
