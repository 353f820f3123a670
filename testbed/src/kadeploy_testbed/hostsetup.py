"""testbed room: the host side — bridge, namespaces, veths, disks, /etc/hosts, TFTP — and its undoing.

Why in one module: `up` and `down` are mirror images, and `down` must work
after a crash, so it finds resources both from the state file and by scanning
the system for what only the testbed names that way (`ktb0`, `ktb-*`, loop
devices over `<dir>/disks`, mounts under `<dir>`, the marked hosts block).
Plain synchronous code: it runs in the CLI, before and after the daemon.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from kadeploy.errors import ErrorCode, KadeployError
from kadeploy_testbed.layout import BRIDGE, NETNS_PREFIX, PREFIX_LEN, SERVER_IP, VLANS, Layout, bridge_mac
from kadeploy_testbed.state import TestbedState, node_run_dir

HOSTS_FILE = Path("/etc/hosts")
HOSTS_BEGIN = "# BEGIN kadeploy-testbed"
HOSTS_END = "# END kadeploy-testbed"
TIMEOUT = 60.0
# Paths `up` creates under --dir; `down` removes only these, never the whole --dir.
CREATED = ("etc", "run", "disks", "tftpboot", "cache", "nodes", "state.json", "kadeploy.db",
           "daemon.log", "tftpd.log")


def sh(argv: Sequence[str], *, input: str | None = None, check: bool = True, timeout: float = TIMEOUT) -> str:
    """Run a host command; failures become KadeployError naming the command and its stderr."""
    try:
        done = subprocess.run(list(argv), input=input, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KadeployError(ErrorCode.EXECUTE_ERROR, f"{' '.join(argv)}: {exc}") from None
    if check and done.returncode != 0:
        raise KadeployError(ErrorCode.EXECUTE_ERROR,
                            f"{' '.join(argv[:6])}: exit {done.returncode}: {done.stderr.strip()[:500]}")
    return done.stdout


def existing_netns() -> list[str]:
    out = sh(["ip", "-j", "netns", "list"], check=False) or "[]"
    try:
        return [entry["name"] for entry in json.loads(out) if entry["name"].startswith(NETNS_PREFIX)]
    except (ValueError, KeyError, TypeError):
        return [line.split()[0] for line in out.splitlines() if line.startswith(NETNS_PREFIX)]


def bridge_exists() -> bool:
    return Path("/sys/class/net", BRIDGE).exists()


def refuse_existing(directory: Path) -> None:
    """`up` never starts over a testbed: bridge, namespaces or a state file mean one exists."""
    found = []
    if bridge_exists():
        found.append(f"bridge {BRIDGE}")
    namespaces = existing_netns()
    if namespaces:
        found.append(f"namespaces {', '.join(namespaces[:5])}{'...' if len(namespaces) > 5 else ''}")
    if (directory / "state.json").exists():
        found.append(f"state file {directory / 'state.json'}")
    if found:
        raise KadeployError(ErrorCode.EXISTING_ELEMENT,
                            f"a testbed already exists ({'; '.join(found)}): run `kadeploy-testbed down` first")


def create_network(layout: Layout) -> None:
    """Bridge, BMC addresses, one netns + veth per node."""
    host_batch = [
        f"link add {BRIDGE} address {bridge_mac()} type bridge",
        f"addr add {SERVER_IP}/{PREFIX_LEN} dev {BRIDGE}",
        f"link set {BRIDGE} up",
    ]
    for node in layout.nodes:
        host_batch += [
            f"netns add {node.netns}",
            f"link add {node.host_veth} type veth peer name eth0 netns {node.netns}",
            f"link set {node.host_veth} master {BRIDGE} up",
            f"addr add {node.bmc_ip}/32 dev {BRIDGE}",
        ]
    sh(["ip", "-batch", "-"], input="\n".join(host_batch) + "\n")
    for node in layout.nodes:
        sh(["ip", "-n", node.netns, "-batch", "-"], input="\n".join([
            "link set lo up",
            f"link set eth0 address {node.mac}",
            f"addr add {node.ip}/{PREFIX_LEN} dev eth0",
            f"route add default via {SERVER_IP}",
        ]) + "\n", check=False)


def attach_disk(state: TestbedState, index: str, path: Path) -> str:
    """Sparse file + loop device with partition scanning (the node's /dev/sda)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sh(["truncate", "-s", state.disk_size, str(path)])
    device = sh(["losetup", "--find", "--partscan", "--show", str(path)]).strip()
    state.loops[index] = device
    return device


def write_hosts_block(layout: Layout, hosts_file: Path = HOSTS_FILE) -> None:
    """The site's names: each node, its BMC, and its names in every VLAN (what a site's DNS holds)."""
    entries = []
    for node in layout.nodes:
        entries.append(f"{node.ip}\t{node.hostname} {node.short_name}")
        entries.append(f"{node.bmc_ip}\t{node.bmc_hostname} {node.short_name}-bmc")
        entries.append(f"{node.vlan_ip}\t{' '.join(node.vlan_hostname(vlan) for vlan in VLANS)}")
    write_hosts_entries(entries, hosts_file=hosts_file)


def write_hosts_entries(entries: list[str], begin: str = HOSTS_BEGIN, end: str = HOSTS_END,
                        hosts_file: Path = HOSTS_FILE) -> None:
    """Replace the block between the `begin` and `end` marker lines of /etc/hosts by `entries`."""
    text = remove_hosts_text(hosts_file.read_text() if hosts_file.exists() else "", begin, end)
    hosts_file.write_text(text.rstrip("\n") + "\n" + "\n".join([begin, *entries, end]) + "\n")


def remove_hosts_text(text: str, begin: str = HOSTS_BEGIN, end: str = HOSTS_END) -> str:
    # whole lines only: other tools' blocks whose markers merely start alike are left alone
    return re.sub(rf"(?m)\n?^{re.escape(begin)}$.*?^{re.escape(end)}$\n?", "\n", text, flags=re.DOTALL)


def remove_hosts_block(hosts_file: Path = HOSTS_FILE, begin: str = HOSTS_BEGIN, end: str = HOSTS_END) -> None:
    if hosts_file.exists():
        text = hosts_file.read_text()
        if begin in text:
            hosts_file.write_text(remove_hosts_text(text, begin, end).lstrip("\n"))


def start_tftpd(directory: Path) -> int:
    """tftpd-hpa in the foreground on the server address, serving `<dir>/tftpboot`."""
    log = open(directory / "tftpd.log", "ab")
    try:
        proc = subprocess.Popen(["in.tftpd", "--foreground", "--secure", "--verbose", "--address", f"{SERVER_IP}:69",
                                 str(directory / "tftpboot")],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    finally:
        log.close()
    time.sleep(0.2)
    if proc.poll() is not None:
        raise KadeployError(ErrorCode.EXECUTE_ERROR, f"in.tftpd exited at once (see {directory / 'tftpd.log'})")
    return proc.pid


# --- down ---------------------------------------------------------------------------------

def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def kill_pid(pid: int | None, must_contain: str, grace: float = 3.0) -> None:
    """TERM then KILL `pid`, only if it still is the process we started (cmdline check)."""
    if not pid or must_contain not in _cmdline(pid):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and must_contain in _cmdline(pid):
        time.sleep(0.1)
    if must_contain in _cmdline(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def our_processes(directory: Path) -> list[int]:
    """Daemon and tftpd processes of this testbed, found by command line (after a crash)."""
    markers = (f"kadeploy_testbed.daemon --dir {directory}", f"in.tftpd --foreground --secure --verbose --address {SERVER_IP}:69 {directory}/tftpboot")
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            cmd = _cmdline(int(entry.name))
            if any(marker in cmd for marker in markers):
                found.append(int(entry.name))
    return found


def netns_pids(netns: str) -> list[int]:
    out = sh(["ip", "netns", "pids", netns], check=False)
    return [int(word) for word in out.split() if word.isdigit()]


def mounts_under(directory: Path) -> list[str]:
    prefix = str(directory.resolve()).rstrip("/") + "/"
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point.startswith(prefix):
            points.append(point)
    return points


def loops_under(directory: Path) -> list[str]:
    """Loop devices whose backing file is in `<dir>/disks` (even if the file was deleted)."""
    out = sh(["losetup", "--list", "--json", "--output", "NAME,BACK-FILE"], check=False) or "{}"
    try:
        entries = json.loads(out).get("loopdevices", [])
    except ValueError:
        return []
    disks = str((directory / "disks").resolve()) + "/"
    return [entry["name"] for entry in entries if (entry.get("back-file") or "").startswith(disks)]


def teardown(directory: Path, state: TestbedState | None) -> list[str]:
    """Remove everything a testbed in `directory` made; returns what it removed (for the user)."""
    removed: list[str] = []
    if state is not None:
        kill_pid(state.daemon_pid, "kadeploy_testbed.daemon")
        kill_pid(state.tftpd_pid, "in.tftpd")
    for pid in our_processes(directory):
        kill_pid(pid, str(directory), grace=1.0)
        removed.append(f"process {pid}")
    for netns in existing_netns():
        for attempt in range(20):
            pids = netns_pids(netns)
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        sh(["ip", "netns", "delete", netns], check=False)
        removed.append(f"netns {netns}")
    for point in sorted(mounts_under(directory), key=len, reverse=True):
        sh(["umount", "-l", point], check=False)
        removed.append(f"mount {point}")
    if bridge_exists():
        sh(["ip", "link", "delete", BRIDGE], check=False)
        removed.append(f"bridge {BRIDGE}")
    for link in Path("/sys/class/net").iterdir():
        if re.fullmatch(r"ktbv\d+|ktb0v\d+", link.name):
            sh(["ip", "link", "delete", link.name], check=False)
            removed.append(f"link {link.name}")
    for device in loops_under(directory):
        sh(["losetup", "--detach", device], check=False)
        removed.append(f"loop {device}")
    remove_hosts_block()
    for name in CREATED:
        path = directory / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists() or path.is_symlink():
            path.unlink()
    for extra in directory.glob("nodes-*"):
        extra.unlink()
    try:
        directory.rmdir()
    except OSError:
        pass
    return removed


def prepare_node_dirs(directory: Path, layout: Layout, wrapper: Path) -> None:
    """Per-node run dirs: mnt/ (the node's root mounts, private), ctl/ (fifo, wrappers, kexec)."""
    for node in layout.nodes:
        run = node_run_dir(directory, node)
        (run / "mnt").mkdir(parents=True, exist_ok=True)
        (run / "ctl").mkdir(exist_ok=True)
        if not (run / "ctl" / "ctl").exists():
            os.mkfifo(run / "ctl" / "ctl", 0o600)
        shutil.copy(wrapper, run / "ctl" / "wrapper")
        (run / "ctl" / "wrapper").chmod(0o755)
        (run / "console.log").touch()

