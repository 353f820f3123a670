"""The deployment automaton as configured: macro-step implementations,
micro-step settings and custom operations (reference §3.3, §5.2, §5.9).

A cluster file lists, for each macro-step interface (`SetDeploymentEnv`,
`BroadcastEnv`, `BootNewEnv`), the implementations to try in order. The
YAML names an implementation by its short `type` (`Untrusted`); the engine
and the output use the full name (`SetDeploymentEnvUntrusted`), given by
`ImplementationConf.name`. The same models parse the `automata` of a request
(`--force-steps`, full names in `name`) with `parse_request_automata`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from kadeploy.config.validation import ConfigModel, resolve_path
from kadeploy.vocabulary import KADEPLOY3_NAMES, REGISTRIES, Kind

MACROSTEP_INTERFACES = ("SetDeploymentEnv", "BroadcastEnv", "BootNewEnv")


def _macrostep(name: str) -> Any:
    """The declaration of a deploy implementation (`kadeploy.steps.macrosteps`, loaded on first use)."""
    return REGISTRIES[Kind.MACROSTEP].get(name)


def implementation_types(interface: str) -> list[str]:
    """The short names (`Untrusted`) of the implementations of an interface that we provide."""
    return [decl.value.short_name for decl in REGISTRIES[Kind.MACROSTEP].declarations()
            if decl.value.interface == interface]


def implementation_name(interface: str, type_: str) -> str:
    """`SetDeploymentEnv` + `Untrusted` -> `SetDeploymentEnvUntrusted`."""
    return type_ if type_.startswith(interface) else interface + type_


def waits_for(name: str) -> str | None:
    """`reboot` or `kexec`: the timeout an implementation's own timeout must cover (Kadeploy3's check)."""
    return _macrostep(name).waits_for if name in REGISTRIES[Kind.MACROSTEP] else None


class CustomOperation(ConfigModel):
    """One custom operation (`exec`, `send` or `run`) around or instead of a micro-step.

    `file` of `send`/`run` operations defined by administrators is resolved
    against the configuration directory and must be readable; in requests it
    is a client file reference, fetched like other files.
    """

    action: Literal["exec", "send", "run"]
    name: str | None = None
    command: str | None = None
    file: str | None = None
    destination: str | None = None
    params: str = ""
    timeout: int = Field(default=0, ge=0)
    retries: int = Field(default=0, ge=0)
    scattering: Literal["tree", "chain"] = "tree"

    @model_validator(mode="after")
    def _fields_of_action(self, info: ValidationInfo) -> CustomOperation:
        needed = {"exec": ("command",), "send": ("file", "destination"), "run": ("file",)}[self.action]
        for key in needed:
            if getattr(self, key) is None:
                raise ValueError(f"{key}: mandatory field is missing (action {self.action})")
        if self.file is not None and (info.context or {}).get("check_files"):
            path = resolve_path(self.file, info)
            if not path.is_file():
                raise ValueError(f"file: {path} is not a readable file")
            self.file = str(path)
        return self

    @property
    def label(self) -> str:
        """The name shown in outputs when none is given: the action and the file."""
        if self.name:
            return self.name
        return f"{self.action}-{Path(self.file).name}" if self.file else self.action


class MicrostepConf(ConfigModel):
    """Settings of one micro-step of an implementation, with its custom operations."""

    name: str
    timeout: int = Field(default=0, ge=0)
    retries: int = Field(default=0, ge=0)
    raisable: bool = True
    breakpoint: bool = False
    substitute: list[CustomOperation] = Field(default_factory=list)
    pre_ops: list[CustomOperation] = Field(default_factory=list, alias="pre-ops")
    post_ops: list[CustomOperation] = Field(default_factory=list, alias="post-ops")

    @field_validator("name")
    @classmethod
    def _known_microstep(cls, value: str) -> str:
        return REGISTRIES[Kind.MICROSTEP].check(value)


class ImplementationConf(ConfigModel):
    """One macro-step implementation to try: `{type, retries, timeout, ...}`.

    `timeout` 0 means no timeout, as in Kadeploy3. `interface` is filled in
    from the key the implementation is listed under.
    """

    type: str
    retries: int = Field(default=0, ge=0)
    timeout: int = Field(default=0, ge=0)
    raisable: bool = True
    breakpoint: bool = False
    microsteps: list[MicrostepConf] = Field(default_factory=list)
    interface: str = Field(default="", exclude=True)

    @model_validator(mode="after")
    def _known_type(self) -> ImplementationConf:
        if self.interface:
            name = implementation_name(self.interface, self.type)
            if name not in REGISTRIES[Kind.MACROSTEP] or _macrostep(name).interface != self.interface:
                supported = ", ".join(implementation_types(self.interface))
                if name in KADEPLOY3_NAMES[Kind.MACROSTEP]:
                    raise ValueError(f"type: the {self.interface} implementation \"{self.type}\" is not supported "
                                     f"by this Kadeploy (supported: {supported})")
                raise ValueError(f"type: unknown {self.interface} implementation \"{self.type}\" "
                                 f"(supported: {supported})")
            self.type = _macrostep(name).short_name
        return self

    @property
    def name(self) -> str:
        """Full implementation name, e.g. `SetDeploymentEnvUntrusted`."""
        return implementation_name(self.interface, self.type)

    def microstep(self, name: str) -> MicrostepConf | None:
        """The settings configured for one micro-step, if any."""
        for micro in self.microsteps:
            if micro.name == name:
                return micro
        return None


class MacrostepsConf(ConfigModel):
    """`automata/macrosteps`: the three interfaces are all mandatory when given."""

    SetDeploymentEnv: list[ImplementationConf] = Field(min_length=1)
    BroadcastEnv: list[ImplementationConf] = Field(min_length=1)
    BootNewEnv: list[ImplementationConf] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _tell_implementations_their_interface(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for interface in MACROSTEP_INTERFACES:
            implementations = data.get(interface)
            if isinstance(implementations, list):
                data[interface] = [
                    {**item, "interface": interface} if isinstance(item, dict) else item for item in implementations
                ]
        return data

    def as_dict(self) -> dict[str, list[ImplementationConf]]:
        return {interface: list(getattr(self, interface)) for interface in MACROSTEP_INTERFACES}


class AutomataConf(ConfigModel):
    """`automata`: only `macrosteps` is defined."""

    macrosteps: MacrostepsConf


def default_automata() -> dict[str, list[ImplementationConf]]:
    """Kadeploy3's automaton when a cluster file has no `automata` section."""
    raw = {
        "SetDeploymentEnv": [{"type": "Untrusted", "timeout": 200, "retries": 2}],
        "BroadcastEnv": [{"type": "Kascade", "timeout": 300, "retries": 2}],
        "BootNewEnv": [
            {"type": "Classical", "timeout": 150, "retries": 0},
            {"type": "HardReboot", "timeout": 120, "retries": 1},
        ],
    }
    return MacrostepsConf.model_validate(raw).as_dict()


def parse_request_automata(data: Any, source: str = "automata") -> dict[str, list[ImplementationConf]]:
    """Parse the `automata` of a deployment request (`--force-steps`).

    The request names implementations in full: `{SetDeploymentEnv: [{name:
    SetDeploymentEnvUntrusted, retries: 1, timeout: 200}], ...}`. Raises
    ConfigError; the API edge may re-raise it with its own error code.
    """
    from kadeploy.config.validation import validate_model

    if isinstance(data, dict):
        converted: dict[str, Any] = {}
        for interface, items in data.items():
            if isinstance(items, list):
                items = [
                    {("type" if key == "name" else key): value for key, value in item.items()}
                    if isinstance(item, dict) else item
                    for item in items
                ]
            converted[interface] = items
        data = converted
    model, _ = validate_model(MacrostepsConf, data, source)
    return model.as_dict()
