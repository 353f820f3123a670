"""What a workflow is made of: implementations, micro-step settings, custom operations.

These are the typed, validated descriptions the engine runs; the config room
(cluster files, `--force-steps`) and the server (request `automata`,
`custom_operations`) build them. Imports nothing but `kadeploy.errors`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from kadeploy.errors import ErrorCode, KadeployError
from kadeploy.results import StepResult  # noqa: F401  (re-exported by kadeploy.engine)



CustomAction = Literal["exec", "send", "run"]
Scattering = Literal["tree", "chain"]

_ACTIONS = ("exec", "send", "run")
_SCATTERINGS = ("tree", "chain")
_NAME = re.compile(r"^[\w.-]+$")


@dataclass(frozen=True)
class CustomOperation:
    """One admin or user custom operation (reference 5.9), run by `StepLibrary.run_custom`.

    `exec` runs `command` on the nodes; `send` puts `file` into `destination`
    (`$KADEPLOY_*` variables substituted by the library); `run` sends the script
    `file` and runs it with `params`. Each one is its own micro-step with its own
    `timeout` (0 = none) and `retries`.
    """

    action: CustomAction
    name: str
    command: str | None = None
    file: str | None = None
    destination: str | None = None
    params: str | None = None
    timeout: float = 0.0
    retries: int = 0
    scattering: Scattering = "tree"

    def __post_init__(self) -> None:
        where = f"custom operation {self.name!r}"
        if self.action not in _ACTIONS:
            raise KadeployError(ErrorCode.INVALID_CUSTOMOP,
                                f"{where}: action must be one of exec, send, run (got {self.action!r})")
        if not self.name or not _NAME.match(self.name):
            raise KadeployError(ErrorCode.INVALID_CUSTOMOP,
                                f"{where}: the name may only contain letters, digits, '_', '.' and '-'")
        if self.action == "exec" and not self.command:
            raise KadeployError(ErrorCode.INVALID_CUSTOMOP, f"{where}: action exec needs a 'command'")
        if self.action == "send" and not (self.file and self.destination):
            raise KadeployError(ErrorCode.INVALID_CUSTOMOP,
                                f"{where}: action send needs a 'file' and a 'destination'")
        if self.action == "run" and not self.file:
            raise KadeployError(ErrorCode.INVALID_CUSTOMOP, f"{where}: action run needs a 'file'")
        if self.scattering not in _SCATTERINGS:
            raise KadeployError(ErrorCode.INVALID_CUSTOMOP,
                                f"{where}: scattering must be tree or chain (got {self.scattering!r})")
        if self.timeout < 0 or self.retries < 0:
            raise KadeployError(ErrorCode.INVALID_CUSTOMOP, f"{where}: timeout and retries must be >= 0")


@dataclass(frozen=True)
class MicroStepConf:
    """Per micro-step settings of an implementation (cluster file `microsteps:`).

    `raisable=False` keeps the nodes that finish (or fail) at this micro-step in
    the macro-step instance until all its nodes are done, as Kadeploy3 does.
    `substitute` replaces the micro-step by custom operations.
    """

    timeout: float = 0.0
    retries: int = 0
    raisable: bool = True
    breakpoint: bool = False
    pre_ops: tuple[CustomOperation, ...] = ()
    post_ops: tuple[CustomOperation, ...] = ()
    substitute: tuple[CustomOperation, ...] | None = None

    def __post_init__(self) -> None:
        if self.timeout < 0 or self.retries < 0:
            raise KadeployError(ErrorCode.INVALID_OPTION, "micro-step timeout and retries must be >= 0")
        # Accept lists from callers but keep the dataclass hashable and immutable.
        object.__setattr__(self, "pre_ops", tuple(self.pre_ops))
        object.__setattr__(self, "post_ops", tuple(self.post_ops))
        if self.substitute is not None:
            object.__setattr__(self, "substitute", tuple(self.substitute))


@dataclass(frozen=True)
class ImplementationSpec:
    """One implementation of a macro-step: `{name, retries, timeout}` plus options.

    `timeout` 0 means none. `raisable=False` means no node leaves an instance of
    this implementation (to the next macro-step, a retry or a fallback) before
    every node of that instance has finished it. `breakpoint=True` stops nodes
    before the implementation runs.
    """

    name: str
    retries: int = 0
    timeout: float = 0.0
    raisable: bool = True
    breakpoint: bool = False
    microsteps: dict[str, MicroStepConf] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name or not re.match(r"^\w+$", self.name):
            raise KadeployError(ErrorCode.INVALID_OPTION, f"Invalid macro-step implementation name {self.name!r}")
        if self.retries < 0:
            raise KadeployError(ErrorCode.INVALID_OPTION, f"{self.name}: retries must be >= 0")
        if self.timeout < 0:
            raise KadeployError(ErrorCode.INVALID_OPTION, f"{self.name}: timeout must be >= 0")


MacroStepSpec = tuple[str, list[ImplementationSpec]]
"""A macro-step: its interface name (`SetDeploymentEnv`) and its ordered implementations."""
