"""A cluster-specific file (`<cluster>.conf`, reference §3.3).

Disk layout, deployment kernel, reboot/power/console commands, timeouts and
the automaton of one cluster. Scripts named by the file (partitioning,
bootloader) and group files of remote operations are read at load time,
relative to the configuration directory: a missing script is a configuration
error at start, not a failed deployment later.

Our extension: a `remoteops` entry may name a `driver` (`ipmi`, `redfish`)
with `address`, `user`, `password` instead of a `cmd` (and, for redfish, the
`ca_file` its HTTPS certificate is checked against); the boot room drives it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from kadeploy.config.automata import (
    AutomataConf,
    ImplementationConf,
    default_automata,
    waits_for,
)
from kadeploy.config.timeout import TimeoutExpr
from kadeploy.config.validation import ConfigModel, read_text_file, resolve_path, split_list
from kadeploy.templates import check_template
from kadeploy.vocabulary import REGISTRIES, Kind

DEFAULT_LEVEL_NAMES = ["soft", "hard", "very_hard"]


class PartitionsConfig(ConfigModel):
    """Partition numbers on the block device; -1 means "none"."""

    swap: int | None = None  # mandatory unless partitioning/disable_swap
    prod: int = -1
    deploy: int
    tmp: int = -1


class PartitioningConfig(ConfigModel):
    block_device: str
    partitions: PartitionsConfig
    disable_swap: bool = False
    script: str  # the script's content once loaded
    script_path: str = Field(default="", exclude=True)  # absolute path of the script

    @model_validator(mode="before")
    @classmethod
    def _remember_script_path(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, dict) and isinstance(data.get("script"), str):
            data = {**data, "script_path": str(resolve_path(data["script"], info))}
        return data

    @field_validator("script")
    @classmethod
    def _load_script(cls, value: str, info: ValidationInfo) -> str:
        return read_text_file(value, info)[1]

    @model_validator(mode="after")
    def _swap_or_disabled(self) -> PartitioningConfig:
        if self.partitions.swap is None and not self.disable_swap:
            raise ValueError("partitions/swap: mandatory field is missing (unless disable_swap is true)")
        if self.disable_swap:
            self.partitions.swap = -1
        return self

    @property
    def deploy_part(self) -> str:
        """Device of the deploy partition, e.g. `/dev/sda3`."""
        return f"{self.block_device}{self.partitions.deploy}"


class UserKernelConfig(ConfigModel):
    params: str = ""


class DeployKernelConfig(ConfigModel):
    """The trusted deployment kernel, paths relative to the PXE repository."""

    vmlinuz: str
    initrd: str
    params: str = ""
    supported_fs: list[str] = Field(default_factory=lambda: ["ext2", "ext3", "ext4", "vfat"])

    unsupported_keys = {"drivers": "the load_drivers micro-step is not provided; build the drivers into the "
                                   "deployment kernel or initrd"}

    _split = field_validator("supported_fs", mode="before")(split_list)


class KernelsConfig(ConfigModel):
    user: UserKernelConfig = Field(default_factory=UserKernelConfig)
    deploy: DeployKernelConfig

    unsupported_keys = {"nfsroot": "SetDeploymentEnvNfsroot is not provided"}


class BootConfig(ConfigModel):
    install_bootloader: str  # the script's content once loaded
    install_bootloader_path: str = Field(default="", exclude=True)
    sleep_time_before_ping: int = Field(default=20, ge=0)
    kernels: KernelsConfig

    @model_validator(mode="before")
    @classmethod
    def _remember_script_path(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, dict) and isinstance(data.get("install_bootloader"), str):
            data = {**data, "install_bootloader_path": str(resolve_path(data["install_bootloader"], info))}
        return data

    @field_validator("install_bootloader")
    @classmethod
    def _load_script(cls, value: str, info: ValidationInfo) -> str:
        return read_text_file(value, info)[1]


class TimeoutsConfig(ConfigModel):
    reboot: TimeoutExpr = Field(default_factory=lambda: TimeoutExpr(120))
    kexec: TimeoutExpr = Field(default_factory=lambda: TimeoutExpr(60))


class RemoteOp(ConfigModel):
    """One command of an escalation list (`{name: hard, cmd: ...}`).

    `group` names a file of node groups (one comma-separated group per line)
    whose command runs once per group (`GROUP_FQDN`); the file is read at
    load time into `groups`.
    """

    name: str
    cmd: str | None = None
    group: str | None = None
    groups: list[list[str]] = Field(default_factory=list, exclude=True)
    driver: str | None = None
    address: str | None = None
    user: str = ""
    password: str = ""
    ca_file: str | None = None  # redfish: the CA file its HTTPS certificate is checked against

    @field_validator("driver")
    @classmethod
    def _provided_driver(cls, value: str | None) -> str | None:
        return None if value is None else REGISTRIES[Kind.POWER_DRIVER].check(value)

    @model_validator(mode="after")
    def _command_or_driver(self, info: ValidationInfo) -> RemoteOp:
        if self.cmd is None and self.driver is None:
            raise ValueError("cmd: mandatory field is missing (or give a driver: "
                             f"{', '.join(REGISTRIES[Kind.POWER_DRIVER].names())})")
        if self.cmd is not None and self.driver is not None:
            raise ValueError("cmd and driver are exclusive: give one of them")
        if self.driver is not None and self.address is None:
            raise ValueError(f"address: mandatory field is missing (driver {self.driver})")
        if self.ca_file is not None:
            if self.driver != "redfish":
                raise ValueError("ca_file: only the redfish driver takes a CA file")
            self.ca_file = str(read_text_file(self.ca_file, info)[0])
        if self.group is not None:
            path, text = read_text_file(self.group, info)
            self.group = str(path)
            self.groups = [
                [name.strip() for name in line.split(",") if name.strip()]
                for line in text.splitlines()
                if line.strip()
            ]
        return self


class RemoteOpsConfig(ConfigModel):
    """`remoteops`: escalation lists for reboot and power, and two single commands."""

    level_name: list[str] = Field(default_factory=lambda: list(DEFAULT_LEVEL_NAMES), min_length=1, max_length=3)
    reboot: list[RemoteOp] = Field(default_factory=list)
    power_on: list[RemoteOp] = Field(default_factory=list)
    power_off: list[RemoteOp] = Field(default_factory=list)
    power_status: list[RemoteOp] = Field(default_factory=list, max_length=1)
    console: list[RemoteOp] = Field(default_factory=list, max_length=1)

    _split = field_validator("level_name", mode="before")(split_list)

    @model_validator(mode="after")
    def _levels_are_known(self) -> RemoteOpsConfig:
        for kind in ("reboot", "power_on", "power_off"):
            seen: set[str] = set()
            for index, op in enumerate(getattr(self, kind)):
                if op.name not in self.level_name:
                    raise ValueError(
                        f"{kind}[{index}].name: must be one of {', '.join(self.level_name)} (got \"{op.name}\")"
                    )
                if op.name in seen:
                    raise ValueError(f"{kind}[{index}].name: level \"{op.name}\" is defined twice")
                seen.add(op.name)
        return self

    def command(self, kind: str, level: str) -> RemoteOp | None:
        """The cluster's operation for (`reboot`, `hard`), if configured."""
        ops: list[RemoteOp] = getattr(self, kind)
        if kind in ("power_status", "console"):
            return ops[0] if ops else None
        for op in ops:
            if op.name == level:
                return op
        return None


class BroadcastEnvOpsConfig(ConfigModel):
    cmd: str | None = None
    decompress: bool = True

    @field_validator("cmd")
    @classmethod
    def _quoting_holds(cls, value: str | None) -> str | None:
        return value if value is None else check_template(value, "localops/broadcastenv/cmd")


class LocalOpsConfig(ConfigModel):
    broadcastenv: BroadcastEnvOpsConfig = Field(default_factory=BroadcastEnvOpsConfig)


class AdminArchive(ConfigModel):
    """An administrator's pre- or post-install archive."""

    file: str
    format: Literal["tgz", "tbz2", "txz", "tzst"]
    script: str = "none"


class AdminInstallConfig(ConfigModel):
    files: list[AdminArchive] = Field(default_factory=list)


class PXEHeadersConfig(ConfigModel):
    """Text put at the top of generated profiles (`netboot` is the doc's old name)."""

    dhcp: str = ""
    localboot: str = ""
    networkboot: str = ""

    @model_validator(mode="before")
    @classmethod
    def _legacy_netboot(cls, data: Any) -> Any:
        if isinstance(data, dict) and "netboot" in data:
            if "networkboot" in data:
                raise ValueError("netboot and networkboot are the same header: give only networkboot")
            data = {("networkboot" if key == "netboot" else key): value for key, value in data.items()}
        return data


class ClusterPXEConfig(ConfigModel):
    headers: PXEHeadersConfig = Field(default_factory=PXEHeadersConfig)


class KexecConfig(ConfigModel):
    repository: str = "/dev/shm/kexec_repository"


class SwitchConfig(ConfigModel):
    """One switch of `topology/switches`: its name, its parent switch, the nodes cabled to it."""

    name: str
    parent: str | None = None
    nodes: list[str] = Field(default_factory=list)

    @field_validator("nodes", mode="before")
    @classmethod
    def _nodes(cls, value: Any) -> Any:
        """Node ranges (`node-[1-16].c1.testbed`), comma lists or YAML lists."""
        from kadeploy.nodeset import expand_all
        items = split_list(value) if isinstance(value, str) else value
        if isinstance(items, list) and all(isinstance(item, str) for item in items):
            return expand_all(items)
        return items


class TopologyConfig(ConfigModel):
    """Our extension: where nodes are cabled, so that the broadcast chain visits them switch by
    switch and crosses each uplink once each way (Kadeploy3 orders by name only)."""

    switches: list[SwitchConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> TopologyConfig:
        names = [switch.name for switch in self.switches]
        seen: dict[str, str] = {}
        for switch in self.switches:
            if switch.parent is not None and switch.parent not in names:
                raise ValueError(f"topology/switches: {switch.name}: unknown parent switch {switch.parent!r}")
            for node in switch.nodes:
                if node in seen:
                    raise ValueError(f"topology/switches: {node} is on both {seen[node]} and {switch.name}")
                seen[node] = switch.name
        return self

    def node_switches(self) -> dict[str, str]:
        return {node: switch.name for switch in self.switches for node in switch.nodes}

    def switch_parents(self) -> dict[str, str]:
        return {switch.name: switch.parent for switch in self.switches if switch.parent}


class ClusterHooksConfig(ConfigModel):
    use_ip_to_deploy: bool = False


class ClusterConfig(ConfigModel):
    """One cluster: its file's content plus `name`, `prefix` and `conf_file`
    from clusters.conf and the hostnames of its nodes (filled by the loader).
    """

    name: str = Field(default="", exclude=True)
    prefix: str = Field(default="", exclude=True)
    conf_file: str = Field(default="", exclude=True)
    nodes: list[str] = Field(default_factory=list, exclude=True)

    partitioning: PartitioningConfig
    boot: BootConfig
    timeouts: TimeoutsConfig = Field(default_factory=TimeoutsConfig)
    remoteops: RemoteOpsConfig
    localops: LocalOpsConfig = Field(default_factory=LocalOpsConfig)
    preinstall: AdminInstallConfig = Field(default_factory=AdminInstallConfig)
    postinstall: AdminInstallConfig = Field(default_factory=AdminInstallConfig)
    pxe: ClusterPXEConfig = Field(default_factory=ClusterPXEConfig)
    kexec: KexecConfig = Field(default_factory=KexecConfig)
    hooks: ClusterHooksConfig = Field(default_factory=ClusterHooksConfig)
    topology: TopologyConfig = Field(default_factory=TopologyConfig)
    automata_conf: AutomataConf | None = Field(default=None, alias="automata")

    @property
    def automata(self) -> dict[str, list[ImplementationConf]]:
        """Implementations per macro-step interface, Kadeploy3's default if none configured."""
        if self.automata_conf is None:
            return default_automata()
        return self.automata_conf.macrosteps.as_dict()

    @property
    def use_ip_to_deploy(self) -> bool:
        return self.hooks.use_ip_to_deploy


def check_cluster_rules(cluster: ClusterConfig) -> list[tuple[str, str]]:
    """Cross-field rules of a cluster file, as (key path, problem) pairs.

    * reboot-type implementations must allow at least `timeouts/reboot`
      (with n=1, as Kadeploy3 checks), kexec ones `timeouts/kexec`;
    * `BroadcastEnvCustom` needs `localops/broadcastenv/cmd`.
    """
    problems: list[tuple[str, str]] = []
    reboot = cluster.timeouts.reboot.evaluate(1)
    kexec = cluster.timeouts.kexec.evaluate(1)
    for interface, implementations in cluster.automata.items():
        for index, impl in enumerate(implementations):
            path = f"automata/macrosteps/{interface}[{index}].timeout"
            if impl.timeout and waits_for(impl.name) == "reboot" and reboot > impl.timeout:
                problems.append((path, f"the timeout of {impl.name} ({impl.timeout} s) is lower than "
                                       f"timeouts/reboot ({reboot:g} s with n=1)"))
            if impl.timeout and waits_for(impl.name) == "kexec" and kexec > impl.timeout:
                problems.append((path, f"the timeout of {impl.name} ({impl.timeout} s) is lower than "
                                       f"timeouts/kexec ({kexec:g} s with n=1)"))
            if impl.name == "BroadcastEnvCustom" and not cluster.localops.broadcastenv.cmd:
                problems.append(("localops/broadcastenv/cmd", "mandatory field is missing (BroadcastEnvCustom is used)"))
    return problems
