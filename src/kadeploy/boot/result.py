"""The result of a boot-room operation on a set of nodes: the shared `StepResult`.

Re-exported from `kadeploy.results` so that a micro-step can return what the
boot room gives it unchanged.
"""

from __future__ import annotations

from kadeploy.results import StepResult

__all__ = ["StepResult"]
