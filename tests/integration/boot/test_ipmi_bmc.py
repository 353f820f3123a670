"""The IPMI driver with the real ipmitool against a local IPMI BMC (pyghmi's BMC on 127.0.0.1).

The testbed's BMCs come later; this checks that our command lines, password
passing (-E) and output parsing work with the real tool over the real protocol.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from kadeploy.boot.commands import CommandTable, RemoteOp
from kadeploy.boot.drivers import IPMIDriver, PowerDriverError
from kadeploy.boot.power import escalate, power_status
from kadeploy.boot.window import MinIntervalGate, RebootWindow
from tests.requirements import requires

pytestmark = requires("ipmitool")

BMC_SCRIPT = textwrap.dedent(
    """
    import sys
    import pyghmi.ipmi.bmc as bmc

    class FakeBmc(bmc.Bmc):
        powerstate = "off"
        def get_power_state(self):
            return self.powerstate
        def power_on(self):
            self.powerstate = "on"; print("on", flush=True)
        def power_off(self):
            self.powerstate = "off"; print("off", flush=True)
        def power_reset(self):
            print("reset", flush=True)
        def power_cycle(self):
            self.powerstate = "on"; print("cycle", flush=True)
        def power_shutdown(self):
            self.powerstate = "off"; print("shutdown", flush=True)

    FakeBmc({"admin": "pw"}, port=int(sys.argv[1]), address="127.0.0.1").listen()
    """
)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        return udp.getsockname()[1]


@pytest.fixture
def bmc(tmp_path: Path):
    script = tmp_path / "bmc.py"
    script.write_text(BMC_SCRIPT)
    log = tmp_path / "bmc.log"
    port = free_udp_port()
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, str(script), str(port)], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            probe = subprocess.run(
                ["ipmitool", "-I", "lanplus", "-H", "127.0.0.1", "-p", str(port), "-U", "admin", "-P", "pw",
                 "chassis", "power", "status"], capture_output=True, timeout=10,
            )
            if probe.returncode == 0:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the local BMC did not come up")
        yield port, log
    finally:
        process.kill()
        process.wait(5)


async def test_power_on_off_status_with_ipmitool(bmc):
    port, log = bmc
    driver = IPMIDriver("127.0.0.1", "admin", "pw", port=port)
    assert await driver.status(timeout=10) == "Chassis Power is off"
    await driver.power("on", timeout=10)
    assert await driver.status(timeout=10) == "Chassis Power is on"
    await driver.power("off", timeout=10)
    assert await driver.status(timeout=10) == "Chassis Power is off"
    assert log.read_text().split() == ["on", "off"]


async def test_wrong_password_is_a_node_error(bmc):
    port, _ = bmc
    with pytest.raises(PowerDriverError, match="ipmitool on 127.0.0.1"):
        await IPMIDriver("127.0.0.1", "admin", "nope", port=port).power("on", timeout=10)


async def test_failed_soft_reboot_escalates_to_the_bmc(bmc):
    port, log = bmc
    node = "node-1.c1.testbed"
    table = CommandTable({
        # the soft reboot goes through SSH; sshd is stopped on the node: it fails
        "reboot": [RemoteOp("soft", "echo 'ssh: connect to host HOSTNAME_FQDN port 22: Connection refused' >&2; exit 255"),
                   RemoteOp("hard", driver=lambda hostname: IPMIDriver("127.0.0.1", "admin", "pw", port=port), action="cycle")],
        "power_status": [RemoteOp("soft", driver=lambda hostname: IPMIDriver("127.0.0.1", "admin", "pw", port=port))],
    })
    lines: list[str] = []
    result = await escalate("reboot", [node], "soft", table, RebootWindow(2), gate=MinIntervalGate(0.2),
                            command_timeout=15, output=lambda level, text: lines.append(text))
    assert result.ok == [node] and result.ko == {}
    assert lines == ["   * Performing a soft reboot on node-1.c1.testbed", "   * Performing a hard reboot on node-1.c1.testbed"]
    assert log.read_text().split() == ["cycle"]
    status = await power_status([node], table, RebootWindow(1), command_timeout=10)
    assert status.status == {node: "Chassis Power is on"}
