"""Step-pruning rules: which micro-steps a deployment really runs (reference 5.3).

Kadeploy3 removes micro-steps from each macro-step implementation according to
the image kind, the filesystem, the partitions and the request options. The
rules are a pure function of the `DeployPlan`, so they are tested without
anything running.
"""

from __future__ import annotations

from collections.abc import Sequence

from kadeploy.steps.plan import DeployPlan

_FORMAT_STEPS = {"create_partition_table", "format_deploy_part", "format_tmp_part", "format_swap_part"}
_NEEDS_MOUNTABLE_FS = {"mount_deploy_part", "umount_deploy_part", "manage_admin_post_install",
                       "manage_user_post_install", "check_kernel_files", "send_key", "install_bootloader"}


def prune(implementation: str, microsteps: Sequence[str], plan: DeployPlan,
          has_admin_postinstall: bool = False) -> list[str]:
    """Return `microsteps` without those the plan makes pointless, order kept."""
    dropped: set[str] = set() if plan.image_stored_first else {"decompress_environment"}
    macro = _interface(implementation)
    if plan.whole_disk:
        dropped |= _FORMAT_STEPS
    if plan.image_kind in ("dd", "fsa"):  # they bring their own filesystems
        dropped.add("format_deploy_part")
        if macro == "SetDeploymentEnv":
            dropped.add("mount_deploy_part")
    elif macro == "BroadcastEnv":
        dropped.add("mount_deploy_part")
    if not plan.filesystem_supported:
        dropped |= _NEEDS_MOUNTABLE_FS
    if plan.multipart:
        dropped |= {"format_tmp_part", "format_swap_part"}
    if not plan.ssh_key:
        dropped |= {"send_key_in_deploy_env", "send_key"}
    if plan.disable_disk_partitioning:
        dropped.add("create_partition_table")
    if not plan.reformat_tmp or plan.tmp_part_num < 0:
        dropped.add("format_tmp_part")
    if plan.swap_part_num < 0 or plan.os_kind != "linux":
        dropped.add("format_swap_part")
    if plan.localboot_method == "GrubPXE" or plan.disable_bootloader_install:
        dropped.add("install_bootloader")
    if plan.preinstall is None:
        dropped.add("manage_admin_pre_install")
    if not has_admin_postinstall:
        dropped.add("manage_admin_post_install")
    if not plan.user_postinstalls:
        dropped.add("manage_user_post_install")
    if not plan.vlan:
        dropped.add("set_vlan")
    if plan.deploy_part_num == plan.swap_part_num:
        dropped.add("format_swap_part")
    if plan.deploy_part_num == plan.tmp_part_num:
        dropped.add("format_tmp_part")
    return [name for name in microsteps if name not in dropped]


def _interface(implementation: str) -> str:
    for interface in ("SetDeploymentEnv", "BroadcastEnv", "BootNewEnv"):
        if implementation.startswith(interface):
            return interface
    return implementation
