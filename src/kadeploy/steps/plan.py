"""What one deployment on one cluster needs to know, resolved once at the edge.

A `DeployPlan` is built from the cluster configuration, the server
configuration, the environment description and the request options; the
micro-steps then only read it. Keeping it a plain frozen dataclass makes the
pruning rules and node commands pure functions that unit tests can exercise
without a server, SSH or a testbed. This module imports only `errors`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kadeploy.errors import ErrorCode, KadeployError

#: image kinds whose stream is a tar archive extracted into the mounted partition
TAR_KINDS = {"tar"}
#: image kinds written raw onto a block device
DD_KINDS = {"dd"}


@dataclass(frozen=True)
class Archive:
    """A pre- or post-install archive: unpacked in the rambin dir, then its script run."""

    file: str
    compression: str = "gzip"
    script: str = "none"


@dataclass(frozen=True)
class DeployPlan:
    """Everything the deployment micro-steps of one cluster read.

    Partition numbers are `-1` when the cluster has no such partition. When
    `whole_disk` is true the image is written on `block_device` itself and
    `boot_partition` says which partition the final boot chainloads.
    """

    cluster: str
    block_device: str
    deploy_part_num: int
    swap_part_num: int = -1
    prod_part_num: int = -1
    tmp_part_num: int = -1
    whole_disk: bool = False
    boot_partition: int | None = None
    # environment
    env_name: str = ""
    env_version: int = 1
    os_kind: str = "linux"
    image_kind: str = "tar"
    image_compression: str = "gzip"
    #: the description's `image/file`: the stored copy on a node is named after it (`_KATMP_<basename>`)
    image_file: str = ""
    #: fsa: `options/partitions` as (id in the archive, device) pairs
    image_partitions: tuple[tuple[int, str], ...] = ()
    filesystem: str = "ext4"
    partition_type: int = 0x83
    env_kernel: str = ""
    env_initrd: str = ""
    env_kernel_params: str = ""
    hypervisor: str = ""
    hypervisor_params: str = ""
    multipart: bool = False
    user_postinstalls: tuple[Archive, ...] = ()
    preinstall: Archive | None = None
    # cluster
    admin_postinstalls: tuple[Archive, ...] = ()
    supported_fs: tuple[str, ...] = ("ext2", "ext3", "ext4", "vfat")
    cluster_kernel_params: str = ""
    mkfs_args: dict[str, str] = field(default_factory=dict)
    tar_options: str = ""
    #: the cluster's `localops/broadcastenv/decompress`: false stores every image before decompressing it
    decompress_on_the_fly: bool = True
    extraction_dir: str = "/mnt/dest"
    rambin_dir: str = "/rambin"
    tmp_dir: str = "/tmp"
    kexec_repository: str = "/dev/shm/kexec_repository"
    localboot_method: str = "PXElinux"
    # request
    ssh_key: bool = False
    reformat_tmp: str | None = None
    disable_bootloader_install: bool = False
    disable_disk_partitioning: bool = False
    disable_kexec: bool = False
    vlan: str | None = None
    user_pxe_profile: bool = False

    @property
    def deploy_part(self) -> str:
        """Device written by the deployment: the partition, or the disk in whole-disk mode."""
        if self.whole_disk:
            return self.block_device
        return partition_device(self.block_device, self.deploy_part_num)

    @property
    def final_boot_partition(self) -> int:
        """Partition chainloaded by the final boot (`-c`, else the deploy partition)."""
        if self.boot_partition is not None:
            return self.boot_partition
        return self.deploy_part_num

    @property
    def disk_index(self) -> int:
        """BIOS disk index of the block device: sda -> 0, sdb -> 1 (PXElinux `hd<index>`)."""
        last = self.block_device.rstrip("0123456789")[-1:]
        return max(0, ord(last) - ord("a")) if last.isalpha() else 0

    @property
    def image_stored_first(self) -> bool:
        """Whether the broadcast only stores the image and `decompress_environment` unpacks it.

        fsarchiver restores from a file, not a stream; a cluster with
        `localops/broadcastenv/decompress: false` asks the same for every image.
        """
        return self.image_kind == "fsa" or not self.decompress_on_the_fly

    @property
    def filesystem_supported(self) -> bool:
        """Whether the deployment kernel can mount the environment's filesystem."""
        return self.filesystem in self.supported_fs

    @property
    def kernel_params(self) -> str:
        """Cluster user kernel parameters followed by the environment's own."""
        return " ".join(p for p in (self.cluster_kernel_params, self.env_kernel_params) if p)


def partition_device(block_device: str, number: int) -> str:
    """`/dev/sda` + 3 -> `/dev/sda3`; `/dev/nvme0n1` + 3 -> `/dev/nvme0n1p3`."""
    if number < 0:
        raise KadeployError(ErrorCode.INVALID_OPTION, f"no partition number for {block_device}")
    separator = "p" if block_device[-1:].isdigit() else ""
    return f"{block_device}{separator}{number}"
