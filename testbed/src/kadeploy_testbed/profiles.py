"""testbed room: what a node's firmware makes of a PXE profile.

Parses the three profile languages the server writes (reference 6.3) —
PXElinux, iPXE and GRUB — into one `BootChoice`: boot a kernel over the
network, boot a partition of the local disk, or nothing bootable (the node
hangs, as real hardware does on a profile it cannot use). Pure parsing, no
I/O, so the firmware emulation and the unit tests share it. Imports nothing
from other rooms.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

CHAIN_MODULES = ("chain.c32",)


@dataclass(frozen=True)
class BootChoice:
    """One decision: `kind` is `kernel`, `local` or `none` (with `reason`)."""

    kind: str
    kernel: str = ""
    initrd: list[str] = field(default_factory=list)
    params: str = ""
    disk: int = 0
    partition: int | None = None  # None with kind `local`: the partition flagged bootable
    reason: str = ""


def nothing(reason: str) -> BootChoice:
    return BootChoice(kind="none", reason=reason)


def detect_language(text: str) -> str:
    """`ipxe`, `grub` or `pxelinux`, from the content as a ROM chain would see it."""
    stripped = text.lstrip()
    if stripped.startswith("#!ipxe"):
        return "ipxe"
    if re.search(r"^\s*(menuentry\b|set\s+root=|linux(16|efi)?\s|chainloader\s)", text, re.MULTILINE):
        return "grub"
    return "pxelinux"


def parse_profile(text: str) -> BootChoice:
    language = detect_language(text)
    if language == "ipxe":
        return parse_ipxe(text)
    if language == "grub":
        return parse_grub(text)
    return parse_pxelinux(text)


def _split_args(line: str) -> list[str]:
    try:
        return shlex.split(line, comments=False)
    except ValueError:
        return line.split()


def _chain_target(args: list[str]) -> tuple[int, int | None] | None:
    """`hd0 3` / `hd0,3` / `hd0` -> (disk, partition); None if not a disk."""
    if not args:
        return None
    match = re.fullmatch(r"hd(\d+)(?:,(\d+))?", args[0])
    if not match:
        return None
    disk = int(match.group(1))
    if match.group(2) is not None:
        return disk, int(match.group(2))
    if len(args) > 1 and args[1].isdigit():
        return disk, int(args[1])
    return disk, None


def _local_from_chain(args: list[str], where: str) -> BootChoice:
    target = _chain_target(args)
    if target is None:
        return nothing(f"{where}: chain.c32 without a disk argument ({' '.join(args)!r})")
    disk, partition = target
    return BootChoice(kind="local", disk=disk, partition=partition)


def parse_pxelinux(text: str) -> BootChoice:
    """PXElinux/SYSLINUX: DEFAULT picks a LABEL whose KERNEL/LINUX/COM32 + APPEND decide."""
    labels: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    default = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        if "\t" in keyword:
            keyword, _, more = keyword.partition("\t")
            rest = (more + " " + rest).strip()
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "DEFAULT":
            default = rest
        elif keyword == "LABEL":
            current = labels.setdefault(rest, {})
        elif current is not None and keyword in ("KERNEL", "LINUX", "COM32", "APPEND", "INITRD", "LOCALBOOT"):
            current[keyword] = rest
    if not default:
        if len(labels) == 1:
            default = next(iter(labels))
        else:
            return nothing("PXElinux profile without DEFAULT")
    entry = labels.get(default)
    if entry is None:
        # `DEFAULT vmlinuz args` is a kernel command line when no LABEL matches.
        words = default.split(None, 1)
        entry = {"KERNEL": words[0], "APPEND": words[1] if len(words) > 1 else ""}
    append = entry.get("APPEND", "")
    if "LOCALBOOT" in entry:
        return BootChoice(kind="local", disk=0, partition=None)
    image = entry.get("COM32") or entry.get("KERNEL") or entry.get("LINUX") or ""
    if not image:
        return nothing(f"PXElinux label {default!r} names no kernel")
    args = _split_args(append)
    if image.rsplit("/", 1)[-1].lower() in CHAIN_MODULES:
        return _local_from_chain(args, f"label {default!r}")
    initrds = [path for path in entry.get("INITRD", "").split(",") if path]
    params = []
    for arg in args:
        if arg.startswith("initrd="):
            initrds.extend(path for path in arg[len("initrd="):].split(",") if path)
        else:
            params.append(arg)
    return BootChoice(kind="kernel", kernel=image, initrd=initrds, params=" ".join(params))


def parse_ipxe(text: str) -> BootChoice:
    """iPXE script: `initrd`, `kernel`/`chain`/`boot`, or `sanboot` (local disk)."""
    kernel = ""
    params = ""
    initrds: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or line.startswith(":"):
            continue
        words = _split_args(line)
        command, args = words[0], words[1:]
        options = [arg for arg in args if arg.startswith("--")]
        args = [arg for arg in args if not arg.startswith("--")]
        if command in ("initrd", "module") and args:
            initrds.append(args[0])
        elif command in ("kernel", "chain", "chainload", "imgexec") and args:
            if args[0].rsplit("/", 1)[-1].lower() in CHAIN_MODULES:
                return _local_from_chain(args[1:], "iPXE chain")
            kernel, params = args[0], " ".join(args[1:])
            if command != "kernel":
                break
        elif command == "sanboot":
            drive = next((opt.split("=", 1)[1] for opt in options if opt.startswith("--drive=")), "0x80")
            try:
                disk = int(drive, 0) - 0x80
            except ValueError:
                return nothing(f"iPXE sanboot: bad drive {drive!r}")
            return BootChoice(kind="local", disk=disk, partition=None)
        elif command == "boot":
            break
        elif command == "exit":
            return nothing("iPXE script exits")
    if not kernel:
        return nothing("iPXE script names no kernel")
    return BootChoice(kind="kernel", kernel=kernel, initrd=initrds, params=params)


def _grub_entries(text: str) -> tuple[list[str], list[list[str]]]:
    """Top-level lines and the lines of each menuentry, in order."""
    top: list[str] = []
    entries: list[list[str]] = []
    current: list[str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("menuentry"):
            current = []
            entries.append(current)
            body = line.split("{", 1)[1] if "{" in line else ""
            if body.strip() and body.strip() != "}":
                current.append(body.strip().rstrip("}").strip())
            continue
        if current is not None and line.startswith("}"):
            current = None
            continue
        (current if current is not None else top).append(line)
    return top, entries


def parse_grub(text: str) -> BootChoice:
    """GRUB as NBP: the default menuentry's `set root=(hdD,N)`, `linux`, `chainloader`."""
    top, entries = _grub_entries(text)
    default = 0
    for line in top:
        match = re.fullmatch(r"(?:set\s+)?default=\"?(\d+)\"?", line)
        if match:
            default = int(match.group(1))
    lines = entries[default] if default < len(entries) else (top if not entries else [])
    if not lines:
        return nothing("GRUB profile without a usable menuentry")
    root: tuple[int, int | None] | None = None
    kernel = ""
    params = ""
    initrds: list[str] = []
    for line in lines:
        words = _split_args(line)
        command, args = words[0], words[1:]
        match = re.fullmatch(r"set\s+root=\(?\s*hd(\d+)(?:,\s*(?:msdos|gpt)?(\d+))?\s*\)?", line)
        if match:
            root = (int(match.group(1)), int(match.group(2)) if match.group(2) else None)
        elif command in ("linux", "linux16", "linuxefi", "multiboot", "multiboot2") and args:
            kernel, params = args[0], " ".join(args[1:])
        elif command in ("initrd", "initrd16", "initrdefi", "module", "module2") and args:
            initrds.extend(args)
        elif command in ("chainloader", "ntldr"):
            if root is None:
                return nothing("GRUB chainloader without set root")
            return BootChoice(kind="local", disk=root[0], partition=root[1])
    if root is not None:
        return BootChoice(kind="local", disk=root[0], partition=root[1], kernel=kernel, initrd=initrds, params=params)
    if kernel:
        return BootChoice(kind="kernel", kernel=kernel, initrd=initrds, params=params)
    return nothing("GRUB menuentry names neither a root nor a kernel")


def root_partition(params: str) -> int | None:
    """Partition number from `root=/dev/sdXN` in a kernel command line (used by kexec).

    Also finds it inside `--append=root=...` / `--command-line="... root=..."` as kexec -l
    arguments are recorded verbatim.
    """
    match = re.search(r"(?:^|[\s=\"'])root=(\S+?)[\"']?(?:\s|$)", params)
    if not match:
        return None
    number = re.search(r"(\d+)$", match.group(1))
    return int(number.group(1)) if number else None
