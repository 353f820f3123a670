"""A small lab of real sshd "nodes", each in its own network namespace (root only).

Used by the remote and broadcast integration tests and by the benchmarks.
Layout: bridge `kbtbr0` (10.201.0.1/23 on the host), namespaces `kbt-<i>` with
veth `kbtv<i>` and address 10.201.0.<10+i> for the first 240 nodes, then
10.201.1.<10+i-240> (up to 480 nodes; one /23, so every node reaches every
other without routing, as the tree mode's agents need), one `sshd -D` per
namespace with a generated host key and a generated client key in its
authorized_keys. Node files (sinks) live under the host filesystem in
`<workdir>/node-<i>/`.
Everything is removed by `teardown()`; only processes started here are killed.

The nodes share the host's filesystem, and bash sources root's ~/.bashrc for
every command sshd runs: each sshd runs in its own mount namespace (`ip netns
exec` makes one) with that file hidden behind an empty one, so that a node
command costs what it costs on a real node, not the host's shell set-up
(pyenv init there: ~170 ms of CPU per command, 20 CPU-seconds per command on
128 nodes sharing 2 cores, which drowned every tool in the benchmarks).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BRIDGE = "kbtbr0"
HOST_ADDRESS = "10.201.0.1"
#: 10.201.0.0/23: node i is 10.201.0.<10+i> up to NODES_PER_BLOCK, then 10.201.1.<10+i-NODES_PER_BLOCK>
PREFIX_LENGTH = 23
NODES_PER_BLOCK = 240
MAX_NODES = 2 * NODES_PER_BLOCK
#: the pid of the process whose lab holds the bridge: a second run (a benchmark beside CI) must not tear it down
OWNER_FILE = Path("/run/kadeploy-sshlab.owner")
#: the host's queue of received packets (per CPU), which every node's veth shares: see SshLab.fit_host
BACKLOG_SYSCTL = Path("/proc/sys/net/core/netdev_max_backlog")
#: the ARP table's garbage-collection thresholds: one table for every namespace (see SshLab.fit_host)
NEIGHBOUR_SYSCTLS = tuple(Path(f"/proc/sys/net/ipv4/neigh/default/gc_thresh{level}") for level in (1, 2, 3))
#: what a tree agent's command line holds (the first line of remote/agent.py's docstring)
TREE_AGENT_MARK = "Tree-mode agent: runs ON A NODE"


def node_address(index: int) -> str:
    """Node `index`'s address (1-based): the first 240 where they always were, the next 240 in 10.201.1.0/24."""
    if not 1 <= index <= MAX_NODES:
        raise ValueError(f"at most {MAX_NODES} nodes on 10.201.0.0/{PREFIX_LENGTH}")
    block, offset = divmod(index - 1, NODES_PER_BLOCK)
    return f"10.201.{block}.{11 + offset}"


def _sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=check, capture_output=True, text=True, timeout=30)


@dataclass
class SshNode:
    index: int
    hostname: str
    address: str
    namespace: str
    directory: Path
    sshd: subprocess.Popen[bytes] | None = None

    def pids(self) -> list[int]:
        """Every process in this node's namespace (what `ip netns pids` reports)."""
        out = _sh("ip", "netns", "pids", self.namespace, check=False).stdout
        return [int(pid) for pid in out.split()]

    def pids_matching(self, text: str) -> list[int]:
        """Processes of this node whose command line contains `text`."""
        found = []
        for pid in self.pids():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                found.append(pid)
        return found

    def tree_agent_pids(self) -> list[int]:
        """The node's executor tree agents: python3 processes running remote/agent.py's source (its ssh
        children carry the source too, in their command line, and are not counted)."""
        found = []
        for pid in self.pids_matching(TREE_AGENT_MARK):
            try:
                argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            if argv0.endswith(b"python3"):
                found.append(pid)
        return found


@dataclass
class SshLab:
    """N sshd nodes in namespaces; create with `SshLab.create(n)`."""

    workdir: Path
    private_key: Path
    nodes: list[SshNode] = field(default_factory=list)
    #: the host settings this lab raised and their values before (fit_host), put back by teardown()
    saved_host_settings: dict[Path, str] = field(default_factory=dict)

    @classmethod
    def create(cls, count: int, workdir: Path | None = None) -> SshLab:
        if count > MAX_NODES:
            raise ValueError(f"at most {MAX_NODES} nodes on 10.201.0.0/{PREFIX_LENGTH}")
        cleanup_stale()
        OWNER_FILE.write_text(f"{os.getpid()}\n")
        workdir = Path(workdir or tempfile.mkdtemp(prefix="kbt-lab-"))
        keys = workdir / "keys"
        keys.mkdir(parents=True, exist_ok=True)
        _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / "host_ed25519"))
        _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / "id_deploy"))
        shutil.copy(keys / "id_deploy.pub", keys / "authorized_keys")
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        lab = cls(workdir=workdir, private_key=keys / "id_deploy")
        _sh("ip", "link", "add", BRIDGE, "type", "bridge")
        _sh("ip", "addr", "add", f"{HOST_ADDRESS}/{PREFIX_LENGTH}", "dev", BRIDGE)
        _sh("ip", "link", "set", BRIDGE, "up")
        try:
            lab.fit_host(count)
            for index in range(1, count + 1):
                lab.nodes.append(lab._add_node(index))
            for node in lab.nodes:
                lab.start_sshd(node)
            for node in lab.nodes:
                lab.wait_port(node)
        except BaseException:
            lab.teardown()
            raise
        return lab

    def _add_node(self, index: int) -> SshNode:
        namespace = f"kbt-{index}"
        veth = f"kbtv{index}"
        address = node_address(index)
        directory = self.workdir / f"node-{index}"
        directory.mkdir(exist_ok=True)
        _sh("ip", "netns", "add", namespace)
        _sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", namespace)
        _sh("ip", "link", "set", veth, "master", BRIDGE)
        _sh("ip", "link", "set", veth, "up")
        _sh("ip", "-n", namespace, "addr", "add", f"{address}/{PREFIX_LENGTH}", "dev", "eth0")
        _sh("ip", "-n", namespace, "link", "set", "eth0", "up")
        _sh("ip", "-n", namespace, "link", "set", "lo", "up")
        keys = self.workdir / "keys"
        (directory / "sshd_config").write_text(
            f"ListenAddress {address}\nPort 22\nHostKey {keys / 'host_ed25519'}\n"
            f"AuthorizedKeysFile {keys / 'authorized_keys'}\nPermitRootLogin yes\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
            "PidFile none\nMaxStartups 1000:30:1000\nMaxSessions 64\nUseDNS no\nLogLevel ERROR\n"
            # the nodes share the host filesystem: each one learns its own directory
            f"SetEnv KBT_NODE_DIR={directory}\n"
        )
        return SshNode(index, f"node-{index}.kbt", address, namespace, directory)

    def ensure(self, count: int) -> None:
        """Grow the lab to `count` nodes (a test that needs more than the shared lab's size)."""
        if count > MAX_NODES:
            raise ValueError(f"at most {MAX_NODES} nodes on 10.201.0.0/{PREFIX_LENGTH}")
        self.fit_host(count)
        added = [self._add_node(index) for index in range(len(self.nodes) + 1, count + 1)]
        self.nodes.extend(added)
        for node in added:
            self.start_sshd(node)
        for node in added:
            self.wait_port(node)

    def fit_host(self, count: int) -> None:
        """Give `count` nodes the room in the host's network tables that nodes of their own would have.

        The namespaces share two tables that real nodes each have for themselves, and from
        256 nodes the tree mode overflowed both:

        * the ARP table (gc_thresh1..3: 128, 512, 1024 by default) holds every namespace's
          entries: the host's one per node, each node's for the host, its parent and its
          children. Full, the kernel logs "neighbor table overflow" and a node's ssh to a child
          fails with "No route to host" or a connection timeout (25 to 186 of 256 nodes in a
          warm tree run). When count * (count + 1) entries (everyone knowing everyone) could
          overflow it, each threshold is multiplied by count + 1: a table per node and the host.
        * every packet a node sends on its veth waits in a host CPU's backlog
          (netdev_max_backlog, 1000 by default), and the bridge floods each ARP request to every
          port: 100,000 packets dropped in three tree runs on 256 nodes, each drop a retransmit
          later. It gets count * count (one broadcast in flight per node).

        Only ever raised, never below the host's setting: with the kernel's defaults a lab of
        up to 31 nodes runs with the host's tables as they are. (A lab that crashed before its
        teardown leaves them raised: larger limits, nothing else.)
        """
        wanted = {BACKLOG_SYSCTL: count * count}
        if count * (count + 1) > int(NEIGHBOUR_SYSCTLS[-1].read_text()):
            wanted.update({path: int(self.saved_host_settings.get(path) or path.read_text()) * (count + 1)
                           for path in NEIGHBOUR_SYSCTLS})
        for path, value in wanted.items():
            current = path.read_text().strip()
            if value > int(current):
                self.saved_host_settings.setdefault(path, current)
                path.write_text(f"{value}\n")

    @property
    def hosts(self) -> dict[str, str]:
        return {node.hostname: node.address for node in self.nodes}

    def node(self, hostname: str) -> SshNode:
        return next(node for node in self.nodes if node.hostname == hostname)

    def start_sshd(self, node: SshNode) -> None:
        empty = self.workdir / "empty-bashrc"
        empty.touch()
        # `ip netns exec` runs us in a new mount namespace (a slave of the host's): the bind
        # mount is this sshd's only, and goes away with it
        script = ('[ -f "$HOME/.bashrc" ] && mount --bind "$1" "$HOME/.bashrc"; '
                  'exec /usr/sbin/sshd -D -f "$2" -E "$3"')
        node.sshd = subprocess.Popen(
            ["ip", "netns", "exec", node.namespace, "sh", "-c", script, "sshd", str(empty),
             str(node.directory / "sshd_config"), str(node.directory / "sshd.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def stop_sshd(self, node: SshNode) -> None:
        """Stop the listening sshd (established sessions keep running, as with a real node)."""
        if node.sshd is not None:
            node.sshd.terminate()
            node.sshd.wait(timeout=10)
            node.sshd = None

    def wait_port(self, node: SshNode, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((node.address, 22), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"sshd of {node.hostname} did not come up")

    def kill_node_processes(self, node: SshNode) -> None:
        """Kill what runs in this node's namespace (all of it was started by this lab)."""
        for pid in node.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def teardown(self) -> None:
        for node in self.nodes:
            if node.sshd is not None:
                node.sshd.kill()
                node.sshd.wait(timeout=10)
                node.sshd = None
            self.kill_node_processes(node)
            _sh("ip", "netns", "del", node.namespace, check=False)
            # A namespace lives on while orphaned TCP sockets in it retransmit (a node whose link
            # was cut): delete our end of the veth pair, which deletes both ends, now.
            _sh("ip", "link", "del", f"kbtv{node.index}", check=False)
        self.nodes.clear()
        _sh("ip", "link", "del", BRIDGE, check=False)
        for path, value in self.saved_host_settings.items():
            path.write_text(f"{value}\n")
        self.saved_host_settings.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)
        if _owner() == os.getpid():
            OWNER_FILE.unlink(missing_ok=True)


_shared: SshLab | None = None
_shared_users = 0


def acquire_shared(count: int = 8) -> SshLab:
    """One lab for the whole test session, shared by the remote and broadcast tests."""
    global _shared, _shared_users
    if _shared is None:
        _shared = SshLab.create(count)
    _shared_users += 1
    return _shared


def release_shared() -> None:
    global _shared, _shared_users
    _shared_users -= 1
    if _shared_users <= 0 and _shared is not None:
        _shared.teardown()
        _shared = None


def _owner() -> int | None:
    try:
        return int(OWNER_FILE.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_stale() -> None:
    """Remove a bridge and namespaces left by a crashed run of this lab (our own names only).

    A lab whose owner is still running is not stale: refuse, naming it, instead of pulling its
    nodes from under it (a benchmark and the test suite once did that to each other).
    """
    owner = _owner()
    if owner is not None and owner != os.getpid() and _alive(owner):
        raise RuntimeError(f"the sshd lab on {BRIDGE} is in use by pid {owner} ({OWNER_FILE}); "
                           "wait for it to finish or end that process")
    namespaces = _sh("ip", "netns", "list", check=False).stdout.split("\n")
    for line in namespaces:
        name = line.split(" ")[0]
        if name.startswith("kbt-") and name[4:].isdigit():
            for pid in _sh("ip", "netns", "pids", name, check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            _sh("ip", "netns", "del", name, check=False)
    for line in _sh("ip", "-o", "link", "show", check=False).stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
        if name.startswith("kbtv") and name[4:].isdigit():
            _sh("ip", "link", "del", name, check=False)
    if _sh("ip", "link", "show", BRIDGE, check=False).returncode == 0:
        _sh("ip", "link", "del", BRIDGE, check=False)
