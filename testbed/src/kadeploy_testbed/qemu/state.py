"""testbed/qemu room: `<dir>/state.json` of a QEMU testbed.

Why: `down` must undo everything after a crash and `status`/`power` must find
the VMs, so each process is recorded as soon as it is started. Atomic writes.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kadeploy.errors import ErrorCode, KadeployError
from kadeploy_testbed.layout import Layout
from kadeploy_testbed.qemu.layout import build_layout

STATE_FILE = "state.json"


@dataclass
class QemuState:
    """What `up` made; `nodes` rebuilds the layout."""

    directory: str
    nodes: int
    method: str = "PXElinux"
    disk_size: str = "6G"
    accel: str = "auto"
    power_method: str = "ipmi"   # configdir.POWER_METHODS; "redfish": the Redfish service runs (pids["redfish"])
    mode: str = "qemu"
    bmc_user: str = "admin"
    bmc_password: str = "testbed"
    # "dnsmasq", "http", "node-<k>-bmc" (ipmi_sim), "redfish" (sushy-tools) -> pid
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return Path(self.directory)

    def layout(self) -> Layout:
        return build_layout(self.nodes)

    def save(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=".state-")
        with os.fdopen(fd, "w") as handle:
            json.dump(asdict(self), handle, indent=2, sort_keys=True)
        os.replace(tmp, self.path / STATE_FILE)


def is_qemu_testbed(directory: Path) -> bool:
    """True when `directory` holds a QEMU testbed's state (so `down`/`status` dispatch here)."""
    try:
        return json.loads((directory / STATE_FILE).read_text()).get("mode") == "qemu"
    except (OSError, ValueError, AttributeError):
        return False


def load_state(directory: Path) -> QemuState:
    path = directory / STATE_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise KadeployError(ErrorCode.INVALID_FILE,
                            f"{path}: no QEMU testbed here (run `kadeploy-testbed up --mode qemu`)") from None
    except (OSError, ValueError) as exc:
        raise KadeployError(ErrorCode.INVALID_FILE, f"{path}: unreadable state file: {exc}") from None
    known = QemuState.__dataclass_fields__
    return QemuState(**{key: value for key, value in data.items() if key in known})
