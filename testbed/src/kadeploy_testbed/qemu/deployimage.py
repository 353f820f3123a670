"""testbed/qemu room: the deployment kernel and initramfs the QEMU nodes PXE-boot.

Why: in QEMU mode the firmware is real, so the deployment environment must be
a real kernel + initramfs, built the way Kadeploy's debirf environments are:
the whole deployment rootfs (sshd, python3, parted, e2fsprogs, tar and the
decompressors, kexec-tools) plus a kernel, GRUB (i386-pc, for install_bootloader)
and busybox's udhcpc, packed as one cpio archive that runs in RAM. Its /init
loads the disk, NIC and filesystem drivers, configures the NIC by DHCP, starts
sshd and keeps the marker port 25300 open (reference 6.2).

The build is cached by content under `<cache>/deploy-kernel-<hash>/` (vmlinuz,
initrd.img). The deploy key is not in the cached archive: `install_deploy_kernel`
appends a second, tiny cpio segment holding /init, its helpers and
`/root/.ssh/authorized_keys`, which the kernel unpacks over the first
(initramfs buffer format).

Imports `kadeploy_testbed.images` (its cache helpers) and the standard library.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from kadeploy.errors import ErrorCode, KadeployError
from kadeploy_testbed import images
from kadeploy_testbed.images import BuildLog

# Bump when the steps below change in a way the constants do not show.
RECIPE_VERSION = 5

EXTRA_PACKAGES = ("linux-image-amd64", "grub-pc-bin", "grub2-common", "busybox")

# Drivers the VM needs (IDE disk, e1000 NIC, virtio) and the filesystems Kadeploy
# formats; everything else in /lib/modules is dropped to keep the archive small.
MODULES = (
    "ata_piix", "ata_generic", "sd_mod", "virtio_pci", "virtio_blk", "virtio_net", "e1000",
    "ext4", "xfs", "vfat", "nls_cp437", "nls_iso8859-1", "loop", "crc32c_generic",
)

INIT_SCRIPT = r"""#!/bin/sh
# kadeploy-testbed deployment environment: the whole rootfs runs from RAM (debirf-style).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mkdir -p /proc /sys /dev /run /tmp /mnt/dest /rambin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /dev/shm
chmod 1777 /tmp
echo "kadeploy-deploy-env: loading drivers" > /dev/console
for module in @MODULES@; do modprobe -q "$module" 2>/dev/null; done
ip link set lo up
iface=""
tries=0
while [ -z "$iface" ] && [ "$tries" -lt 100 ]; do
  for path in /sys/class/net/*; do
    name=${path##*/}
    case "$name" in lo|sit*|tunl*) ;; *) iface=$name; break ;; esac
  done
  [ -n "$iface" ] || { tries=$((tries + 1)); sleep 0.1; }
done
echo "kadeploy-deploy-env: DHCP on $iface" > /dev/console
ip link set "$iface" up
until busybox udhcpc -i "$iface" -s /usr/local/sbin/kadeploy-udhcpc -t 5 -T 2 -n -q; do sleep 1; done
mkdir -p /run/sshd /root/.ssh
chmod 700 /root/.ssh
/usr/sbin/sshd -E /run/sshd.log
echo "kadeploy-deploy-env: ready ($(ip -4 -o addr show dev "$iface" | awk '{print $4}'))" > /dev/console
exec /usr/bin/python3 /usr/local/sbin/kadeploy-init
"""

UDHCPC_SCRIPT = r"""#!/bin/sh
# busybox udhcpc hook: apply the lease (address, route, hostname).
case "$1" in
  deconfig) busybox ifconfig "$interface" 0.0.0.0 ;;
  bound|renew)
    busybox ifconfig "$interface" "$ip" netmask "${subnet:-255.255.0.0}"
    for gw in $router; do ip route replace default via "$gw" dev "$interface"; break; done
    [ -n "$hostname" ] && hostname "$hostname"
    : > /etc/resolv.conf
    for ns in $dns; do echo "nameserver $ns" >> /etc/resolv.conf; done
    ;;
esac
exit 0
"""

# PID 1 after /init: reaps orphans, keeps the marker port open, and switches root on request.
# BootNewEnvPivotRoot writes the deployed root's mount point into the FIFO
# /run/kadeploy/pivot-root (kadeploy.steps.commands.PIVOT_HOOK); only PID 1 may
# switch_root, so the deployment environment's init does it, as an initramfs does:
# stop every other process (sshd, the marker port), detach the mounts the new system
# does not inherit, then exec util-linux's switch_root, which moves /dev /proc /sys
# /run into the new root, frees this RAM root and execs the deployed system's init.
INIT_PROCESS = r'''"""PID 1 of the deployment environment: marker port 25300, zombie reaping, switch-root hook."""
import os
import select
import signal
import socket
import subprocess
import time

HOOK = "/run/kadeploy/pivot-root"
SWITCH_ROOT = "/usr/sbin/switch_root"
INHERITED = ("/", "/dev", "/proc", "/sys", "/run")


def say(text):
    try:
        with open("/dev/console", "w") as console:
            console.write(f"kadeploy-deploy-env: {text}\n")
    except OSError:
        pass


def reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def stop_everything_else():
    # kill(-1) reaches every process but PID 1 itself
    for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 2.0)):
        try:
            os.kill(-1, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                break
            except InterruptedError:
                pass


def detach_other_mounts(newroot):
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1].replace("\\040", " ") for line in mounts]
    for point in reversed(points):
        inherited = point in INHERITED or any(point.startswith(top + "/") for top in INHERITED[1:])
        if not (inherited or point == newroot or point.startswith(newroot + "/")):
            subprocess.run(["umount", "-l", point], check=False, timeout=30)


def switch_root(newroot, server):
    if not (newroot.startswith("/") and os.path.ismount(newroot) and os.access(SWITCH_ROOT, os.X_OK)):
        say(f"switch-root request refused: {newroot!r} is not a mount point or {SWITCH_ROOT} is missing")
        return
    say(f"switching root to {newroot} and starting its /sbin/init (no reboot)")
    server.close()
    stop_everything_else()
    detach_other_mounts(newroot)
    os.sync()
    try:
        os.execv(SWITCH_ROOT, ["switch_root", newroot, "/sbin/init"])
    except OSError as error:
        say(f"switch_root failed: {error}; the node stays without network service")
        while True:  # PID 1 must not exit (kernel panic): Kadeploy's wait times out and says so
            time.sleep(3600)


signal.signal(signal.SIGCHLD, lambda *_: None)
os.makedirs(os.path.dirname(HOOK), exist_ok=True)
if not os.path.exists(HOOK):
    os.mkfifo(HOOK, 0o600)
# read and write: the FIFO never reports end-of-file between two writers
hook = os.open(HOOK, os.O_RDWR | os.O_NONBLOCK)
server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("0.0.0.0", 25300))
server.listen(64)
pending = b""
while True:
    try:
        ready, _, _ = select.select([server, hook], [], [], 5.0)
        if server in ready:
            connection, _ = server.accept()
            connection.close()
        if hook in ready:
            pending += os.read(hook, 4096)
            if b"\n" in pending:
                line, _, pending = pending.partition(b"\n")
                switch_root(line.decode(errors="replace").strip(), server)
    except InterruptedError:
        pass
    except OSError:
        pass
    reap()
'''

# No init system in RAM: `reboot -f` and `poweroff` act on the kernel directly;
# a loaded kexec kernel is executed, as Debian's kexec init script would.
# No init system in RAM: `reboot -f` and `poweroff` act on the kernel directly, a
# second later and detached, so that the ssh command asking for it exits 0 as it
# does on a real system; a loaded kexec kernel is executed, as Debian's kexec
# init script would.
REBOOT_SCRIPT = r"""#!/bin/sh
sync
if [ "$(cat /sys/kernel/kexec_loaded 2>/dev/null)" = 1 ]; then
  nohup /bin/sh -c 'sleep 1; sync; kexec -e' </dev/null >/dev/null 2>&1 &
else
  nohup /bin/sh -c 'sleep 1; sync; echo b > /proc/sysrq-trigger' </dev/null >/dev/null 2>&1 &
fi
exit 0
"""

POWEROFF_SCRIPT = r"""#!/bin/sh
sync
nohup /bin/sh -c 'sleep 1; sync; echo o > /proc/sysrq-trigger' </dev/null >/dev/null 2>&1 &
exit 0
"""


@dataclass(frozen=True)
class DeployKernel:
    """A built deployment kernel and its initramfs (without the deploy key)."""

    directory: Path
    vmlinuz: Path
    initrd: Path


def recipe_digest(base_rootfs: Path) -> str:
    """Content hash of what decides the cached archive: base rootfs, packages, modules (not the scripts)."""
    payload = "\n".join([base_rootfs.resolve().name, str(RECIPE_VERSION), *EXTRA_PACKAGES, *MODULES])
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def _write_executable(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)


def _install_packages(rootfs: Path, log: BuildLog) -> None:
    """apt-get install the kernel, GRUB and busybox inside the copy (proc/dev bound meanwhile)."""
    resolv = rootfs / "etc/resolv.conf"
    resolv.unlink(missing_ok=True)
    shutil.copy("/etc/resolv.conf", resolv)
    root = shlex.quote(str(rootfs))
    try:
        log.shell(f"mount -t proc proc {root}/proc && mount --bind /dev {root}/dev && "
                  f"mount --bind /sys {root}/sys")
        log.run(["chroot", str(rootfs), "apt-get", "update"], timeout=600)
        log.run(["chroot", str(rootfs), "apt-get", "install", "-y", "--no-install-recommends",
                 *EXTRA_PACKAGES], timeout=1200)
    finally:
        images._unmount_below(rootfs)
        resolv.write_text("")


def _keep_modules(rootfs: Path, log: BuildLog) -> str:
    """Keep only MODULES and their dependencies; returns the kernel version."""
    versions = sorted(p.name for p in (rootfs / "usr/lib/modules").iterdir() if (p / "kernel").is_dir())
    if not versions:
        raise KadeployError(ErrorCode.EXECUTE_ERROR, f"deploy kernel build: no kernel modules in {rootfs} "
                            f"(log: {log.path})")
    version = versions[-1]
    modules_dir = rootfs / "usr/lib/modules" / version
    keep: set[str] = set()
    for module in MODULES:
        listing = subprocess.run(
            ["chroot", str(rootfs), "modprobe", "-S", version, "--show-depends", module],
            capture_output=True, text=True, timeout=60, check=False)
        for line in listing.stdout.splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] == "insmod":
                keep.add(os.path.basename(words[1]))
    log.note(f"keeping modules: {' '.join(sorted(keep))}")
    for path in list(modules_dir.rglob("*.ko*")):
        if path.name not in keep:
            path.unlink()
    log.run(["chroot", str(rootfs), "depmod", "-a", version])
    return version


def _strip(rootfs: Path) -> None:
    """What the RAM rootfs does not need: /boot, apt lists, caches, firmware, udev's hwdb, ICU."""
    for relative in ("boot", "var/lib/apt/lists", "var/cache/apt", "usr/lib/firmware", "usr/share/doc",
                     "usr/share/man", "usr/share/locale", "usr/share/grub/themes", "var/log"):
        path = rootfs / relative
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
            path.mkdir(parents=True)
    # Large and unused in RAM: udev's hardware database (no udevd runs), glibc's iconv
    # modules, and ICU, which only xfs_scrub links (xfs_scrub goes with it).
    for relative in ("usr/lib/udev/hwdb.bin", "usr/lib/udev/hwdb.d", "usr/lib/x86_64-linux-gnu/gconv",
                     "usr/sbin/xfs_scrub", "usr/sbin/xfs_scrub_all"):
        path = rootfs / relative
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    for library in (rootfs / "usr/lib/x86_64-linux-gnu").glob("libicu*"):
        library.unlink()
    # __pycache__ stays: under emulation, compiling the stdlib at each import makes the
    # broadcast relay miss its 30 s start-up deadline.
    # update-initramfs is useless in RAM; grub-efi modules are absent anyway.
    for grub_dir in (rootfs / "usr/lib/grub").glob("*"):
        if grub_dir.name != "i386-pc":
            shutil.rmtree(grub_dir, ignore_errors=True)


def _build(base: Path):  # type: ignore[no-untyped-def]
    def build(work: Path, log: BuildLog) -> None:
        rootfs = work / "rootfs"
        log.run(["cp", "-a", f"{base.resolve()}/.", f"{rootfs}/"], timeout=600)
        _install_packages(rootfs, log)
        kernels = sorted((rootfs / "boot").glob("vmlinuz-*"))
        if not kernels:
            raise KadeployError(ErrorCode.EXECUTE_ERROR, f"deploy kernel build: no /boot/vmlinuz-* "
                                f"after installing linux-image-amd64 (log: {log.path})")
        shutil.copy(kernels[-1], work / "vmlinuz")
        _keep_modules(rootfs, log)
        _strip(rootfs)
        # zstd: the kernel unpacks it several times faster than gzip under emulation.
        log.shell(f"cd {shlex.quote(str(rootfs))} && find . -xdev -print0 | "
                  f"cpio --null -o -H newc --quiet | zstd -T0 -19 -q > ../initrd.img", timeout=1200)
        images._remove_tree(rootfs)
    return build


def ensure_deploy_kernel(cache: Path = images.DEFAULT_CACHE) -> DeployKernel:
    """The cached deployment kernel + initramfs, built from the deployment rootfs if absent."""
    base = images.ensure_deploy_rootfs(cache)
    digest = recipe_digest(base)
    directory = images._build_cached(Path(cache), "deploy-kernel", digest, _build(base))
    return DeployKernel(directory=directory, vmlinuz=directory / "vmlinuz", initrd=directory / "initrd.img")


def _cpio_newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A newc cpio archive of (path, mode, content) entries, parents listed before children."""
    out = io.BytesIO()
    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        encoded = name.encode() + b"\0"
        nlink = 2 if mode & 0o040000 else 1
        fields = (0 if name == "TRAILER!!!" else ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
        header = ("070701" + "".join(f"{value:08X}" for value in fields)).encode()
        out.write(header + encoded)
        out.write(b"\0" * (-(len(header) + len(encoded)) % 4))
        out.write(data)
        out.write(b"\0" * (-len(data) % 4))
    out.write(b"\0" * (-out.tell() % 512))
    return out.getvalue()


def boot_segment(public_key: str) -> bytes:
    """The gzip'd cpio segment appended to the cached archive: /init, its helpers, the deploy key.

    Why a separate segment: the kernel unpacks segments in order, each file
    replacing the previous one, so the boot scripts and the key change without
    rebuilding (or re-hashing) the large cached archive.
    """
    directory, executable = 0o040755, 0o100755
    entries = [
        ("init", executable, INIT_SCRIPT.replace("@MODULES@", " ".join(MODULES)).encode()),
        ("usr", directory, b""), ("usr/sbin", directory, b""), ("usr/local", directory, b""),
        ("usr/local/sbin", directory, b""),
        ("usr/local/sbin/kadeploy-udhcpc", executable, UDHCPC_SCRIPT.encode()),
        ("usr/local/sbin/kadeploy-init", executable, INIT_PROCESS.encode()),
        # /sbin is /usr/sbin (merged /usr): Kadeploy calls /sbin/reboot -f by its full path.
        ("usr/sbin/reboot", executable, REBOOT_SCRIPT.encode()),
        ("usr/sbin/halt", executable, REBOOT_SCRIPT.encode()),
        ("usr/sbin/poweroff", executable, POWEROFF_SCRIPT.encode()),
        ("root", 0o040700, b""), ("root/.ssh", 0o040700, b""),
        ("root/.ssh/authorized_keys", 0o100600, public_key.encode()),
    ]
    return gzip.compress(_cpio_newc(entries), mtime=0)


def install_deploy_kernel(kernel: DeployKernel, vmlinuz: Path, initrd: Path, public_key: str) -> None:
    """Copy the kernel and the initramfs (plus the key segment) where the cluster file points."""
    vmlinuz.parent.mkdir(parents=True, exist_ok=True)
    initrd.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(kernel.vmlinuz, vmlinuz)
    with initrd.open("wb") as out, kernel.initrd.open("rb") as base:
        shutil.copyfileobj(base, out, 1 << 20)
        out.write(boot_segment(public_key))
    vmlinuz.chmod(0o644)
    initrd.chmod(0o644)
