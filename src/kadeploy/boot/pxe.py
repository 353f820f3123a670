"""PXE profiles: which file each node's NBP fetches, and writing it atomically.

Three boot situations (reference 6.3), each with its NBP settings: the
deployment kernel (`networkboot`), the installed system on the local disk
(`localboot`) and a user's own profile (`-w`, always the `dhcp` NBP). When the
NBP of the first two differs from the one DHCP hands out, a chain profile is
written for the DHCP NBP first. Profile names follow `profiles/filename`
(`ip_hex`, `ip`, `hostname`, `hostname_short`, and our `mac` extension).

A node being moved into a VLAN (`--vlan`) also gets its profile under the
name of its VLAN address (`BootTarget.vlan_ip`): its firmware comes up there,
asks DHCP of that VLAN and fetches the profile named after the address it got.

Unlike Kadeploy3, a profile is written to a temporary file and renamed, so that
a node fetching its profile during a rewrite never reads half of it. Writers
return a `StepResult`: a node whose profile cannot be written fails alone.
Imports only `kadeploy.errors` and this room.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kadeploy.boot.nbp import LocalBootEnv, NetworkBootProgram, network_boot_program
from kadeploy.boot.result import StepResult
from kadeploy.errors import ConfigError, ErrorCode, KadeployError
from kadeploy.templates import fill

__all__ = [
    "BootTarget",
    "LocalBootEnv",
    "PXEMethodSettings",
    "PXEProfiles",
    "disk_index",
    "profile_name",
    "profile_names",
    "write_atomic",
]

PROFILE_NAME_SCHEMES = ("ip_hex", "ip", "hostname", "hostname_short", "mac")
PROFILE_MODE = 0o644
_MAC_PATTERN = re.compile(r"^[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}$")
_USER_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
_DISK_PATTERN = re.compile(r"^/dev/(?:(?:[shv]|xv)d([a-z]+)|nvme(\d+)n\d+|mmcblk(\d+))$")


@dataclass(frozen=True)
class PXEMethodSettings:
    """One `pxe/{dhcp,localboot,networkboot}` section of server.conf, already parsed.

    `profiles_directory` is relative to `repository` unless absolute (empty:
    the repository itself); `binary` is the NBP file, relative to the
    repository, that a chain profile loads.
    """

    method: str
    repository: Path
    profiles_directory: str = "pxelinux.cfg"
    profiles_filename: str = "ip_hex"
    export_kind: str = "tftp"
    export_server: str = ""
    binary: str | None = None
    userfiles_directory: str = "userfiles"

    def __post_init__(self) -> None:
        if self.profiles_filename not in PROFILE_NAME_SCHEMES:
            raise ConfigError(
                f"pxe/{self.method}: invalid profiles/filename {self.profiles_filename!r} "
                f"(expected one of {', '.join(PROFILE_NAME_SCHEMES)})"
            )
        self.nbp()  # validates method and export kind now rather than at the first boot

    def nbp(self) -> NetworkBootProgram:
        return network_boot_program(self.method, self.export_kind, self.export_server)

    @property
    def profiles_path(self) -> Path:
        if not self.profiles_directory:
            return Path(self.repository)
        directory = Path(self.profiles_directory)
        return directory if directory.is_absolute() else Path(self.repository) / directory


@dataclass(frozen=True)
class BootTarget:
    """A node as its firmware sees it: hostname, the IP it gets from DHCP, its MAC if known.

    `vlan_ip` is its address in the VLAN it is being moved to, if any: the
    next boot may happen there, so its profile is written under both names.
    """

    hostname: str
    ip: str
    mac: str | None = None
    vlan_ip: str | None = None


def profile_name(scheme: str, target: BootTarget) -> str:
    """The profile file name of `target` under `scheme` (PXElinux's lookup conventions)."""
    if scheme in ("ip_hex", "ip"):
        try:
            address = ipaddress.IPv4Address(target.ip.strip())
        except ValueError:
            raise ConfigError(f"node {target.hostname}: invalid IPv4 address {target.ip!r} for its PXE profile") from None
        return f"{int(address):08X}" if scheme == "ip_hex" else str(address)
    if scheme == "mac":
        if not target.mac or not _MAC_PATTERN.match(target.mac):
            raise ConfigError(
                f"node {target.hostname}: PXE profiles are named by MAC but its mac is {target.mac!r}"
            )
        return "01-" + target.mac.lower().replace(":", "-")
    name = target.hostname if scheme == "hostname" else target.hostname.split(".")[0]
    if not name or "/" in name or name.startswith("."):
        raise ConfigError(f"node {target.hostname!r}: hostname cannot name a PXE profile file")
    return name


def profile_names(scheme: str, target: BootTarget) -> list[str]:
    """Every profile file name of `target`: its address's, then its VLAN address's if it differs."""
    names = [profile_name(scheme, target)]
    if target.vlan_ip:
        vlan_name = profile_name(scheme, BootTarget(target.hostname, target.vlan_ip, target.mac))
        if vlan_name not in names:
            names.append(vlan_name)
    return names


def disk_index(block_device: str) -> int:
    """BIOS disk number of a block device: `/dev/sda` 0, `/dev/sdb` 1, `/dev/nvme1n1` 1."""
    match = _DISK_PATTERN.match(block_device)
    if not match:
        raise ConfigError(f"partitioning/block_device: cannot tell the disk number of {block_device!r}")
    letters, nvme, mmc = match.groups()
    if letters:
        index = 0
        for letter in letters:
            index = index * 26 + (ord(letter) - ord("a") + 1)
        return index - 1
    return int(nvme if nvme is not None else mmc)


def write_atomic(path: Path, content: str | bytes, mode: int = PROFILE_MODE) -> None:
    """Write `path` through a temporary file of the same directory and a rename.

    A TFTP or HTTP server reading the file meanwhile sees the old or the new
    content, never a truncated one.
    """
    data = content.encode() if isinstance(content, str) else content
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            os.fchmod(handle.fileno(), mode)
        os.replace(temp, path)
    except BaseException:
        _unlink_quietly(temp)
        raise


def copy_atomic(source: Path, destination: Path, mode: int = PROFILE_MODE) -> None:
    """Copy a file in place atomically (same temp + rename rule as profiles)."""
    fd, temp = tempfile.mkstemp(prefix=f".{destination.name}.", dir=destination.parent)
    try:
        with os.fdopen(fd, "wb") as handle, open(source, "rb") as origin:
            shutil.copyfileobj(origin, handle, 1 << 20)
            os.fchmod(handle.fileno(), mode)
        os.replace(temp, destination)
    except BaseException:
        _unlink_quietly(temp)
        raise


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _check_user(user: str) -> None:
    if not _USER_PATTERN.match(user):
        raise KadeployError(ErrorCode.INVALID_CLIENT, f"Invalid user name for PXE files: {user!r}")


def _check_basename(name: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\0" in name or ".." in name:
        raise KadeployError(ErrorCode.INVALID_FILE, f"Invalid PXE file name {name!r}: a plain file name is expected")


@dataclass
class PXEProfiles:
    """The PXE profile writer of one site: the three NBP settings and the cluster's headers.

    `headers` keys are `dhcp` (used for chain profiles), `localboot` and
    `networkboot` (`netboot`, the name of Kadeploy3's documentation, is accepted).
    """

    dhcp: PXEMethodSettings
    localboot: PXEMethodSettings | None = None
    networkboot: PXEMethodSettings | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def header(self, kind: str) -> str:
        if kind == "networkboot" and "networkboot" not in self.headers:
            return self.headers.get("netboot", "") or ""
        return self.headers.get(kind, "") or ""

    # -- the boot situations -------------------------------------------------------------

    def deploy_kernel(
        self, targets: Sequence[BootTarget], kernel: str, initrd: str | None, params: str
    ) -> StepResult:
        """Boot the deployment kernel (paths relative to the PXE repository) over the network."""
        settings = self.networkboot or self.dhcp
        lines = settings.nbp().network_lines(kernel, initrd, params)
        return self._boot(settings, "networkboot", "network", lines, targets)

    def kernel_boot(
        self, targets: Sequence[BootTarget], kernel: str, initrd: str | None, params: str
    ) -> StepResult:
        """Boot a user environment's own kernel, put in the PXE repository by the caller.

        Written with the localboot NBP and header, since it boots the deployed
        system (its root is on the disk); label `kernel`.
        """
        settings = self.localboot or self.dhcp
        lines = settings.nbp().network_lines(kernel, initrd, params)
        return self._boot(settings, "localboot", "kernel", lines, targets)

    def local_boot(
        self,
        targets: Sequence[BootTarget],
        disk_index: int,
        partition: int,
        env: LocalBootEnv,
        *,
        block_device: str | None = None,
        default_params: str = "",
    ) -> StepResult:
        """Boot partition `partition` of disk `disk_index` (`hd0 3` is /dev/sda3).

        `block_device` names the disk for GrubPXE's `root=` (default `/dev/sd<letter>`);
        `default_params` are the cluster's `boot/kernels/user/params`, used when
        the environment has none.
        """
        if disk_index < 0 or partition < 1:
            raise KadeployError(ErrorCode.INVALID_OPTION, f"Invalid boot partition hd{disk_index} {partition}")
        disk_name = block_device or f"/dev/sd{chr(ord('a') + disk_index)}"
        settings = self.localboot or self.dhcp
        lines = settings.nbp().local_lines(env, disk_name, disk_index, partition, default_params)
        return self._boot(settings, "localboot", "local", lines, targets)

    def user_profile(
        self,
        targets: Sequence[BootTarget],
        profile_text: str,
        user: str,
        singularities: Mapping[str, str] | None = None,
        files: Sequence[Path] | Mapping[str, Path] = (),
    ) -> StepResult:
        """A user's own profile (`-w`), for the DHCP NBP, with `-x` files and `--set-pxe-pattern`.

        `files` are local copies of the user's files; a mapping gives the name
        the user chose for each (the cache may store them under other names).
        They land in `<repository>/<userfiles>/pxe-<user>--<name>`, and
        `FILES_PREFIX` in the profile becomes the export path of
        `<userfiles>/pxe-<user>`, so `FILES_PREFIX--vmlinuz` names the file.
        """
        _check_user(user)
        named = dict(files) if isinstance(files, Mapping) else {Path(f).name: Path(f) for f in files}
        for name in named:
            _check_basename(name)
        settings = self.dhcp
        userfiles = Path(settings.repository) / settings.userfiles_directory
        if named:
            try:
                userfiles.mkdir(parents=True, exist_ok=True)
                for name, source in named.items():
                    copy_atomic(Path(source), userfiles / f"pxe-{user}--{name}")
            except FileNotFoundError as exc:
                raise KadeployError(ErrorCode.INVALID_FILE, f"PXE file not found: {exc.filename}") from None
            except OSError as exc:
                return StepResult(ko={t.hostname: f"Cannot copy the PXE files: {exc}" for t in targets})
        prefix = settings.nbp().export_path(f"{settings.userfiles_directory}/pxe-{user}")
        values = singularities or {}
        # one pass per node: a user name in the prefix never becomes a NODE_SINGULARITY to fill
        contents = {t.hostname: fill(profile_text, raw={"FILES_PREFIX": prefix,
                                                        "NODE_SINGULARITY": str(values.get(t.hostname, ""))})
                    for t in targets}
        return self._write(settings, targets, contents)

    # -- writing --------------------------------------------------------------------------

    def profile_path(self, settings: PXEMethodSettings, target: BootTarget) -> Path:
        return settings.profiles_path / profile_name(settings.profiles_filename, target)

    def profile_paths(self, settings: PXEMethodSettings, target: BootTarget) -> list[Path]:
        """Where `target`'s profile goes: under its address's name and its VLAN address's."""
        return [settings.profiles_path / name for name in profile_names(settings.profiles_filename, target)]

    def needs_chain(self, settings: PXEMethodSettings) -> bool:
        """Whether the DHCP NBP must chain to `settings`' NBP (another method or binary)."""
        return settings is not self.dhcp and (
            settings.method != self.dhcp.method or settings.binary != self.dhcp.binary
        )

    def _boot(
        self, settings: PXEMethodSettings, role: str, label: str, lines: list[str], targets: Sequence[BootTarget]
    ) -> StepResult:
        content = settings.nbp().labelize(self.header(role), label, lines)
        if not self.needs_chain(settings):
            return self._write(settings, targets, {t.hostname: content for t in targets})
        if not settings.binary:
            raise ConfigError(f"pxe/{role}/binary is required since its method differs from pxe/dhcp")
        for target in targets:
            if set(self.profile_paths(settings, target)) & set(self.profile_paths(self.dhcp, target)):
                raise ConfigError(
                    f"pxe/{role} and pxe/dhcp write the same profile file for {target.hostname}: "
                    "give them different profiles/directory"
                )
        dhcp_nbp = self.dhcp.nbp()
        chain = dhcp_nbp.labelize(self.header("dhcp"), "chain", dhcp_nbp.chain_lines(settings.binary))
        chained = self._write(self.dhcp, targets, {t.hostname: chain for t in targets})
        ready = [t for t in targets if t.hostname in set(chained.ok)]
        final = self._write(settings, ready, {t.hostname: content for t in ready})
        final.ko.update(chained.ko)
        return final

    def _write(
        self, settings: PXEMethodSettings, targets: Iterable[BootTarget], contents: Mapping[str, str]
    ) -> StepResult:
        result = StepResult()
        directory = settings.profiles_path
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return StepResult(ko={t.hostname: f"Cannot create the PXE profiles directory {directory}: {exc.strerror}" for t in targets})
        for target in targets:
            for path in self.profile_paths(settings, target):
                try:
                    write_atomic(path, contents[target.hostname])
                except OSError as exc:
                    result.ko[target.hostname] = f"Cannot write the PXE profile {path}: {exc.strerror}"
                    break
            else:
                result.ok.append(target.hostname)
        return result
