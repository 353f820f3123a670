"""testbed room: the state file `<dir>/state.json` and the per-node runtime paths.

Why a state file: `down` must undo everything after a crash (kill -9 of the
daemon), so every resource is recorded *before* it is created, and the daemon
and the CLI (`status`, `fault`, `vlan`) agree on one description of the
testbed. Writes are atomic (temp file + rename). Imports `layout` only.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kadeploy.errors import ErrorCode, KadeployError
from kadeploy_testbed.layout import Layout, NodeSpec, build_layout

STATE_FILE = "state.json"
FAULT_KINDS = ("firmware-delay", "boot-failure-rate", "bmc-silent", "disk-fail", "netem-delay", "netem-loss",
               "link-rate")


@dataclass
class TestbedState:
    """What `up` created; `nodes`/`clusters` rebuild the layout deterministically."""

    __test__ = False  # not a pytest test class despite its name

    directory: str
    nodes: int
    clusters: int
    disk_size: str = "4G"
    firmware_delay: float = 2.0
    boot_failure_rate: float = 0.0
    seed: int | None = None
    deploy_rootfs: str = ""
    bmc_user: str = "admin"
    bmc_password: str = "testbed"
    daemon_pid: int | None = None
    tftpd_pid: int | None = None
    loops: dict[str, str] = field(default_factory=dict)          # node index -> /dev/loopN
    faults: dict[str, dict[str, str]] = field(default_factory=dict)  # node index -> kind -> value
    vlans: dict[str, int] = field(default_factory=dict)          # node index -> VLAN id (absent: default)

    @property
    def path(self) -> Path:
        return Path(self.directory)

    def layout(self) -> Layout:
        return build_layout(self.nodes, self.clusters)

    def fault(self, node: NodeSpec, kind: str) -> str | None:
        return self.faults.get(str(node.index), {}).get(kind)

    def save(self) -> None:
        path = self.path / STATE_FILE
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=".state-")
        with os.fdopen(fd, "w") as handle:
            json.dump(asdict(self), handle, indent=2, sort_keys=True)
        os.replace(tmp, path)


def load_state(directory: Path) -> TestbedState:
    """Read `<directory>/state.json`; a missing or corrupt file is a user-facing error."""
    path = directory / STATE_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise KadeployError(ErrorCode.INVALID_FILE, f"{path}: no testbed here (run `kadeploy-testbed up`)") from None
    except (OSError, ValueError) as exc:
        raise KadeployError(ErrorCode.INVALID_FILE, f"{path}: unreadable state file: {exc}") from None
    known = TestbedState.__dataclass_fields__
    return TestbedState(**{key: value for key, value in data.items() if key in known})


def node_run_dir(directory: Path, node: NodeSpec) -> Path:
    """Host directory of a node's runtime files: its /dev, console log, control fifo."""
    return directory / "run" / node.short_name


def disk_path(directory: Path, node: NodeSpec) -> Path:
    return directory / "disks" / f"{node.short_name}.img"


def control_socket(directory: Path) -> Path:
    return directory / "run" / "control.sock"
