"""Per-node micro-step durations, for `kastat3 --steps` (room `steps`).

Kadeploy3 only prints `~ Time in <micro>: Ns` per node set and keeps one
duration per macro-step in its `log` table; analysing where the time goes
meant parsing client output (`kanalyze`). Here the runner wraps the step
library in `TimedLibrary`, which measures every micro-step call and credits
each node of the call with its duration; the runner stores them with the
node's statistics record (`log.micro_steps`: `[[implementation, micro, seconds], ...]`).
A micro-step killed by a timeout or a cancellation is recorded with the time
it actually took.
"""

from __future__ import annotations

import time
from typing import Any


class TimedLibrary:
    """A `StepLibrary` that delegates to `inner` and records how long each micro-step took on each node."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.timings: dict[str, list[list[Any]]] = {}

    def microsteps(self, implementation: str) -> list[str]:
        return self.inner.microsteps(implementation)

    def bypassed(self, implementation: str) -> list[str]:
        return self.inner.bypassed(implementation)

    async def run(self, micro: str, ctx: Any, nodes: list[str]) -> Any:
        started = time.monotonic()
        try:
            return await self.inner.run(micro, ctx, nodes)
        finally:
            self._record(ctx, nodes, time.monotonic() - started)

    async def run_custom(self, op: Any, ctx: Any, nodes: list[str]) -> Any:
        started = time.monotonic()
        try:
            return await self.inner.run_custom(op, ctx, nodes)
        finally:
            self._record(ctx, nodes, time.monotonic() - started)

    def _record(self, ctx: Any, nodes: list[str], seconds: float) -> None:
        entry = [str(ctx.implementation), str(ctx.micro), round(seconds, 3)]
        for node in nodes:
            self.timings.setdefault(node, []).append(list(entry))

    def of(self, node: str) -> list[list[Any]]:
        """The node's micro-step durations, in the order they ran."""
        return self.timings.get(node, [])

    def __getattr__(self, name: str) -> Any:
        # anything else the engine or the runner reads from the library
        return getattr(self.inner, name)
