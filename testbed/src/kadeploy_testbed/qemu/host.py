"""testbed/qemu room: the host side of the QEMU mode — bridge, taps, PXE repository,
dnsmasq (DHCP + TFTP), the HTTP export, /etc/hosts — and its undoing.

Why separate from `kadeploy_testbed.hostsetup`: the netns testbed may be up on
the same machine, so everything here has its own names (`ktq0`, `ktqt<k>`,
`10.202.0.0/16`, the `kadeploy-testbed-qemu` hosts block) and `down` removes
only those. Processes are found again after a crash by their command line,
which always names this testbed's directory.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from kadeploy.errors import ErrorCode, KadeployError
from kadeploy_testbed import hostsetup
from kadeploy_testbed.hostsetup import kill_pid, sh
from kadeploy_testbed.layout import Layout
from kadeploy_testbed.qemu.configdir import PROFILE_LAYOUT
from kadeploy_testbed.qemu.layout import (
    BRIDGE,
    HTTP_PORT,
    NETMASK,
    PREFIX_LEN,
    SERVER_IP,
    TAP_PREFIX,
    disk_path,
    run_dir,
    tap_name,
)

HOSTS_FILE = Path("/etc/hosts")
HOSTS_BEGIN = "# BEGIN qemu-mode kadeploy testbed"
HOSTS_END = "# END qemu-mode kadeploy testbed"
PXELINUX_DIR = Path("/usr/lib/PXELINUX")
SYSLINUX_MODULES = Path("/usr/lib/syslinux/modules/bios")
SYSLINUX_FILES = ("ldlinux.c32", "chain.c32", "libcom32.c32", "libutil.c32", "mboot.c32", "menu.c32")
GRUB_NBP = "boot/grub/i386-pc/core.0"
# GRUB as NBP reads <prefix>/grub.cfg; this one includes the node's profile by IP,
# the file Kadeploy writes for GrubPXE (`grub.cfg/<ip>`).
GRUB_NET_CFG = """set timeout=0
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
configfile (pxe)/grub.cfg/${net_default_ip}
"""
# Paths `up` creates under --dir; `down` removes only these.
CREATED = ("etc", "run", "disks", "tftpboot", "cache", "nodes", "nodes-qemu", "state.json", "kadeploy.db",
           "kadeploy.db-shm", "kadeploy.db-wal", "kadeploy.db-journal",
           "dnsmasq.log", "dnsmasq.leases", "http.log", "redfish.log")


def bridge_exists() -> bool:
    return Path("/sys/class/net", BRIDGE).exists()


def refuse_existing(directory: Path) -> None:
    """`up` never starts over a QEMU testbed: its bridge or state file mean one exists."""
    found = [f"bridge {BRIDGE}"] if bridge_exists() else []
    if (directory / "state.json").exists():
        found.append(f"state file {directory / 'state.json'}")
    if found:
        raise KadeployError(ErrorCode.EXISTING_ELEMENT, f"a QEMU testbed already exists ({'; '.join(found)}): "
                            f"run `kadeploy-testbed --dir {directory} down` first")


def require_tools() -> None:
    """Name the Debian package of any missing tool, before anything is created."""
    needed = {"qemu-system-x86_64": "qemu-system-x86", "dnsmasq": "dnsmasq-base", "ipmitool": "ipmitool",
              "grub-mknetdir": "grub-pc-bin", "socat": "socat", "ipmi_sim": "openipmi"}
    missing = [f"{tool} (package {package})" for tool, package in needed.items() if not shutil.which(tool)]
    if not (PXELINUX_DIR / "pxelinux.0").exists():
        missing.append(f"{PXELINUX_DIR}/pxelinux.0 (package pxelinux)")
    if not (SYSLINUX_MODULES / "chain.c32").exists():
        missing.append(f"{SYSLINUX_MODULES}/chain.c32 (package syslinux-common)")
    if not Path("/usr/lib/ipxe/qemu/pxe-e1000.rom").exists() and not Path("/usr/share/qemu/pxe-e1000.rom").exists():
        missing.append("the e1000 iPXE ROM (package ipxe-qemu)")
    if missing:
        raise KadeployError(ErrorCode.EXECUTE_ERROR, "QEMU mode needs: " + ", ".join(missing))


def create_network(layout: Layout) -> None:
    """Bridge with the server address, the BMC addresses, one tap per VM."""
    batch = [f"link add {BRIDGE} type bridge", f"addr add {SERVER_IP}/{PREFIX_LEN} dev {BRIDGE}",
             f"link set {BRIDGE} up"]
    for node in layout.nodes:
        batch += [f"addr add {node.bmc_ip}/32 dev {BRIDGE}", f"tuntap add dev {tap_name(node)} mode tap",
                  f"link set {tap_name(node)} master {BRIDGE} up"]
    sh(["ip", "-batch", "-"], input="\n".join(batch) + "\n")


def create_disks(directory: Path, layout: Layout, size: str) -> None:
    for node in layout.nodes:
        path = disk_path(directory, node)
        path.parent.mkdir(parents=True, exist_ok=True)
        sh(["truncate", "-s", size, str(path)])
        run_dir(directory, node).mkdir(parents=True, exist_ok=True)


def write_tftpboot(directory: Path) -> Path:
    """The PXE repository: PXELINUX and its modules, GRUB's network directory, profile dirs."""
    root = directory / "tftpboot"
    for sub in ("kernels", "userfiles", *(entry[0] for entry in PROFILE_LAYOUT.values())):
        (root / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy(PXELINUX_DIR / "pxelinux.0", root / "pxelinux.0")
    for name in SYSLINUX_FILES:
        shutil.copy(SYSLINUX_MODULES / name, root / name)
    sh(["grub-mknetdir", f"--net-directory={root}", "--subdir=boot/grub", "--modules=pxe tftp http"],
       timeout=120)
    (root / "boot/grub/grub.cfg").write_text(GRUB_NET_CFG)
    return root


def boot_file(method: str, ip: str) -> str:
    """The DHCP boot file a node gets for the `pxe/dhcp` method."""
    if method == "PXElinux":
        return "pxelinux.0"
    if method == "GrubPXE":
        return GRUB_NBP
    directory = PROFILE_LAYOUT["IPXE"][0]
    return f"http://{SERVER_IP}:{HTTP_PORT}/{directory}/{ip}"


def dnsmasq_command(directory: Path, layout: Layout, method: str) -> list[str]:
    """DHCP (one fixed address per MAC, the method's boot file) and TFTP, on the bridge only."""
    argv = ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", f"--interface={BRIDGE}",
            "--bind-interfaces", "--except-interface=lo", "--port=0",
            f"--dhcp-range={SERVER_IP},static,{NETMASK},12h", f"--dhcp-option=option:router,{SERVER_IP}",
            f"--dhcp-leasefile={directory / 'dnsmasq.leases'}", "--dhcp-authoritative", "--log-dhcp",
            f"--log-facility={directory / 'dnsmasq.log'}", "--enable-tftp", f"--tftp-root={directory / 'tftpboot'}",
            f"--pid-file={directory / 'run' / 'dnsmasq.pid'}"]
    for node in layout.nodes:
        tag = f"node{node.index}"
        argv += [f"--dhcp-host={node.mac},set:{tag},{node.ip},{node.short_name}",
                 f"--dhcp-boot=tag:{tag},{boot_file(method, node.ip)},,{SERVER_IP}"]
    return argv


def _spawn(argv: list[str], log: Path) -> int:
    handle = log.open("ab")
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=handle, stderr=handle,
                                start_new_session=True)
    finally:
        handle.close()
    time.sleep(0.3)
    if proc.poll() is not None:
        tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
        raise KadeployError(ErrorCode.EXECUTE_ERROR, f"{argv[0]} exited at once (see {log}): {tail}")
    return proc.pid


def start_dnsmasq(directory: Path, layout: Layout, method: str) -> int:
    return _spawn(dnsmasq_command(directory, layout, method), directory / "dnsmasq.log")


def start_http(directory: Path) -> int:
    """The PXE repository over HTTP for iPXE (and GRUB http), on the bridge address only."""
    return _spawn([sys.executable, "-m", "http.server", "--bind", SERVER_IP, "--directory",
                   str(directory / "tftpboot"), str(HTTP_PORT)], directory / "http.log")


def write_hosts_block(layout: Layout, hosts_file: Path = HOSTS_FILE) -> None:
    entries = []
    for node in layout.nodes:
        entries.append(f"{node.ip}\t{node.hostname} {node.short_name}.{node.cluster}")
        entries.append(f"{node.bmc_ip}\t{node.bmc_hostname} {node.short_name}-bmc.{node.cluster}")
    hostsetup.write_hosts_entries(entries, HOSTS_BEGIN, HOSTS_END, hosts_file)


def remove_hosts_block(hosts_file: Path = HOSTS_FILE) -> None:
    hostsetup.remove_hosts_block(hosts_file, HOSTS_BEGIN, HOSTS_END)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def our_processes(directory: Path) -> list[int]:
    """Redfish service, BMC, QEMU, dnsmasq and HTTP processes of this testbed, found by their command line.

    The Redfish service and the BMCs come first: once they are gone nothing can power a VM on
    during the teardown."""
    marker = str(directory) + "/"
    kinds = ("kadeploy_testbed.qemu.redfishbmc", "ipmi_sim", "qemu-system-x86_64", "dnsmasq", "http.server")
    found: list[tuple[int, int]] = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            cmd = _cmdline(int(entry.name))
            rank = next((rank for rank, kind in enumerate(kinds) if kind in cmd), None)
            if marker in cmd and rank is not None:
                found.append((rank, int(entry.name)))
    return [pid for _, pid in sorted(found)]


def teardown(directory: Path, pids: list[int]) -> list[str]:
    """Stop what `up` started, delete bridge and taps, the hosts block and the created files."""
    removed: list[str] = []
    for pid in [*pids, *our_processes(directory)]:
        if _cmdline(pid) and str(directory) in _cmdline(pid):
            kill_pid(pid, str(directory), grace=3.0)
            removed.append(f"process {pid}")
    for link in Path("/sys/class/net").iterdir():
        if re.fullmatch(rf"{TAP_PREFIX}\d+", link.name):
            sh(["ip", "link", "delete", link.name], check=False)
            removed.append(f"tap {link.name}")
    if bridge_exists():
        sh(["ip", "link", "delete", BRIDGE], check=False)
        removed.append(f"bridge {BRIDGE}")
    remove_hosts_block()
    for name in CREATED:
        path = directory / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists() or path.is_symlink():
            path.unlink()
    try:
        directory.rmdir()
    except OSError:
        pass
    return removed
