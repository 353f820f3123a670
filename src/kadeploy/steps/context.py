"""What the micro-steps of one cluster share while an operation runs.

A `ClusterRun` gathers the resolved plan, the node addresses and boot
targets, and the server-wide resources (SSH executor, reboot window, PXE
writers, power command table). The micro-steps (`steps/micro/`) read it,
each family through its Protocol of the fields it needs; the runner builds
it. Steps never look at the raw configuration.

Where a node is reached changes during a run: `set_vlan` moves it into the
requested VLAN (or back to the default one), and from then on its SSH
sessions, probes and PXE profile names use its address there.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from kadeploy.boot.commands import CommandTable
from kadeploy.boot.pxe import BootTarget, PXEProfiles
from kadeploy.boot.window import MinIntervalGate, RebootWindow
from kadeploy.errors import ErrorCode, KadeployError
from kadeploy.remote import Executor
from kadeploy.steps.plan import Archive, DeployPlan
from kadeploy.vlan import DEFAULT_VLAN

#: seconds the server may take to resolve the nodes' names it hands to the broadcast relays
RELAY_RESOLVE_TIMEOUT = 30.0


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
    hosts: dict[str, str]                      # hostname -> where it is reached now (SSH, probes)
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
    #: hostname -> address in the requested VLAN (`--vlan`, resolved with the request); empty without one
    vlan_hosts: dict[str, str] = field(default_factory=dict)
    debug: Callable[[str, str], None] | None = None
    power_output: dict[str, str] = field(default_factory=dict)
    version: str = ""

    #: hostname -> where it is reached in the default VLAN (its name, or its IP with use_ip_to_deploy)
    default_hosts: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.default_hosts = dict(self.hosts)

    def subset(self, nodes: list[str]) -> dict[str, str]:
        """The hostname -> address map of `nodes`."""
        return {node: self.hosts[node] for node in nodes}

    def moved_to_vlan(self, nodes: list[str], vlan: str) -> None:
        """`set_vlan` put `nodes` in `vlan`: reach them at their address there from now on.

        Connections opened before the move lead to the address the node left,
        so they are dropped.
        """
        for node in nodes:
            if vlan == DEFAULT_VLAN:
                self.hosts[node] = self.default_hosts[node]
            elif node in self.vlan_hosts:
                self.hosts[node] = self.vlan_hosts[node]
            else:
                raise KadeployError(ErrorCode.INVALID_VLAN, f"The address of {node} in VLAN {vlan} is not known")
        self.executor.forget(nodes)

    def boot_targets(self, nodes: list[str], *, into_vlan: bool) -> list[BootTarget]:
        """The PXE identities of `nodes`; with `into_vlan`, their VLAN addresses too.

        `into_vlan` is for a profile written before `set_vlan` moves the nodes
        into the requested VLAN: they boot there, under their VLAN address.
        """
        if not into_vlan or not self.vlan_hosts:
            return [self.targets[node] for node in nodes]
        return [replace(self.targets[node], vlan_ip=self.vlan_hosts.get(node)) for node in nodes]

    async def relay_addresses(self, nodes: list[str]) -> tuple[list[tuple[str, str]], dict[str, str]]:
        """(hostname, IP) of `nodes` for the broadcast, and the nodes whose name did not resolve.

        The relays connect to each other at these addresses; a node's own
        resolver may not know the other nodes' names (a deployment environment
        rarely has one), so the server resolves them, once per broadcast.
        """
        loop = asyncio.get_running_loop()
        names = {node: self.hosts[node] for node in nodes}

        async def resolve(address: str) -> str:
            try:
                return str(ipaddress.ip_address(address))
            except ValueError:
                # IPv4: the relays listen and connect there (broadcast/relay.py)
                answers = await loop.getaddrinfo(address, None, family=socket.AF_INET, type=socket.SOCK_STREAM)
                return str(answers[0][4][0])

        tasks = {node: asyncio.ensure_future(resolve(address)) for node, address in names.items()}
        if not tasks:
            return [], {}
        try:
            _, pending = await asyncio.wait(tasks.values(), timeout=RELAY_RESOLVE_TIMEOUT)
        finally:
            for task in tasks.values():
                task.cancel()  # those still waiting: the timeout, or the step was cancelled
        resolved: list[tuple[str, str]] = []
        unresolved: dict[str, str] = {}
        for node, task in tasks.items():
            if task in pending:
                unresolved[node] = f"Cannot resolve {names[node]}: no answer within {RELAY_RESOLVE_TIMEOUT:g}s"
            elif task.exception() is not None:
                unresolved[node] = f"Cannot resolve {names[node]}: {task.exception()}"
            else:
                resolved.append((node, task.result()))
        return resolved, unresolved
