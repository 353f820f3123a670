"""The netns testbed's BMCs (pyghmi) have no serial line: `ipmitool sol activate` is refused, not faked.

A netns node's console is the log its supervisor writes, with nothing reading
input, so its BMC does not offer Serial-over-LAN: pyghmi answers the payload
activation "SOL payload disabled" and ipmitool fails. The console through SOL
is shown in QEMU mode (tests/qemu/test_ipmi_sol.py).
"""

from __future__ import annotations

import socket
import subprocess

from kadeploy_testbed.bmc import BMCSpec, SimplePower, start_bmcs
from tests.requirements import requires

pytestmark = requires("ipmitool")

ADDRESS = "127.0.0.81"


def test_sol_activate_is_refused_by_a_netns_bmc() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((ADDRESS, 0))
        port = probe.getsockname()[1]
    power = SimplePower(on=True)
    server = start_bmcs([BMCSpec(ADDRESS, power, port=port)])
    try:
        result = subprocess.run(["ipmitool", "-I", "lanplus", "-H", ADDRESS, "-p", str(port), "-U", "ADMIN", "-P",
                                 "ADMIN", "-N", "1", "-R", "2", "sol", "activate"], capture_output=True, text=True,
                                timeout=30, stdin=subprocess.DEVNULL)
    finally:
        server.stop()
    assert result.returncode == 1 and "SOL payload disabled" in result.stdout + result.stderr
    assert power.calls == [] and power.on
