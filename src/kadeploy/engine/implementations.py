"""The canonical macro-step implementations and their micro-steps (reference 5.2).

Data only: the unpruned micro-step list of every implementation of deploy,
reboot and power workflows, the default automaton, and the names Kadeploy3
uses. `kadeploy.steps` prunes these lists (reference 5.3) in
`StepLibrary.microsteps`; the engine uses them to print the
`* Bypassing the step ...` lines for what was pruned.
"""

from __future__ import annotations

from kadeploy.engine.model import ImplementationSpec, MacroStepSpec
from kadeploy.errors import ErrorCode, KadeployError

DEPLOY_INTERFACES = ("SetDeploymentEnv", "BroadcastEnv", "BootNewEnv")

_SET_DEPLOYMENT_ENV_TAIL = (
    "send_key_in_deploy_env", "create_partition_table", "format_deploy_part",
    "mount_deploy_part", "format_tmp_part", "format_swap_part",
)
_BROADCAST_TAIL = (
    "decompress_environment", "manage_admin_post_install", "manage_user_post_install",
    "check_kernel_files", "send_key", "install_bootloader", "sync",
)
# Kascade and Kastafior mount the deploy partition after the broadcast (dd images).
_BROADCAST_TAIL_WITH_MOUNT = (
    "decompress_environment", "mount_deploy_part", "manage_admin_post_install",
    "manage_user_post_install", "check_kernel_files", "send_key", "install_bootloader", "sync",
)

DEPLOY_MICROSTEPS: dict[str, tuple[str, ...]] = {
    "SetDeploymentEnvUntrusted": ("switch_pxe", "set_vlan", "reboot", "wait_reboot", *_SET_DEPLOYMENT_ENV_TAIL),
    "SetDeploymentEnvKexec": ("set_vlan", "send_deployment_kernel", "sync", "kexec", "wait_reboot",
                              *_SET_DEPLOYMENT_ENV_TAIL),
    "SetDeploymentEnvUntrustedCustomPreInstall": ("switch_pxe", "set_vlan", "reboot", "wait_reboot",
                                                  "send_key_in_deploy_env", "manage_admin_pre_install"),
    "SetDeploymentEnvProd": ("check_nodes", "format_deploy_part", "mount_deploy_part", "format_tmp_part"),
    "SetDeploymentEnvNfsroot": ("switch_pxe", "set_vlan", "reboot", "wait_reboot", *_SET_DEPLOYMENT_ENV_TAIL),
    "SetDeploymentEnvDummy": ("dummy", "dummy"),
    "BroadcastEnvChain": ("send_environment", *_BROADCAST_TAIL),
    "BroadcastEnvKascade": ("send_environment", *_BROADCAST_TAIL_WITH_MOUNT),
    "BroadcastEnvKastafior": ("send_environment", *_BROADCAST_TAIL_WITH_MOUNT),
    "BroadcastEnvTree": ("send_environment", *_BROADCAST_TAIL),
    "BroadcastEnvBittorrent": ("mount_tmp_part", "send_environment", *_BROADCAST_TAIL),
    "BroadcastEnvCustom": ("send_environment", *_BROADCAST_TAIL),
    "BroadcastEnvDummy": ("dummy", "dummy"),
    "BootNewEnvKexec": ("switch_pxe", "umount_deploy_part", "mount_deploy_part", "kexec", "set_vlan",
                        "wait_reboot"),
    "BootNewEnvClassical": ("switch_pxe", "umount_deploy_part", "reboot_from_deploy_env", "set_vlan",
                            "wait_reboot"),
    "BootNewEnvHardReboot": ("switch_pxe", "reboot", "set_vlan", "wait_reboot"),
    "BootNewEnvDummy": ("dummy", "dummy"),
}

# Reboot and power workflows: one macro-step whose interface is the kind itself,
# so the output reads `Performing a Reboot[Simple] step`.
REBOOT_MICROSTEPS: dict[str, tuple[str, ...]] = {
    "Simple": ("reboot", "set_vlan", "wait_reboot"),
    "SetPXE": ("switch_pxe", "reboot", "set_vlan", "wait_reboot"),
    "DeployEnv": ("switch_pxe", "reboot", "set_vlan", "wait_reboot", "send_key_in_deploy_env"),
    "RecordedEnv": ("switch_pxe", "reboot", "set_vlan", "wait_reboot"),
}
POWER_MICROSTEPS: dict[str, tuple[str, ...]] = {
    "On": ("power",),
    "Off": ("power",),
    "Status": ("power",),
}

# API / CLI names -> implementation names.
REBOOT_KINDS = {"simple": "Simple", "set_pxe": "SetPXE", "deploy_env": "DeployEnv", "recorded_env": "RecordedEnv"}
POWER_OPERATIONS = {"on": "On", "off": "Off", "status": "Status"}

_MICROSTEPS_BY_KIND = {"Deploy": DEPLOY_MICROSTEPS, "Reboot": REBOOT_MICROSTEPS, "Power": POWER_MICROSTEPS}


def canonical_microsteps(kind: str, implementation: str) -> tuple[str, ...] | None:
    """The unpruned micro-step list of an implementation, None if the engine does not know it."""
    return _MICROSTEPS_BY_KIND.get(kind, {}).get(implementation)


def interface_of(implementation: str) -> str:
    """`BroadcastEnvKascade` -> `BroadcastEnv`; raises `KadeployError` for an unknown deploy implementation."""
    for interface in DEPLOY_INTERFACES:
        if implementation.startswith(interface) and implementation in DEPLOY_MICROSTEPS:
            return interface
    raise KadeployError(ErrorCode.INVALID_OPTION, f"Unknown macro-step implementation {implementation!r}")


def implementation_name(interface: str, type_: str) -> str:
    """Cluster files say `{type: Untrusted}` under `SetDeploymentEnv`: -> `SetDeploymentEnvUntrusted`."""
    name = type_ if type_.startswith(interface) else f"{interface}{type_}"
    if name not in DEPLOY_MICROSTEPS or interface_of(name) != interface:
        raise KadeployError(ErrorCode.INVALID_OPTION,
                            f"Unknown implementation {type_!r} for the macro-step {interface}")
    return name


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
        name = REBOOT_KINDS[reboot_kind]
    except KeyError:
        raise KadeployError(ErrorCode.INVALID_OPTION,
                            f"Invalid reboot kind {reboot_kind!r}: expected one of {', '.join(REBOOT_KINDS)}") from None
    return [("Reboot", [ImplementationSpec(name)])]


def power_macrosteps(operation: str) -> list[MacroStepSpec]:
    """The single macro-step of a power workflow (`on`, `off`, `status`)."""
    try:
        name = POWER_OPERATIONS[operation]
    except KeyError:
        raise KadeployError(ErrorCode.INVALID_OPTION,
                            f"Invalid power operation {operation!r}: expected on, off or status") from None
    return [("Power", [ImplementationSpec(name)])]
