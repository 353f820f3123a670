"""testbed/qemu room: a Redfish front to the QEMU mode's BMCs (sushy-tools over ipmi_sim).

Why: in QEMU mode the VM's power belongs to its ipmi_sim BMC (it starts and
ends the QEMU process), so a Redfish service must act through that BMC, as
the Redfish side of a real BMC that also speaks IPMI shares one power state
with it. `BMCPower` is the `PowerControl` that `kadeploy_testbed.redfish`'s
sushy-tools systems driver calls: each action is `ipmitool chassis power ...`
against the node's ipmi_sim (`bmcsim.power`), each state read `power status`.
ipmi_sim's own refusals come back as Redfish errors: it refuses a reset of a
machine that is off, so ForceRestart on an off VM is an HTTP error, not a
success that did nothing.

`kadeploy-testbed up --mode qemu --power-method redfish` runs the service as a
process of its own (`python -m kadeploy_testbed.qemu.redfishbmc <dir>/state.json`,
`spawn`): sushy-tools keeps one application per process and `up` returns, so
the service cannot live in the CLI. It serves every VM of the testbed by short
name on `https://SERVER_IP:REDFISH_PORT/redfish/v1/Systems/node-<k>` with the
BMCs' user and password and the certificate `configdir.redfish_tls_paths` names
(the cluster file's `ca_file`); `down` ends it with the testbed's other
processes (found by its command line, which names the testbed's directory).
tests/qemu/test_redfish_qemu.py also starts one in-process over a tiny VM.
"""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kadeploy.errors import ErrorCode, KadeployError
from kadeploy_testbed.configdir import redfish_tls_paths
from kadeploy_testbed.layout import REDFISH_PORT
from kadeploy_testbed.qemu import bmcsim
from kadeploy_testbed.qemu.layout import SERVER_IP
from kadeploy_testbed.qemu.state import STATE_FILE, QemuState, load_state
from kadeploy_testbed.redfish import RedfishService, RedfishSpec, ensure_certificate, start_redfish

# seconds for one ipmitool call inside a Redfish request (the client's own timeout is longer)
IPMI_TIMEOUT = 20.0
READY_TIMEOUT = 30.0  # seconds for the service process to listen


@dataclass(frozen=True)
class BMCPower:
    """`PowerControl` over one ipmi_sim BMC, by ipmitool (blocking: called from werkzeug's request threads)."""

    address: str
    user: str
    password: str
    port: int = bmcsim.IPMI_PORT

    def _act(self, action: str) -> None:
        bmcsim.power(self.address, self.user, self.password, action, port=self.port, timeout=IPMI_TIMEOUT)

    def power_on(self) -> None:
        self._act("on")

    def power_off(self) -> None:
        self._act("off")

    def power_cycle(self) -> None:
        self._act("cycle")

    def power_reset(self) -> None:
        self._act("reset")

    def power_state(self) -> bool:
        return bmcsim.power_status(self.address, self.user, self.password, port=self.port,
                                   timeout=IPMI_TIMEOUT) == "on"


def start_qemu_redfish(address: str, bmcs: Mapping[str, BMCPower], auth_dir: Path, *, port: int,
                       user: str, password: str, cert: Path | None = None, key: Path | None = None) -> RedfishService:
    """sushy-tools serving one system per VM (by node short name), acting through each VM's BMC."""
    return start_redfish(RedfishSpec(address, dict(bmcs), auth_dir, port=port, user=user, password=password,
                                     cert=cert, key=key))


def _auth_dir(directory: Path) -> Path:
    return directory / "run" / "redfish"


def make_certificate(directory: Path) -> Path:
    """The service's self-signed certificate for SERVER_IP (kept if present); returns it (the clients' CA)."""
    cert, key = redfish_tls_paths(directory)
    ensure_certificate(cert, key, SERVER_IP)
    return cert


def serve_testbed(state: QemuState, stop: threading.Event) -> None:
    """Serve every VM of the testbed `state` describes until `stop` is set."""
    cert, key = redfish_tls_paths(state.path)
    bmcs = {node.short_name: BMCPower(node.bmc_ip, state.bmc_user, state.bmc_password)
            for node in state.layout().nodes}
    service = start_qemu_redfish(SERVER_IP, bmcs, _auth_dir(state.path), port=REDFISH_PORT, user=state.bmc_user,
                                 password=state.bmc_password, cert=cert, key=key)
    try:
        stop.wait()
    finally:
        service.stop()


def spawn(state: QemuState) -> int:
    """Start the service process for the testbed `state` describes; its pid once it listens."""
    make_certificate(state.path)
    log = state.path / "redfish.log"
    with log.open("ab") as handle:
        proc = subprocess.Popen([sys.executable, "-m", "kadeploy_testbed.qemu.redfishbmc",
                                 str(state.path / STATE_FILE)],
                                stdin=subprocess.DEVNULL, stdout=handle, stderr=handle, start_new_session=True)
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise KadeployError(ErrorCode.EXECUTE_ERROR, "the Redfish service (sushy-tools) exited at start: "
                                f"{log.read_text(errors='replace')[-800:]}")
        try:
            with socket.create_connection((SERVER_IP, REDFISH_PORT), timeout=2):
                return proc.pid
        except OSError:
            time.sleep(0.3)
    proc.terminate()
    raise KadeployError(ErrorCode.EXECUTE_ERROR, f"the Redfish service not listening on {SERVER_IP}:{REDFISH_PORT} "
                        f"after {READY_TIMEOUT:.0f}s (see {log})")


def main(argv: Sequence[str] | None = None) -> int:
    """The service process: serves until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m kadeploy_testbed.qemu.redfishbmc",
                                     description="sushy-tools Redfish service over a QEMU testbed's ipmi_sim BMCs")
    parser.add_argument("state_file", type=Path, help=f"the testbed's {STATE_FILE}")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        serve_testbed(load_state(args.state_file.parent), stop)
    except KadeployError as exc:
        print(f"redfishbmc: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
