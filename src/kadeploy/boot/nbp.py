"""Network boot programs (NBPs): what a PXElinux, GPXElinux, iPXE or GrubPXE profile says.

One class per NBP, as Ironic composes boot interfaces: each knows how a file of
the PXE repository is named for the node (`export_path`), how a profile is
wrapped around its boot lines (`labelize`), and the lines that chain another
NBP, boot a partition of the local disk, or boot a kernel over the network.
The formats are those of Kadeploy3's `netboot.rb` (reference section 6.3), so
that existing repositories and headers keep working. Writing files is
`kadeploy.boot.pxe`'s job; nothing here touches the disk.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from kadeploy.errors import ConfigError
from kadeploy.vocabulary import REGISTRIES, Kind


@dataclass(frozen=True)
class LocalBootEnv:
    """What the installed system needs to boot from the disk (GrubPXE writes it in the profile).

    `os` is the environment's kind: `linux`, `xen`, `bsd`, `windows` or `other`.
    Paths are inside the deployed partition (`/vmlinuz`), not in the PXE repository.
    """

    os: str = "linux"
    kernel: str = ""
    initrd: str = ""
    kernel_params: str = ""
    hypervisor: str = ""
    hypervisor_params: str = ""


class NetworkBootProgram:
    """Base class: an NBP with its export (tftp, http or ftp) of the PXE repository."""

    method: ClassVar[str] = ""
    export_kinds: ClassVar[tuple[str, ...]] = ("tftp",)

    def __init__(self, export_kind: str, export_server: str) -> None:
        if export_kind not in self.export_kinds:
            raise ConfigError(
                f"pxe: method {self.method} does not support export kind {export_kind!r} "
                f"(supported values: {', '.join(self.export_kinds)})"
            )
        self.export_kind = export_kind
        self.export_server = export_server

    def export_path(self, path: str) -> str:
        """The name under which the node's NBP fetches `path` (relative to the repository)."""
        relative = path.lstrip("/")
        if self.export_kind == "tftp":
            return "/" + relative
        return f"{self.export_kind}://{self.export_server}/{relative}"

    def labelize(self, header: str, label: str, lines: Sequence[str]) -> str:
        raise NotImplementedError

    def chain_lines(self, binary: str) -> list[str]:
        raise NotImplementedError

    def local_lines(
        self, env: LocalBootEnv, disk_name: str, disk_index: int, partition: int, default_params: str
    ) -> list[str]:
        raise NotImplementedError

    def network_lines(self, kernel: str, initrd: str | None, params: str) -> list[str]:
        raise NotImplementedError


def _with_newline(header: str) -> str:
    """Headers come from YAML block scalars with or without a final newline."""
    if header and not header.endswith("\n"):
        return header + "\n"
    return header


class PXElinux(NetworkBootProgram):
    """SYSLINUX's pxelinux.0: TFTP only; local boot chainloads the partition's boot sector."""

    method = "PXElinux"
    export_kinds = ("tftp",)

    def labelize(self, header: str, label: str, lines: Sequence[str]) -> str:
        body = "\n".join(f"\t{line}" for line in lines)
        return f"{_with_newline(header)}DEFAULT {label}\nLABEL {label}\n{body}\n"

    def chain_lines(self, binary: str) -> list[str]:
        return [f"KERNEL {self.export_path(binary)}", "APPEND keeppxe"]

    def local_lines(
        self, env: LocalBootEnv, disk_name: str, disk_index: int, partition: int, default_params: str
    ) -> list[str]:
        return [f"COM32 {self.export_path('chain.c32')}", f"APPEND hd{disk_index} {partition}"]

    def network_lines(self, kernel: str, initrd: str | None, params: str) -> list[str]:
        initrd_arg = f"initrd={self.export_path(initrd)} " if initrd else ""
        return [f"KERNEL {self.export_path(kernel)}", f"APPEND {initrd_arg}{params}".rstrip()]


class GPXElinux(PXElinux):
    """gpxelinux.0: PXElinux's format, files also over HTTP or FTP."""

    method = "GPXElinux"
    export_kinds = ("tftp", "http", "ftp")


class IPXE(NetworkBootProgram):
    """iPXE scripts (`#!ipxe`), usually over HTTP to spare the TFTP server."""

    method = "IPXE"
    export_kinds = ("tftp", "http", "ftp")

    def labelize(self, header: str, label: str, lines: Sequence[str]) -> str:
        return "#!ipxe\n" + _with_newline(header) + "\n".join(lines) + "\n"

    def chain_lines(self, binary: str) -> list[str]:
        return [f"chain {self.export_path(binary)}"]

    def local_lines(
        self, env: LocalBootEnv, disk_name: str, disk_index: int, partition: int, default_params: str
    ) -> list[str]:
        return [f"chain {self.export_path('chain.c32')} hd{disk_index} {partition}"]

    def network_lines(self, kernel: str, initrd: str | None, params: str) -> list[str]:
        lines = [f"initrd {self.export_path(initrd)}"] if initrd else []
        lines.append(f"chain {self.export_path(kernel)} {params}".rstrip())
        return lines


class GrubPXE(NetworkBootProgram):
    """GRUB 2 as NBP: boots the installed kernel itself, no bootloader needed on the disk."""

    method = "GrubPXE"
    export_kinds = ("tftp", "http")

    def export_path(self, path: str) -> str:
        relative = path.lstrip("/")
        if self.export_kind == "tftp":
            return f"(pxe)/{relative}"
        return f"(http,{self.export_server})/{relative}"

    def labelize(self, header: str, label: str, lines: Sequence[str]) -> str:
        header = _with_newline(header)
        if "timeout" not in header:
            header += "timeout=0\n"
        body = "\n".join(f"\t{line}" for line in lines)
        return f"{header}default=0\nmenuentry {label} {{\n{body}\n}}\n"

    def chain_lines(self, binary: str) -> list[str]:
        return [f"pxechainloader {self.export_path(binary)}", "boot"]

    def local_lines(
        self, env: LocalBootEnv, disk_name: str, disk_index: int, partition: int, default_params: str
    ) -> list[str]:
        lines = [f"set root=(hd{disk_index},{partition})"]
        root = partition_device(disk_name, partition)
        params = env.kernel_params or default_params
        initrd = env.initrd
        if env.os == "linux":
            lines.append(_join("linux", env.kernel, params, f"root={root}"))
            if initrd:
                lines.append(f"initrd {initrd}")
        elif env.os == "xen":
            lines.append(_join("multiboot", env.hypervisor, env.hypervisor_params))
            lines.append(_join("module", env.kernel, params, f"root={root}"))
            if initrd:
                lines.append(f"module {initrd}")
        elif env.os == "bsd":
            lines += ["insmod ufs1", "insmod ufs2", "insmod zfs", "chainloader +1"]
        elif env.os == "windows":
            lines += ["insmod fat", "insmod ntfs", "ntldr /bootmgr"]
        else:
            lines.append("chainloader +1")
        return lines

    def network_lines(self, kernel: str, initrd: str | None, params: str) -> list[str]:
        lines = [_join("linux", self.export_path(kernel), params)]
        if initrd:
            lines.append(f"initrd {self.export_path(initrd)}")
        return lines


def _join(*words: str) -> str:
    """Join non-empty words with one space (empty params must not leave double spaces)."""
    return " ".join(word for word in words if word)


def partition_device(disk_name: str, partition: int) -> str:
    """`/dev/sda` + 3 -> `/dev/sda3`; `/dev/nvme0n1` + 3 -> `/dev/nvme0n1p3` (kernel naming)."""
    if disk_name and disk_name[-1].isdigit():
        return f"{disk_name}p{partition}"
    return f"{disk_name}{partition}"


#: The PXE methods a `pxe/*/method` may name, declared once per NBP class above.
PXE_METHODS = REGISTRIES[Kind.PXE_METHOD]
for _nbp in (PXElinux, GPXElinux, IPXE, GrubPXE):
    PXE_METHODS.declare(_nbp.method, _nbp, (_nbp.__doc__ or "").strip().splitlines()[0])


def network_boot_program(method: str, export_kind: str, export_server: str) -> NetworkBootProgram:
    """The NBP named by a `pxe/*/method` value; ConfigError names the accepted ones."""
    try:
        cls: type[NetworkBootProgram] = PXE_METHODS.get(method)
    except ValueError as exc:
        raise ConfigError(f"pxe: method: {exc}") from None
    return cls(export_kind, export_server)
