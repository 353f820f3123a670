"""Testbed images: the deployment rootfs and the `debian12-min` user environment.

Room: testbed. Imports only `kadeploy.errors`, the testbed's partition numbers
(`configdir.PARTITIONS`) and the standard library (plus PyYAML for the
environment descriptions).

Why this exists: every test, demo and benchmark deploys *real* images onto the
netns nodes, so the images are built for real with debootstrap, and cached by
content on disk because a build takes minutes and the inputs rarely change.

Public API (called by the testbed supervisor and CLI)::

    DEFAULT_CACHE: Path                       # /var/cache/kadeploy-testbed
    ensure_deploy_rootfs(cache: Path = DEFAULT_CACHE) -> Path
        # <cache>/deploy-rootfs-<hash>; also points the symlink <cache>/deploy-rootfs at it.
        # Debian 12 minbase with sshd (PermitRootLogin prohibit-password, UseDNS no,
        # host keys generated), python3, parted, fdisk, mkfs tools, tar and decompressors,
        # kexec-tools, nc, ip. No authorized_keys: the testbed installs the deploy key.
    ensure_user_images(cache: Path = DEFAULT_CACHE) -> UserImages
        # <cache>/user-images-<hash>/ (symlink <cache>/user-images) holding the unpacked
        # rootfs/, debian12-min.{tgz,txz,tzst,ddgz} and one environment description
        # (YAML, reference section 4) per pack: debian12-min, debian12-min-txz,
        # debian12-min-tzst, debian12-min-ddgz (<env name>.yaml).
    @dataclass UserImages: directory, rootfs, tgz, txz, tzst, ddgz: Path;
                           descriptions: dict[str, Path]   # env name -> YAML path
    ensure_fsa_images(cache: Path = DEFAULT_CACHE) -> FsaImages
        # <cache>/fsa-images-<hash>/ (symlink <cache>/fsa-images): debian12-min.fsa, an FSArchiver
        # archive of two filesystems made from the user rootfs (id 0: the root filesystem with
        # /etc/kadeploy-testbed-fsa; id 1: a small data filesystem holding /MARKER), and the
        # multipart description debian12-min-fsa.yaml restoring them on sda3 and sda5.
    @dataclass FsaImages: directory, image, description: Path; root_marker, data_marker: str
    prune_cache(cache: Path = DEFAULT_CACHE) -> list[Path]
        # removes deploy-rootfs-*/user-images-*/fsa-images-* builds the symlinks no longer name
    main_build(argv: Sequence[str] | None = None) -> int
        # `kadeploy-testbed image build [--cache DIR] [--only deploy|user|fsa] [--prune]`: builds,
        # prints paths, returns the exit status (1 with a one-line error on failure).

Cached trees are content-addressed and shared: treat them as read-only (mount an
overlay per node, or copy) and never write authorized_keys into them.

Both `ensure_*` calls are idempotent and instant when the cache holds the
build; concurrent callers serialise on a lock file. A failed build raises
`KadeployError` naming the failing command and the build log
(`<cache>/logs/<name>-<hash>.log`). Building needs root (debootstrap, chroot).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from kadeploy.errors import ErrorCode, KadeployError
from kadeploy_testbed.configdir import PARTITIONS

DEFAULT_CACHE = Path("/var/cache/kadeploy-testbed")
MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"

# Bump when the build steps below change in a way the package lists do not show,
# so that stale cached builds are not reused.
RECIPE_VERSION = 1

DEPLOY_PACKAGES = (
    "openssh-server", "python3", "parted", "fdisk", "e2fsprogs", "xfsprogs",
    "dosfstools", "tar", "gzip", "bzip2", "xz-utils", "zstd", "pigz", "kexec-tools",
    "netcat-openbsd", "iproute2", "procps", "util-linux", "mount",
    # fsa images (Kadeploy3's deployment environment ships it too): decompress_environment's restfs
    "fsarchiver",
    # BroadcastEnvBittorrent: the nodes' BitTorrent client (kadeploy/broadcast/btnode.py runs aria2c)
    "aria2",
)
# systemd-sysv gives the image an init that starts the enabled ssh.service on real
# hardware; the testbed itself starts the image's /usr/sbin/sshd directly.
USER_PACKAGES = ("openssh-server", "python3", "linux-image-amd64", "systemd-sysv")

# Kernel module trees a disk-booted server never loads (GPU, media, sound, wireless,
# InfiniBand, staging...): about 180 MB of the 610 MB rootfs that every testbed
# deployment would otherwise broadcast and write. depmod is rerun after pruning.
PRUNED_MODULE_DIRS = (
    "kernel/drivers/gpu", "kernel/drivers/media", "kernel/drivers/net/wireless",
    "kernel/drivers/infiniband", "kernel/drivers/staging", "kernel/drivers/iio",
    "kernel/drivers/comedi", "kernel/drivers/bluetooth", "kernel/drivers/input/touchscreen",
    "kernel/sound", "kernel/net/wireless", "kernel/net/mac80211", "kernel/net/bluetooth",
)

USER_ENV_NAME = "debian12-min"
ENV_AUTHOR = "kadeploy-testbed"
ENV_DESCRIPTION = "Debian 12 (bookworm) minimal with openssh-server and python3, built by kadeploy-testbed"

# Wall-clock limits of the build commands: debootstrap downloads ~100-200 MB.
DEBOOTSTRAP_TIMEOUT = 1800.0
PACK_TIMEOUT = 1200.0
COMMAND_TIMEOUT = 300.0
LOCK_TIMEOUT = 3600.0

# What a minimal image does not need and that only costs broadcast time.
STRIP_PATHS = (
    "var/lib/apt/lists", "var/cache/apt", "var/cache/debconf/templates.dat-old",
    "var/cache/man", "usr/share/man", "usr/share/doc", "usr/share/info",
    "usr/share/locale", "usr/share/lintian", "usr/share/linda", "var/log",
)

SSHD_DROPIN = """\
# Written by kadeploy-testbed: root logs in with the deploy key only, and no
# reverse DNS lookup slows down logins on a testbed without DNS.
PermitRootLogin prohibit-password
PasswordAuthentication no
UseDNS no
"""

DPKG_EXCLUDES = """\
# Written by kadeploy-testbed: keep later package installs as small as the image.
path-exclude /usr/share/doc/*
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
"""


@dataclass(frozen=True)
class RootfsRecipe:
    """Everything that decides the content of a debootstrapped root filesystem."""

    name: str
    packages: tuple[str, ...]
    suite: str = SUITE
    variant: str = "minbase"
    mirror: str = MIRROR
    version: int = RECIPE_VERSION

    def digest(self, *extra: str) -> str:
        """Short content hash of the recipe (and of `extra` inputs), used in directory names."""
        payload = json.dumps(
            {
                "name": self.name, "suite": self.suite, "variant": self.variant,
                "packages": sorted(self.packages), "mirror": self.mirror,
                "version": self.version, "extra": list(extra),
            },
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


DEPLOY_RECIPE = RootfsRecipe("deploy-rootfs", DEPLOY_PACKAGES)
USER_RECIPE = RootfsRecipe(USER_ENV_NAME, USER_PACKAGES)


@dataclass(frozen=True)
class UserImages:
    """The packed `debian12-min` environment; `descriptions` maps env name to its YAML file."""

    directory: Path
    rootfs: Path
    tgz: Path
    txz: Path
    tzst: Path
    ddgz: Path
    descriptions: dict[str, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class Pack:
    """One packing of the user rootfs: file suffix, env name, image kind and compression."""

    suffix: str
    env_name: str
    kind: str
    compression: str
    compressor: str     # the command tar -I (or the dd pipeline) compresses with


# Levels chosen for build time on a small shared machine: xz -6 took over 8 minutes
# on 2 loaded cores for a 3% smaller file.
PACKS = (
    Pack("tgz", USER_ENV_NAME, "tar", "gzip", "pigz"),
    Pack("txz", f"{USER_ENV_NAME}-txz", "tar", "xz", "xz -T0 -3"),
    Pack("tzst", f"{USER_ENV_NAME}-tzst", "tar", "zstd", "zstd -T0 -6"),
    Pack("ddgz", f"{USER_ENV_NAME}-ddgz", "dd", "gzip", "pigz"),
)


# --------------------------------------------------------------------------- build log


class BuildLog:
    """Runs build commands with their output appended to one log file.

    Why: debootstrap's output is long and only interesting when a build fails,
    so it goes to a file and the error message points at that file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def note(self, text: str) -> None:
        with self.path.open("a") as log:
            log.write(f"[{time.strftime('%H:%M:%S')}] {text}\n")

    def run(self, argv: Sequence[str], *, timeout: float = COMMAND_TIMEOUT,
            ok_codes: Sequence[int] = (0,), shell: bool = False) -> None:
        """Run one command; raise KadeployError naming it and the log if it fails or times out."""
        shown = argv[-1] if shell else shlex.join(argv)
        self.note(f"$ {shown}")
        with self.path.open("ab") as log:
            try:
                proc = subprocess.run(
                    list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    timeout=timeout, check=False, env=_build_env(),
                )
            except subprocess.TimeoutExpired:
                raise KadeployError(
                    ErrorCode.EXECUTE_ERROR,
                    f"image build: command timed out after {timeout:.0f}s: {shown} (log: {self.path})",
                ) from None
            except OSError as exc:
                raise KadeployError(
                    ErrorCode.EXECUTE_ERROR,
                    f"image build: cannot run {shown}: {exc} (log: {self.path})",
                ) from None
        if proc.returncode not in ok_codes:
            raise KadeployError(
                ErrorCode.EXECUTE_ERROR,
                f"image build: command failed with exit status {proc.returncode}: {shown} "
                f"(log: {self.path})",
            )

    def shell(self, script: str, *, timeout: float = COMMAND_TIMEOUT) -> None:
        """Run a shell pipeline whose parts were quoted by the caller."""
        self.run(["/bin/sh", "-ec", script], timeout=timeout, shell=True)


def _build_env() -> dict[str, str]:
    """A predictable environment for debootstrap and chroot commands."""
    return {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
        "DEBIAN_FRONTEND": "noninteractive", "DEBCONF_NONINTERACTIVE_SEEN": "true",
        "HOME": "/root",
    }


# --------------------------------------------------------------------------- cache plumbing


def _require_root() -> None:
    if os.geteuid() != 0:
        raise KadeployError(ErrorCode.EXECUTE_ERROR,
                            "image build needs root (debootstrap, chroot, mkfs); run it as root")


@contextmanager
def _cache_lock(cache: Path, name: str, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Serialise builds of one image between processes (two `up` at once build once)."""
    lock_path = cache / f".lock-{name}"
    try:
        cache.mkdir(parents=True, exist_ok=True)
        lock_file = lock_path.open("a")
    except OSError as exc:
        raise KadeployError(ErrorCode.EXECUTE_ERROR,
                            f"cannot use the image cache {cache}: {exc.strerror}") from None
    with lock_file:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise KadeployError(
                        ErrorCode.EXECUTE_ERROR,
                        f"image build: another build of {name} holds {lock_path} "
                        f"for more than {timeout:.0f}s",
                    ) from None
                time.sleep(1.0)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _mounts_below(path: Path) -> list[Path]:
    """Mount points at or below `path`, deepest first (read from /proc/self/mountinfo)."""
    root = os.path.realpath(path)
    found: list[Path] = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            # Field 5 is the mount point, with spaces etc. octal-escaped.
            point = line.split()[4].encode().decode("unicode_escape")
            if point == root or point.startswith(root + "/"):
                found.append(Path(point))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def _unmount_below(path: Path) -> None:
    """Unmount what a failed debootstrap or chroot step left mounted (proc, sys, dev)."""
    for point in _mounts_below(path):
        subprocess.run(["umount", "-l", str(point)], check=False, timeout=COMMAND_TIMEOUT,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _remove_tree(path: Path) -> None:
    """Remove a build tree, refusing to descend into anything still mounted.

    Why: a debootstrap killed halfway can leave /proc or /dev mounted inside the
    target, and a plain rmtree would then delete host files.
    """
    if not path.exists() and not path.is_symlink():
        return
    _unmount_below(path)
    if _mounts_below(path):
        raise KadeployError(ErrorCode.EXECUTE_ERROR,
                            f"image build: {path} still has mounts below it; not removing it")
    shutil.rmtree(path, ignore_errors=True)


def _point_symlink(link: Path, target: Path) -> None:
    """Atomically make `link` a symlink to `target` (relative, inside the cache)."""
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(target.name)
    os.replace(tmp, link)


def _build_cached(cache: Path, name: str, digest: str,
                  build: Callable[[Path, BuildLog], None]) -> Path:
    """Return <cache>/<name>-<digest>, building it in a temp dir and renaming it when absent."""
    final = cache / f"{name}-{digest}"
    if final.is_dir():
        return final
    _require_root()
    with _cache_lock(cache, name):
        if final.is_dir():           # built by another process while we waited
            return final
        log = BuildLog(cache / "logs" / f"{name}-{digest}.log")
        log.note(f"building {final}")
        work = Path(tempfile.mkdtemp(prefix=f".build-{name}-{digest}-", dir=cache))
        try:
            build(work, log)
            os.chmod(work, 0o755)
            os.rename(work, final)
        except BaseException:
            log.note("build failed; removing the partial tree")
            _remove_tree(work)
            raise
        log.note(f"built {final}")
    return final


# --------------------------------------------------------------------------- rootfs recipes


def _debootstrap(recipe: RootfsRecipe, target: Path, cache: Path, log: BuildLog) -> None:
    """debootstrap the recipe into `target`; downloaded .debs are kept in <cache>/debs."""
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    # One debootstrap at a time per cache: two runs downloading the same .deb into
    # the shared cache directory could leave a truncated package behind.
    with _cache_lock(cache, "debootstrap"):
        log.run(
            ["debootstrap", f"--variant={recipe.variant}",
             f"--include={','.join(recipe.packages)}", f"--cache-dir={debs}",
             recipe.suite, str(target), recipe.mirror],
            timeout=DEBOOTSTRAP_TIMEOUT,
        )
    # debootstrap unmounts on success, but a chroot step below must never run with
    # leftovers, and the rename of the tree must not carry mounts along.
    _unmount_below(target)


def _chroot(target: Path, log: BuildLog, *argv: str) -> None:
    log.run(["chroot", str(target), *argv])


def _configure_sshd(target: Path, log: BuildLog) -> None:
    """Key-only root login, no DNS lookups, host keys present, privsep dir present."""
    dropin_dir = target / "etc/ssh/sshd_config.d"
    dropin_dir.mkdir(parents=True, exist_ok=True)
    (dropin_dir / "kadeploy-testbed.conf").write_text(SSHD_DROPIN)
    _chroot(target, log, "ssh-keygen", "-A")
    (target / "run/sshd").mkdir(parents=True, exist_ok=True)
    root_ssh = target / "root/.ssh"
    root_ssh.mkdir(mode=0o700, parents=True, exist_ok=True)
    # sshd -t checks the whole configuration as the daemon would read it.
    _chroot(target, log, "/usr/sbin/sshd", "-t")


def _strip(target: Path, log: BuildLog) -> None:
    """Drop docs, man pages, locales, apt lists and caches: they only cost broadcast time."""
    for relative in STRIP_PATHS:
        path = target / relative
        if path.is_dir() and not path.is_symlink():
            for child in path.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
    (target / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
    (target / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
    (target / "etc/dpkg/dpkg.cfg.d").mkdir(parents=True, exist_ok=True)
    (target / "etc/dpkg/dpkg.cfg.d/01-kadeploy-testbed-nodoc").write_text(DPKG_EXCLUDES)
    log.note(f"stripped {', '.join(STRIP_PATHS)}")


def _set_identity(target: Path, hostname: str) -> None:
    """A hostname and a resolv.conf that does not leak the build host's."""
    (target / "etc/hostname").write_text(f"{hostname}\n")
    resolv = target / "etc/resolv.conf"
    if resolv.is_symlink() or resolv.exists():
        resolv.unlink()
    resolv.write_text("")


def _build_deploy_rootfs(cache: Path) -> Callable[[Path, BuildLog], None]:
    def build(work: Path, log: BuildLog) -> None:
        rootfs = work
        _debootstrap(DEPLOY_RECIPE, rootfs, cache, log)
        _configure_sshd(rootfs, log)
        _set_identity(rootfs, "deploy")
        _strip(rootfs, log)
    return build


def ensure_deploy_rootfs(cache: Path = DEFAULT_CACHE) -> Path:
    """Return the cached deployment rootfs, building it first if needed.

    Also points `<cache>/deploy-rootfs` at it, the stable path the testbed uses.
    """
    cache = Path(cache)
    path = _build_cached(cache, DEPLOY_RECIPE.name, DEPLOY_RECIPE.digest(SSHD_DROPIN),
                         _build_deploy_rootfs(cache))
    link = cache / DEPLOY_RECIPE.name
    if not (link.is_symlink() and os.readlink(link) == path.name):
        _point_symlink(link, path)
    return path


# --------------------------------------------------------------------------- user images


def _configure_user_rootfs(rootfs: Path, log: BuildLog) -> None:
    """Lock root's password, enable sshd, check that the kernel and initrd are there."""
    _chroot(rootfs, log, "passwd", "-l", "root")
    _configure_sshd(rootfs, log)
    wants = rootfs / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    ssh_unit = wants / "ssh.service"
    if not ssh_unit.is_symlink() and not ssh_unit.exists():
        ssh_unit.symlink_to("/lib/systemd/system/ssh.service")
    _set_identity(rootfs, USER_ENV_NAME)
    (rootfs / "etc/fstab").write_text(
        "# Written by kadeploy-testbed; the bootloader passes root= on the kernel command line.\n"
    )
    for boot_file in ("vmlinuz", "initrd.img"):
        if not (rootfs / boot_file).exists():
            raise KadeployError(
                ErrorCode.EXECUTE_ERROR,
                f"image build: /{boot_file} is missing in {rootfs} after installing the kernel "
                f"(log: {log.path})",
            )


def _prune_kernel_modules(rootfs: Path, log: BuildLog) -> None:
    """Drop the module trees in PRUNED_MODULE_DIRS and rebuild modules.dep."""
    for modules in sorted((rootfs / "usr/lib/modules").glob("*")):
        if not (modules / "kernel").is_dir():
            continue
        for relative in PRUNED_MODULE_DIRS:
            shutil.rmtree(modules / relative, ignore_errors=True)
        _chroot(rootfs, log, "depmod", "-a", modules.name)
    log.note(f"pruned kernel modules: {', '.join(PRUNED_MODULE_DIRS)}")


def _tree_bytes(root: Path) -> int:
    """Apparent size of a tree (what mkfs -d has to store), not following symlinks."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + dirnames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except FileNotFoundError:
                pass
    return total


def _pack_tar(rootfs: Path, out: Path, compressor: str, log: BuildLog) -> None:
    """tar the rootfs with numeric owners, entries named ./..., through `compressor`."""
    log.run(["tar", "--numeric-owner", "--xattrs", "--one-file-system", "-I", compressor,
             "-C", str(rootfs), "-cf", str(out), "."], timeout=PACK_TIMEOUT)


def _pack_dd(rootfs: Path, out: Path, compressor: str, work: Path, log: BuildLog) -> None:
    """An ext4 filesystem image of the rootfs (mkfs.ext4 -d), checked, then compressed."""
    raw = work / "rootfs.ext4"
    # Room for inodes, journal and some free space for the user's first boot.
    size_mib = int(_tree_bytes(rootfs) * 1.25 / 2**20) + 160
    with raw.open("wb") as image:
        image.truncate(size_mib * 2**20)
    try:
        log.run(["mkfs.ext4", "-F", "-q", "-L", "root", "-d", str(rootfs), str(raw)],
                timeout=PACK_TIMEOUT)
        # e2fsck exits 1 when it fixed something, which is fine for a fresh image.
        log.run(["e2fsck", "-f", "-y", str(raw)], timeout=PACK_TIMEOUT, ok_codes=(0, 1))
        log.shell(f"{compressor} -c < {shlex.quote(str(raw))} > {shlex.quote(str(out))}",
                  timeout=PACK_TIMEOUT)
    finally:
        raw.unlink(missing_ok=True)


def environment_description(pack: Pack, image_file: Path) -> dict[str, object]:
    """The Kadeploy environment description (reference section 4) of one pack."""
    return {
        "name": pack.env_name,
        "version": 1,
        "description": ENV_DESCRIPTION,
        "author": ENV_AUTHOR,
        "visibility": "public",
        "destructive": False,
        "os": "linux",
        "image": {"file": f"server://{image_file.resolve()}", "kind": pack.kind,
                  "compression": pack.compression},
        "boot": {"kernel": "/vmlinuz", "initrd": "/initrd.img"},
        "filesystem": "ext4",
        "partition_type": 131,
        "multipart": False,
    }


def _write_descriptions(directory: Path, final_directory: Path) -> dict[str, Path]:
    """Write one YAML per pack; image paths name the final (renamed) directory."""
    written: dict[str, Path] = {}
    for pack in PACKS:
        image_file = final_directory / f"{USER_ENV_NAME}.{pack.suffix}"
        description = environment_description(pack, image_file)
        path = directory / f"{pack.env_name}.yaml"
        path.write_text("---\n" + yaml.safe_dump(description, sort_keys=False))
        written[pack.env_name] = final_directory / path.name
    return written


def _build_user_images(cache: Path, final: Path) -> Callable[[Path, BuildLog], None]:
    def build(work: Path, log: BuildLog) -> None:
        rootfs = work / "rootfs"
        rootfs.mkdir()
        _debootstrap(USER_RECIPE, rootfs, cache, log)
        _configure_user_rootfs(rootfs, log)
        _prune_kernel_modules(rootfs, log)
        _strip(rootfs, log)
        for pack in PACKS:
            image_file = work / f"{USER_ENV_NAME}.{pack.suffix}"
            if pack.kind == "tar":
                _pack_tar(rootfs, image_file, pack.compressor, log)
            else:
                _pack_dd(rootfs, image_file, pack.compressor, work, log)
        _write_descriptions(work, final)
    return build


def _user_images_at(directory: Path) -> UserImages:
    def image(suffix: str) -> Path:
        return directory / f"{USER_ENV_NAME}.{suffix}"
    return UserImages(
        directory=directory, rootfs=directory / "rootfs",
        tgz=image("tgz"), txz=image("txz"), tzst=image("tzst"), ddgz=image("ddgz"),
        descriptions={pack.env_name: directory / f"{pack.env_name}.yaml" for pack in PACKS},
    )


def ensure_user_images(cache: Path = DEFAULT_CACHE) -> UserImages:
    """Return the cached `debian12-min` packs and descriptions, building them if needed.

    Also points `<cache>/user-images` at the current build.
    """
    cache = Path(cache)
    recipe_inputs = (SSHD_DROPIN, repr(PACKS), ENV_DESCRIPTION, *PRUNED_MODULE_DIRS)
    digest = USER_RECIPE.digest(*recipe_inputs)
    final = cache / f"user-images-{digest}"
    directory = _build_cached(cache, "user-images", digest, _build_user_images(cache, final))
    link = cache / "user-images"
    if not (link.is_symlink() and os.readlink(link) == directory.name):
        _point_symlink(link, directory)
    return _user_images_at(directory)


# --------------------------------------------------------------------------- fsa images

FSA_FAMILY = "fsa-images"
FSA_ENV_NAME = f"{USER_ENV_NAME}-fsa"
FSA_IMAGE_NAME = f"{USER_ENV_NAME}.fsa"
FSA_COMPRESSION = 3            # fsarchiver -z 3; the description's image/compression
FSA_ROOT_MARKER = "/etc/kadeploy-testbed-fsa"
FSA_DATA_MARKER = "/MARKER"
FSA_DATA_MIB = 32
FSA_RECIPE_VERSION = 1
#: archive id -> partition: the root filesystem on the deploy partition, the data one on tmp
FSA_PARTITIONS = ((0, PARTITIONS["deploy"]), (1, PARTITIONS["tmp"]))


@dataclass(frozen=True)
class FsaImages:
    """The multipart fsa environment and the markers its two filesystems carry."""

    directory: Path
    image: Path
    description: Path
    root_marker: str     # content of FSA_ROOT_MARKER in filesystem 0
    data_marker: str     # content of FSA_DATA_MARKER in filesystem 1


def fsa_description(image_file: Path) -> dict[str, object]:
    """The multipart description (reference section 4): filesystem 0 boots from the deploy partition."""
    deploy = PARTITIONS["deploy"]
    return {
        "name": FSA_ENV_NAME,
        "version": 1,
        "description": f"{ENV_DESCRIPTION}; FSArchiver multipart: root on sda{deploy}, data on "
                       f"sda{PARTITIONS['tmp']}",
        "author": ENV_AUTHOR,
        "visibility": "public",
        "destructive": False,
        "os": "linux",
        "image": {"file": f"server://{image_file.resolve()}", "kind": "fsa", "compression": FSA_COMPRESSION},
        "boot": {"kernel": "/vmlinuz", "initrd": "/initrd.img", "block_device": "/dev/sda", "partition": deploy},
        "filesystem": "ext4",
        "partition_type": 131,
        "multipart": True,
        "options": {"partitions": [{"id": fs_id, "device": f"/dev/sda{number}"}
                                   for fs_id, number in FSA_PARTITIONS]},
    }


def _fsa_markers(digest: str) -> tuple[str, str]:
    return f"kadeploy-testbed fsa root filesystem {digest}\n", f"kadeploy-testbed fsa data filesystem {digest}\n"


@contextmanager
def _read_only_loops(images: Sequence[Path], log: BuildLog) -> Iterator[list[str]]:
    """Attach filesystem images to loop devices (read-only) for fsarchiver savefs; always detached after.

    Why: savefs reads block devices, not image files.
    """
    devices: list[str] = []
    try:
        for image in images:
            log.note(f"$ losetup --find --show --read-only {image}")
            result = subprocess.run(["losetup", "--find", "--show", "--read-only", str(image)],
                                    capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False)
            if result.returncode != 0:
                raise KadeployError(ErrorCode.EXECUTE_ERROR,
                                    f"image build: losetup {image} failed: {result.stderr.strip()} (log: {log.path})")
            devices.append(result.stdout.strip())
        yield devices
    finally:
        for device in devices:
            subprocess.run(["losetup", "-d", device], check=False, timeout=COMMAND_TIMEOUT,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _ext4_image(path: Path, size_mib: int, label: str, tree: Path, log: BuildLog) -> None:
    with path.open("wb") as image:
        image.truncate(size_mib * 2**20)
    log.run(["mkfs.ext4", "-F", "-q", "-L", label, "-d", str(tree), str(path)], timeout=PACK_TIMEOUT)


def _build_fsa_images(user: UserImages, final: Path, digest: str) -> Callable[[Path, BuildLog], None]:
    def build(work: Path, log: BuildLog) -> None:
        root_marker, data_marker = _fsa_markers(digest)
        root_image, data_image = work / "root.ext4", work / "data.ext4"
        try:
            # the shared user rootfs stays untouched: the marker is written into the filesystem image
            _ext4_image(root_image, int(_tree_bytes(user.rootfs) * 1.25 / 2**20) + 160, "root", user.rootfs, log)
            marker_source = work / "root-marker"
            marker_source.write_text(root_marker)
            commands = work / "debugfs-commands"
            directory, name = FSA_ROOT_MARKER.rsplit("/", 1)
            commands.write_text(f"cd {directory}\nwrite {marker_source} {name}\n")
            log.run(["debugfs", "-w", "-f", str(commands), str(root_image)])
            marker_source.unlink()
            commands.unlink()
            data_tree = work / "data"
            data_tree.mkdir()
            (data_tree / FSA_DATA_MARKER.lstrip("/")).write_text(data_marker)
            _ext4_image(data_image, FSA_DATA_MIB, "fsa-data", data_tree, log)
            shutil.rmtree(data_tree)
            for image in (root_image, data_image):
                log.run(["e2fsck", "-f", "-y", str(image)], timeout=PACK_TIMEOUT, ok_codes=(0, 1))
            with _read_only_loops([root_image, data_image], log) as (root_device, data_device):
                # archive ids follow this order: 0 root, 1 data (FSA_PARTITIONS)
                log.run(["fsarchiver", "-j", str(os.cpu_count() or 1), "-z", str(FSA_COMPRESSION), "savefs",
                         str(work / FSA_IMAGE_NAME), root_device, data_device], timeout=PACK_TIMEOUT)
        finally:
            root_image.unlink(missing_ok=True)
            data_image.unlink(missing_ok=True)
        (work / f"{FSA_ENV_NAME}.yaml").write_text(
            "---\n" + yaml.safe_dump(fsa_description(final / FSA_IMAGE_NAME), sort_keys=False))
    return build


def _fsa_images_at(directory: Path, digest: str) -> FsaImages:
    root_marker, data_marker = _fsa_markers(digest)
    return FsaImages(directory=directory, image=directory / FSA_IMAGE_NAME,
                     description=directory / f"{FSA_ENV_NAME}.yaml", root_marker=root_marker,
                     data_marker=data_marker)


def ensure_fsa_images(cache: Path = DEFAULT_CACHE) -> FsaImages:
    """Return the cached multipart fsa environment of `debian12-min`, building it if needed.

    Built from the user images' rootfs, in its own cache family so that adding
    it did not change the user images' hash. Needs root, loop devices and the
    host's fsarchiver (scripts/install.sh installs it).
    """
    cache = Path(cache)
    user = ensure_user_images(cache)
    digest = USER_RECIPE.digest(user.directory.name, FSA_ENV_NAME, str(FSA_COMPRESSION), FSA_ROOT_MARKER,
                                FSA_DATA_MARKER, repr(FSA_PARTITIONS), str(FSA_RECIPE_VERSION))
    final = cache / f"{FSA_FAMILY}-{digest}"
    if not final.is_dir() and shutil.which("fsarchiver") is None:
        raise KadeployError(ErrorCode.EXECUTE_ERROR,
                            "image build: fsarchiver is not installed on this host (scripts/install.sh installs it)")
    directory = _build_cached(cache, FSA_FAMILY, digest, _build_fsa_images(user, final, digest))
    link = cache / FSA_FAMILY
    if not (link.is_symlink() and os.readlink(link) == directory.name):
        _point_symlink(link, directory)
    return _fsa_images_at(directory, digest)


# --------------------------------------------------------------------------- cache hygiene


def prune_cache(cache: Path = DEFAULT_CACHE) -> list[Path]:
    """Remove builds of `deploy-rootfs` and `user-images` that their symlink no longer names.

    Why: each recipe change leaves a ~1.5 GB build behind. Only our three image
    families are touched; other rooms' builds in the same cache are left alone.
    """
    removed: list[Path] = []
    for family in (DEPLOY_RECIPE.name, "user-images", FSA_FAMILY):
        link = cache / family
        current = os.readlink(link) if link.is_symlink() else None
        for build in sorted(cache.glob(f"{family}-*")):
            if build.is_dir() and not build.is_symlink() and build.name != current \
                    and not _in_use_by_a_mount(build):
                with _cache_lock(cache, family):
                    _remove_tree(build)
                removed.append(build)
    return removed


def _in_use_by_a_mount(path: Path) -> bool:
    """True when a mount names `path` (say, as an overlay lowerdir of a running node)."""
    needle = os.path.realpath(path)
    with open("/proc/self/mountinfo") as mountinfo:
        return any(needle + "/" in line or needle + "," in line or needle + " " in line
                   or line.rstrip("\n").endswith(needle) for line in mountinfo)


# --------------------------------------------------------------------------- CLI entry


def main_build(argv: Sequence[str] | None = None) -> int:
    """`kadeploy-testbed image build [--cache DIR] [--only deploy|user] [--prune]`."""
    parser = argparse.ArgumentParser(prog="kadeploy-testbed image build",
                                     description="Build (or find cached) testbed images.")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                        help=f"cache directory (default {DEFAULT_CACHE})")
    parser.add_argument("--only", choices=("deploy", "user", "fsa"),
                        help="build only the deployment rootfs, the user images or the fsa multipart image")
    parser.add_argument("--prune", action="store_true",
                        help="then remove older builds of these images from the cache")
    args = parser.parse_args(argv)
    try:
        if args.only in (None, "deploy"):
            print(f"deployment rootfs: {ensure_deploy_rootfs(args.cache)}")
        if args.only in (None, "user"):
            images = ensure_user_images(args.cache)
            for pack in PACKS:
                image_file = getattr(images, pack.suffix)
                print(f"{pack.env_name}: {image_file} "
                      f"({image_file.stat().st_size / 2**20:.0f} MiB), "
                      f"description {images.descriptions[pack.env_name]}")
        if args.only in (None, "fsa"):
            fsa = ensure_fsa_images(args.cache)
            print(f"{FSA_ENV_NAME}: {fsa.image} ({fsa.image.stat().st_size / 2**20:.0f} MiB), "
                  f"description {fsa.description}")
        if args.prune:
            for old_build in prune_cache(args.cache):
                print(f"removed old build {old_build}")
    except KadeployError as exc:
        print(f"kadeploy-testbed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main_build())
