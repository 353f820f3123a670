"""Where a multipart environment writes and boots (room `catalog`, reference 4).

A multipart environment (an fsa archive of several filesystems) names, in
its description, every device it restores (`options/partitions`) and the
partition it boots (`boot/block_device` + `boot/partition`). The server
checks a deployment request against them before any node is rebooted:
Kadeploy3 (`kadeploy.rb`) requires the user's rights on each of these
devices; beyond it, a boot partition that is not the deployment partition is
refused here instead of booting a partition the deployment did not write.

Pure functions of an `EnvironmentDescription`; imports `catalog.environment` only.
"""

from __future__ import annotations

from kadeploy.catalog.environment import EnvironmentDescription


def multipart_devices(env: EnvironmentDescription) -> list[str]:
    """Every device a multipart environment writes (the rights a user needs on top of the deploy partition)."""
    if not env.multipart or env.options is None:
        return []
    return [part.device for part in env.options.partitions]


def multipart_boot_device(env: EnvironmentDescription) -> str | None:
    """`boot/block_device` + `boot/partition` of a multipart environment, concatenated as Kadeploy3 does."""
    if not env.multipart or env.boot.block_device is None or env.boot.partition is None:
        return None
    return f"{env.boot.block_device}{env.boot.partition}"


def multipart_target_problem(env: EnvironmentDescription, deploy_device: str) -> str | None:
    """Why a multipart environment cannot be deployed with `deploy_device` as deployment partition, or None.

    The deployment partition is the one the deployment mounts, checks, gives a
    bootloader and boots (Kadeploy3 uses the request's or the cluster's, and
    reads `boot/block_device` and `boot/partition` only for the rights check).
    When it is not where the description says its system lives, or not one
    of the partitions the archive is restored to, Kadeploy3 went on and
    booted whatever that partition held; here the request is refused before
    any node is rebooted.
    """
    boot_device = multipart_boot_device(env)
    if boot_device is None:
        return None
    if boot_device not in multipart_devices(env):
        return (f"The multipart environment {env.name} boots {boot_device} (boot/block_device, boot/partition), "
                f"which none of its options/partitions restores")
    if boot_device != deploy_device:
        disk, partition = str(env.boot.block_device), env.boot.partition
        same_disk = deploy_device[len(disk):].isdigit() and deploy_device.startswith(disk)
        options = f"-p {partition}" if same_disk else f"-b {disk} -p {partition}"
        return (f"The multipart environment {env.name} boots {boot_device} (boot/block_device, boot/partition) but "
                f"the deployment partition is {deploy_device}: deploy it with {options}")
    return None
