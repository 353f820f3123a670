"""The macro-step implementations this Kadeploy provides, each declared once (reference 5.2).

Room: steps. Imports only the vocabulary and the engine's model, so that the
config room can load it to validate a cluster file's `automata` without
pulling in SSH, PXE or the broadcast.

Each `declare(...)` below is the single home of an implementation: its
interface, its unpruned micro-steps (Kadeploy3's `stepdeploy.rb` order), the
broadcast method its `send_environment` uses and the timeout its reboot must
fit in. Validation, `--check-config`, the API, `--help` and the docs read
these declarations through `vocabulary.REGISTRIES[Kind.MACROSTEP]`.
Kadeploy3 names that are not declared here (`SetDeploymentEnvNfsroot`)
are refused where written.

Reboot and power workflows have one macro-step whose interface is the kind
itself (`Reboot[Simple]`); they are declared here too, keyed by the name the
API and the tools use (`simple`, `set_pxe`, `on`, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kadeploy.engine.model import ImplementationSpec, MacroStepSpec
from kadeploy.errors import ErrorCode, KadeployError
from kadeploy.vocabulary import REGISTRIES, Kind, Registry

#: The three macro-steps of a deployment, in order.
DEPLOY_INTERFACES = ("SetDeploymentEnv", "BroadcastEnv", "BootNewEnv")

WaitsFor = Literal["reboot", "kexec"] | None


@dataclass(frozen=True)
class MacrostepImplementation:
    """One implementation of a macro-step interface.

    `waits_for` names the timeout (`timeouts/reboot` or `timeouts/kexec`)
    that the implementation's own timeout must cover, as Kadeploy3 checks at
    load time. `broadcast` is the broadcast method of a `BroadcastEnv`
    implementation's `send_environment` (None: not a broadcast).
    """

    name: str
    interface: str
    microsteps: tuple[str, ...]
    summary: str
    broadcast: str | None = None
    waits_for: WaitsFor = None

    @property
    def short_name(self) -> str:
        """What a cluster file writes as `type`: `Untrusted` for `SetDeploymentEnvUntrusted`."""
        return self.name[len(self.interface):]


MACROSTEPS: Registry = REGISTRIES[Kind.MACROSTEP]
REBOOT_KINDS: dict[str, MacrostepImplementation] = {}
POWER_OPERATIONS: dict[str, MacrostepImplementation] = {}


def declare(interface: str, short: str, microsteps: tuple[str, ...], summary: str, *,
            broadcast: str | None = None, waits_for: WaitsFor = None) -> MacrostepImplementation:
    implementation = MacrostepImplementation(interface + short, interface, microsteps, summary,
                                             broadcast=broadcast, waits_for=waits_for)
    MACROSTEPS.declare(implementation.name, implementation, summary)
    return implementation


def _declare_workflow(table: dict[str, MacrostepImplementation], interface: str, api_name: str, short: str,
                      microsteps: tuple[str, ...], summary: str) -> None:
    table[api_name] = MacrostepImplementation(short, interface, microsteps, summary)


_PREPARE_DISK = ("send_key_in_deploy_env", "create_partition_table", "format_deploy_part",
                 "mount_deploy_part", "format_tmp_part", "format_swap_part")
_INSTALL = ("decompress_environment", "manage_admin_post_install", "manage_user_post_install",
            "check_kernel_files", "send_key", "install_bootloader", "sync")
# Kascade and Kastafior mount the deploy partition after the broadcast (dd images).
_INSTALL_WITH_MOUNT = ("decompress_environment", "mount_deploy_part", "manage_admin_post_install",
                       "manage_user_post_install", "check_kernel_files", "send_key", "install_bootloader", "sync")

declare("SetDeploymentEnv", "Untrusted", ("switch_pxe", "set_vlan", "reboot", "wait_reboot", *_PREPARE_DISK),
        "PXE-boot the deployment environment, then partition and format", waits_for="reboot")
declare("SetDeploymentEnv", "Kexec",
        ("set_vlan", "send_deployment_kernel", "sync", "kexec", "wait_reboot", *_PREPARE_DISK),
        "kexec the deployment kernel from the running system, then partition and format", waits_for="kexec")
declare("SetDeploymentEnv", "UntrustedCustomPreInstall",
        ("switch_pxe", "set_vlan", "reboot", "wait_reboot", "send_key_in_deploy_env", "manage_admin_pre_install"),
        "PXE-boot the deployment environment, then the administrator's pre-install prepares the disk")
declare("SetDeploymentEnv", "Prod", ("check_nodes", "format_deploy_part", "mount_deploy_part", "format_tmp_part"),
        "no reboot: deploy from the running production environment")
declare("SetDeploymentEnv", "Dummy", ("dummy", "dummy"), "sleep; no action on nodes (Kadeploy3's test step)")

declare("BroadcastEnv", "Kascade", ("send_environment", *_INSTALL_WITH_MOUNT),
        "fault-tolerant pipelined chain of relays (a dead node is bypassed)", broadcast="kascade")
declare("BroadcastEnv", "Kastafior", ("send_environment", *_INSTALL_WITH_MOUNT),
        "Kastafior's pipelined chain, run by our relay (no external binary)", broadcast="chain")
declare("BroadcastEnv", "Chain", ("send_environment", *_INSTALL),
        "pipelined chain of relays", broadcast="chain")
declare("BroadcastEnv", "Tree", ("send_environment", *_INSTALL),
        "tree of relays (a dead node's children are adopted)", broadcast="tree")
declare("BroadcastEnv", "Bittorrent", ("mount_tmp_part", "send_environment", *_INSTALL),
        "BitTorrent swarm (aria2c, opentracker): each node stores the image in its tmp partition, then unpacks it",
        broadcast="bittorrent")
declare("BroadcastEnv", "Custom", ("send_environment", *_INSTALL),
        "the administrator's command (localops/broadcastenv/cmd), run on the server", broadcast="custom")
declare("BroadcastEnv", "Dummy", ("dummy", "dummy"), "sleep; no action on nodes (Kadeploy3's test step)")

declare("BootNewEnv", "Kexec", ("switch_pxe", "umount_deploy_part", "mount_deploy_part", "kexec", "set_vlan",
                                "wait_reboot"),
        "kexec the deployed kernel from the deployment environment", waits_for="kexec")
declare("BootNewEnv", "Classical", ("switch_pxe", "umount_deploy_part", "reboot_from_deploy_env", "set_vlan",
                                    "wait_reboot"),
        "reboot from the deployment environment onto the deployed partition", waits_for="reboot")
# Kadeploy2's pivot: no firmware, no new kernel; nodes whose environment kernel is not the
# running one fail check_same_kernel and go on to the next implementation (Kexec, Classical).
declare("BootNewEnv", "PivotRoot", ("mount_deploy_part", "check_same_kernel", "switch_pxe", "switch_root",
                                    "set_vlan", "wait_reboot"),
        "switch the root to the deployed partition and exec its init, on the running kernel (no reboot)",
        waits_for="kexec")
declare("BootNewEnv", "HardReboot", ("switch_pxe", "reboot", "set_vlan", "wait_reboot"),
        "hard reboot (power) onto the deployed partition", waits_for="reboot")
declare("BootNewEnv", "Dummy", ("dummy", "dummy"), "sleep; no action on nodes (Kadeploy3's test step)")

_declare_workflow(REBOOT_KINDS, "Reboot", "simple", "Simple", ("reboot", "set_vlan", "wait_reboot"),
                  "reboot the nodes")
_declare_workflow(REBOOT_KINDS, "Reboot", "set_pxe", "SetPXE", ("switch_pxe", "reboot", "set_vlan", "wait_reboot"),
                  "write the user's PXE profile, then reboot")
_declare_workflow(REBOOT_KINDS, "Reboot", "deploy_env", "DeployEnv",
                  ("switch_pxe", "reboot", "set_vlan", "wait_reboot", "send_key_in_deploy_env"),
                  "reboot into the deployment environment")
_declare_workflow(REBOOT_KINDS, "Reboot", "recorded_env", "RecordedEnv",
                  ("switch_pxe", "reboot", "set_vlan", "wait_reboot"),
                  "reboot onto an environment already deployed on a partition")
for _api_name, _short in (("on", "On"), ("off", "Off"), ("status", "Status")):
    _declare_workflow(POWER_OPERATIONS, "Power", _api_name, _short, ("power",), f"power {_api_name}")


def deploy_implementation(name: str) -> MacrostepImplementation:
    """The declaration of a deploy implementation; `UnsupportedName`/`UnknownName` otherwise."""
    implementation: MacrostepImplementation = MACROSTEPS.get(name)
    return implementation


def implementation_name(interface: str, type_: str) -> str:
    """Cluster files say `{type: Untrusted}` under `SetDeploymentEnv`: -> `SetDeploymentEnvUntrusted`.

    Raises `UnsupportedName`/`UnknownName` (ValueErrors) for a name we do not provide
    or one that belongs to another interface.
    """
    name = type_ if type_.startswith(interface) else f"{interface}{type_}"
    implementation = deploy_implementation(name)
    if implementation.interface != interface:
        raise ValueError(f"{name} is a {implementation.interface} implementation, not a {interface} one")
    return name


def interface_of(implementation: str) -> str:
    """`BroadcastEnvKascade` -> `BroadcastEnv`."""
    return deploy_implementation(implementation).interface


def workflow_implementation(kind: str, name: str) -> MacrostepImplementation | None:
    """The declaration behind a macro-step of a `Deploy`, `Reboot` or `Power` workflow, None if unknown."""
    if kind == "Deploy":
        return MACROSTEPS.get(name) if name in MACROSTEPS else None
    table = REBOOT_KINDS if kind == "Reboot" else POWER_OPERATIONS if kind == "Power" else {}
    return next((impl for impl in table.values() if impl.name == name), None)


def canonical_microsteps(kind: str, implementation: str) -> tuple[str, ...] | None:
    """The unpruned micro-step list of an implementation, None if it is not declared."""
    declared = workflow_implementation(kind, implementation)
    return declared.microsteps if declared else None


def default_deploy_macrosteps() -> list[MacroStepSpec]:
    """Kadeploy3's automaton when a cluster file has no `automata` section."""
    return [
        ("SetDeploymentEnv", [ImplementationSpec("SetDeploymentEnvUntrusted", retries=2, timeout=200)]),
        ("BroadcastEnv", [ImplementationSpec("BroadcastEnvKascade", retries=2, timeout=300)]),
        ("BootNewEnv", [ImplementationSpec("BootNewEnvClassical", retries=0, timeout=150),
                        ImplementationSpec("BootNewEnvHardReboot", retries=1, timeout=120)]),
    ]


def reboot_macrosteps(reboot_kind: str) -> list[MacroStepSpec]:
    """The single macro-step of a reboot workflow (`simple`, `set_pxe`, `deploy_env`, `recorded_env`)."""
    try:
        name = REBOOT_KINDS[reboot_kind].name
    except KeyError:
        raise KadeployError(ErrorCode.INVALID_OPTION, f"Invalid reboot kind {reboot_kind!r}: expected one of "
                                                      f"{', '.join(REBOOT_KINDS)}") from None
    return [("Reboot", [ImplementationSpec(name)])]


def power_macrosteps(operation: str) -> list[MacroStepSpec]:
    """The single macro-step of a power workflow (`on`, `off`, `status`)."""
    try:
        name = POWER_OPERATIONS[operation].name
    except KeyError:
        raise KadeployError(ErrorCode.INVALID_OPTION,
                            f"Invalid power operation {operation!r}: expected on, off or status") from None
    return [("Power", [ImplementationSpec(name)])]
