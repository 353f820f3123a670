"""The `dummy` micro-step of the *Dummy implementations: Kadeploy3's test step, touching no node.

Room: steps. It reads nothing of the run.
"""

from __future__ import annotations

import asyncio
import random

from kadeploy.engine import MicroContext, StepResult
from kadeploy.steps.micro.shared import microstep


@microstep("dummy", "sleep a moment; touches no node (Kadeploy3's test step)")
async def dummy(run: object, ctx: MicroContext, nodes: list[str]) -> StepResult:
    await asyncio.sleep(random.uniform(0.2, 1.0))
    return StepResult(ok=list(nodes))
