"""An implementation's task list: micro-steps with custom operations woven in, and breakpoints.

Kadeploy3 turns every custom operation into a micro-step of its own, named
`custom_{pre,sub,post}_<micro>-<name>`, placed before, instead of or after its
micro-step, with its own timeout and retries. This module builds that list once
per implementation and resolves `--breakpoint Macro[:micro]` against it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kadeploy.engine.model import CustomOperation, ImplementationSpec, MicroStepConf
from kadeploy.errors import ErrorCode, KadeployError

_BREAKPOINT = re.compile(r"^(\w+)(?::(\w+))?$")


@dataclass(frozen=True)
class StepTask:
    """One entry of an implementation's task list."""

    name: str                        # as printed and in errors: "reboot", "custom_pre_sync-n1"
    micro: str                       # the micro-step it belongs to
    operation: CustomOperation | None
    timeout: float
    retries: int
    raisable: bool
    breakpoint: bool

    @property
    def display(self) -> str:
        """The level-3 line: the micro-step name, or `<micro>-<name>` for a custom operation."""
        for prefix in ("custom_pre_", "custom_sub_", "custom_post_"):
            if self.name.startswith(prefix):
                return self.name[len(prefix):]
        return self.name


def _custom_tasks(kind: str, micro: str, ops: tuple[CustomOperation, ...]) -> list[StepTask]:
    return [StepTask(name=f"custom_{kind}_{micro}-{op.name}", micro=micro, operation=op,
                     timeout=op.timeout, retries=op.retries, raisable=True, breakpoint=False)
            for op in ops]


def build_tasks(impl: ImplementationSpec, microsteps: list[str], breakpoint_micro: str | None = None) -> list[StepTask]:
    """Weave custom operations into the micro-step list and mark the breakpoint.

    A breakpoint on a substituted micro-step stops at its first substitute, so
    that `Macro:micro` still means "stop where this micro-step would run".
    """
    tasks: list[StepTask] = []
    for micro in microsteps:
        conf = impl.microsteps.get(micro, MicroStepConf())
        stop_here = conf.breakpoint or micro == breakpoint_micro
        tasks.extend(_custom_tasks("pre", micro, conf.pre_ops))
        if conf.substitute:
            substitutes = _custom_tasks("sub", micro, conf.substitute)
            if stop_here:
                first = substitutes[0]
                substitutes[0] = StepTask(first.name, first.micro, first.operation, first.timeout,
                                          first.retries, first.raisable, True)
            tasks.extend(substitutes)
        else:
            tasks.append(StepTask(name=micro, micro=micro, operation=None, timeout=conf.timeout,
                                  retries=conf.retries, raisable=conf.raisable, breakpoint=stop_here))
        tasks.extend(_custom_tasks("post", micro, conf.post_ops))
    return tasks


@dataclass(frozen=True)
class Breakpoint:
    """`--breakpoint Macro[:micro]`; `macro` is an interface or an implementation name."""

    macro: str
    micro: str | None = None

    @classmethod
    def parse(cls, text: str) -> Breakpoint:
        match = _BREAKPOINT.match(text.strip())
        if not match:
            raise KadeployError(ErrorCode.INVALID_OPTION,
                                f"Invalid breakpoint {text!r}: expected Macro or Macro:micro")
        return cls(match.group(1), match.group(2))

    def matches(self, interface: str, implementation: str) -> bool:
        return self.macro in (interface, implementation)

    def __str__(self) -> str:
        return f"{self.macro}:{self.micro}" if self.micro else self.macro
