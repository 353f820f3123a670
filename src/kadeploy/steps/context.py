"""What the micro-steps of one cluster share while an operation runs.

A `ClusterRun` gathers the resolved plan, the node addresses and boot
targets, and the server-wide resources (SSH executor, reboot window, PXE
writers, power command table). The libraries in `deploy.py` and `reboot.py`
read it; the runner builds it. Steps never look at the raw configuration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kadeploy.boot.commands import CommandTable
from kadeploy.boot.pxe import BootTarget, PXEProfiles
from kadeploy.boot.window import MinIntervalGate, RebootWindow
from kadeploy.remote import Executor
from kadeploy.steps.plan import Archive, DeployPlan


@dataclass
class FileRef:
    """A file a step sends to nodes, already available on the server."""

    path: Path
    size: int = 0


@dataclass
class ClusterRun:
    """Everything the micro-steps of one cluster in one operation read."""

    wid: str
    user: str
    cluster: str
    plan: DeployPlan
    hosts: dict[str, str]                      # hostname -> address used for SSH and probes
    targets: dict[str, BootTarget]             # hostname -> PXE identity (ip, mac)
    executor: Executor
    reboot_window: RebootWindow
    gate: MinIntervalGate | None
    commands: CommandTable
    pxe: PXEProfiles
    pxe_repository: Path
    deploy_kernel: str
    deploy_initrd: str
    deploy_kernel_params: str
    reboot_timeout: Callable[[int], float]
    kexec_timeout: Callable[[int], float]
    sleep_before_ping: float
    probe_interval: float
    check_window: int
    ssh_port: int = 22
    deploy_env_port: int = 25300
    partitioning_script: str = ""
    bootloader_script: str = ""
    broadcast_method: str = "kascade"
    #: the cluster file's `topology`: hostname -> switch, switch -> parent (chain order)
    topology: dict[str, str] = field(default_factory=dict)
    switch_parents: dict[str, str] = field(default_factory=dict)
    #: BroadcastEnvCustom: the admin's `localops/broadcastenv/cmd` template and the SSH connector it may use
    custom_broadcast_cmd: str | None = None
    connector: str = ""
    image: FileRef | None = None
    image_digest: str | None = None
    ssh_key: bytes | None = None
    archives: dict[Archive, FileRef] = field(default_factory=dict)
    custom_files: dict[str, FileRef] = field(default_factory=dict)
    user_pxe_profile: str | None = None
    user_pxe_singularities: dict[str, str] = field(default_factory=dict)
    user_pxe_files: list[Path] | dict[str, Path] = field(default_factory=list)  # name -> local copy
    reboot_level: str = "soft"                  # requested level of reboot/power operations
    power_kind: str = ""                        # on / off / status for power operations
    reboot_kind: str = ""                       # simple / set_pxe / deploy_env / recorded_env
    vlan_command: Callable[[list[str], str], str] | None = None
    debug: Callable[[str, str], None] | None = None
    power_output: dict[str, str] = field(default_factory=dict)
    version: str = ""

    def subset(self, nodes: list[str]) -> dict[str, str]:
        """The hostname -> address map of `nodes`."""
        return {node: self.hosts[node] for node in nodes}
