"""testbed/qemu room: the BMC daemon — one IPMI lanplus BMC per VM, acting through QMP.

Why a pyghmi BMC rather than OpenIPMI's ipmi_sim wired to QEMU's
`ipmi-bmc-extern`: ipmi_sim powers a VM on by running a start command and needs
a lan.conf per VM; the project's BMC (`kadeploy.testbed.bmc`) already speaks
RMCP+ to ipmitool, and QMP gives it exact power semantics (paused = off). The
cluster's `ipmitool -I lanplus -H node-<k>-bmc.qemu.testbed ... chassis power
on|off|cycle|reset|status` lines reach the VM unchanged.

Run as `python -m kadeploy.testbed.qemu.bmcd --dir DIR`; stops on TERM/INT.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from kadeploy.errors import KadeployError
from kadeploy.testbed.bmc import BMCSpec, start_bmcs
from kadeploy.testbed.qemu.layout import qmp_socket
from kadeploy.testbed.qemu.state import load_state
from kadeploy.testbed.qemu.vm import QemuPower


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kadeploy.testbed.qemu.bmcd")
    parser.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args(argv)
    try:  # a BMC is hardware of its own: it must answer even when the emulated VMs saturate the CPUs
        os.setpriority(os.PRIO_PROCESS, 0, -10)
    except OSError:
        pass
    try:
        state = load_state(args.dir)
        specs = [BMCSpec(address=node.bmc_ip, power=QemuPower(qmp_socket(args.dir, node)), user=state.bmc_user,
                         password=state.bmc_password, name=node.bmc_hostname) for node in state.layout().nodes]
        server = start_bmcs(specs)
    except KadeployError as exc:
        print(f"bmcd: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"bmcd: {len(specs)} BMC(s) listening: {', '.join(spec.address for spec in specs)}", flush=True)
    while not stop.wait(1.0):
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
