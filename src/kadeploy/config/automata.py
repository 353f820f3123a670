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

MACROSTEP_INTERFACES = ("SetDeploymentEnv", "BroadcastEnv", "BootNewEnv")

IMPLEMENTATION_TYPES: dict[str, tuple[str, ...]] = {
    "SetDeploymentEnv": ("Untrusted", "Kexec", "Prod", "UntrustedCustomPreInstall", "Nfsroot", "Dummy"),
    "BroadcastEnv": ("Kascade", "Kastafior", "Chain", "Tree", "Bittorrent", "Custom", "Dummy"),
    "BootNewEnv": ("Kexec", "Classical", "HardReboot", "PivotRoot", "Dummy"),
}

#: Implementations whose timeout must cover `timeouts/reboot` (Kadeploy3's check).
REBOOT_IMPLEMENTATIONS = frozenset(
    {"SetDeploymentEnvUntrusted", "SetDeploymentEnvNfsroot", "BootNewEnvClassical", "BootNewEnvHardReboot"}
)
#: Implementations whose timeout must cover `timeouts/kexec`.
KEXEC_IMPLEMENTATIONS = frozenset({"SetDeploymentEnvKexec", "BootNewEnvKexec"})

#: Every micro-step name (Kadeploy3's `ms_*` methods), for validating `microsteps`.
MICROSTEP_NAMES = frozenset(
    {
        "switch_pxe", "set_vlan", "reboot", "wait_reboot", "send_key_in_deploy_env",
        "create_partition_table", "format_deploy_part", "mount_deploy_part", "format_tmp_part",
        "format_swap_part", "mount_tmp_part", "send_deployment_kernel", "sync", "kexec",
        "manage_admin_pre_install", "check_nodes", "send_environment", "decompress_environment",
        "manage_admin_post_install", "manage_user_post_install", "check_kernel_files", "send_key",
        "install_bootloader", "umount_deploy_part", "reboot_from_deploy_env", "load_drivers",
        "power", "dummy",
    }
)


def implementation_name(interface: str, type_: str) -> str:
    """`SetDeploymentEnv` + `Untrusted` -> `SetDeploymentEnvUntrusted`."""
    return type_ if type_.startswith(interface) else interface + type_


def split_implementation_name(name: str) -> tuple[str, str] | None:
    """`BootNewEnvKexec` -> (`BootNewEnv`, `Kexec`); None if it is no known implementation."""
    for interface, types in IMPLEMENTATION_TYPES.items():
        if name.startswith(interface) and name[len(interface):] in types:
            return interface, name[len(interface):]
    return None


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
        if value not in MICROSTEP_NAMES:
            raise ValueError(f"unknown micro-step \"{value}\" (known: {', '.join(sorted(MICROSTEP_NAMES))})")
        return value


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
            types = IMPLEMENTATION_TYPES[self.interface]
            short = self.type[len(self.interface):] if self.type.startswith(self.interface) else self.type
            if short not in types:
                raise ValueError(
                    f"type: unknown {self.interface} implementation \"{self.type}\" (known: {', '.join(types)})"
                )
            self.type = short
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
