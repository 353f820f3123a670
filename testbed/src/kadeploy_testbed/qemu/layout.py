"""testbed/qemu room: names, addresses, MACs and paths of the QEMU nodes.

Pure computation, so that `up`, `down`, the BMC daemon and the tests agree.
The QEMU mode lives beside the netns testbed on the same machine, so it has
its own bridge (`ktq0`), subnet (`10.202.0.0/16`, server side `10.202.0.1`),
cluster (`qemu`), taps (`ktqt<k>`) and directory. Node k gets `10.202.1.k`,
its BMC `10.202.64.k` (an address on the bridge, where the BMC daemon listens),
and a MAC derived from the IP. It reuses `kadeploy_testbed.layout`'s
`NodeSpec`/`Layout` so that the netns config writer's helpers apply unchanged.
"""

from __future__ import annotations

from pathlib import Path

from kadeploy.errors import ErrorCode, KadeployError
from kadeploy_testbed.layout import Layout, NodeSpec, mac_for

BRIDGE = "ktq0"
SERVER_IP = "10.202.0.1"
PREFIX_LEN = 16
NETMASK = "255.255.0.0"
CLUSTER = "qemu"
TAP_PREFIX = "ktqt"
HTTP_PORT = 8069
MAX_NODES = 4
DEFAULT_DIR = Path("/var/lib/kadeploy-testbed-qemu")
MEMORY_MIB = 1024


def build_layout(nodes: int) -> Layout:
    """N nodes (1..4: each VM is 1 GiB of emulated machine) in cluster `qemu`."""
    if not 1 <= nodes <= MAX_NODES:
        raise KadeployError(ErrorCode.INVALID_OPTION, f"--nodes {nodes}: QEMU mode runs 1 to {MAX_NODES} VMs")
    specs = tuple(NodeSpec(index=k, cluster=CLUSTER, ip=f"10.202.1.{k}", mac=mac_for(f"10.202.1.{k}"),
                           bmc_ip=f"10.202.64.{k}") for k in range(1, nodes + 1))
    return Layout(nodes=specs, clusters=(CLUSTER,))


def tap_name(node: NodeSpec) -> str:
    return f"{TAP_PREFIX}{node.index}"


def run_dir(directory: Path, node: NodeSpec) -> Path:
    """The VM's runtime files: QMP socket, serial console log, pid file, BMC files."""
    return directory / "run" / node.short_name


def qmp_socket(directory: Path, node: NodeSpec) -> Path:
    return run_dir(directory, node) / "qmp.sock"


def console_log(directory: Path, node: NodeSpec) -> Path:
    """What the VM wrote on its serial console (the SOL line's chardev logs it)."""
    return run_dir(directory, node) / "console.log"


def disk_path(directory: Path, node: NodeSpec) -> Path:
    return directory / "disks" / f"{node.short_name}.img"
