"""IPMI command lines (and a stand-in ipmitool), Redfish against an in-test HTTP server."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from kadeploy.boot.commands import CommandTable, RemoteOp
from kadeploy.boot.drivers import IPMIDriver, PowerDriverError, RedfishDriver
from kadeploy.boot.power import escalate, power_status
from kadeploy.boot.window import RebootWindow


def test_ipmi_command_lines_keep_the_password_off_argv():
    driver = IPMIDriver("10.200.64.1", "admin", "s3cret", port=6230)
    assert driver.power_command_line("cycle") == [
        "ipmitool", "-I", "lanplus", "-H", "10.200.64.1", "-p", "6230", "-U", "admin", "-E", "chassis", "power", "cycle",
    ]
    assert "s3cret" not in driver.power_command_line("on")
    assert driver.power_command_line("soft_off")[-1] == "soft"
    with pytest.raises(PowerDriverError):
        driver.power_command_line("graceful_restart")


@pytest.fixture
def fake_ipmitool(tmp_path: Path) -> Path:
    """An executable that records argv and IPMI_PASSWORD, and answers like ipmitool."""
    script = tmp_path / "ipmitool"
    log = tmp_path / "calls"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$* pw=$IPMI_PASSWORD" >> {log}\n'
        'case "$*" in *status) echo "Chassis Power is on";; *"-H bad"*) echo "Unable to establish IPMI v2 session" >&2; exit 1;; esac\n'
    )
    script.chmod(0o755)
    return script


async def test_ipmi_driver_through_the_escalation(fake_ipmitool):
    def driver(hostname: str) -> IPMIDriver:
        address = "bad" if hostname.startswith("node-2") else f"{hostname.split('.')[0]}-bmc"
        return IPMIDriver(address, "admin", "pw1", ipmitool=str(fake_ipmitool))

    table = CommandTable({
        "reboot": [RemoteOp("hard", driver=driver, action="cycle")],
        "power_status": [RemoteOp("soft", driver=driver)],
    })
    nodes = ["node-1.c1", "node-2.c1"]
    result = await escalate("reboot", nodes, "hard", table, RebootWindow(2), levels=("hard",))
    assert result.ok == ["node-1.c1"]
    assert result.ko == {"node-2.c1": "ipmitool on bad: Unable to establish IPMI v2 session"}
    calls = (fake_ipmitool.parent / "calls").read_text()
    assert "-I lanplus -H node-1-bmc -U admin -E chassis power cycle pw=pw1" in calls
    status = await power_status(["node-1.c1"], table, RebootWindow(1))
    assert status.status == {"node-1.c1": "Chassis Power is on"}


class _Redfish(BaseHTTPRequestHandler):
    state = {"PowerState": "Off", "resets": []}

    def _authorized(self) -> bool:
        # "admin:pw" in base64
        if self.headers.get("Authorization") != "Basic YWRtaW46cHc=":
            self.send_response(401)
            self.end_headers()
            return False
        return True

    def do_GET(self):  # noqa: N802
        if not self._authorized():
            return
        if self.path != "/redfish/v1/Systems/1":
            self.send_response(404)
            self.end_headers()
            return
        body = json.dumps({"Id": "1", "PowerState": self.state["PowerState"]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):  # noqa: N802
        if not self._authorized():
            return
        length = int(self.headers.get("Content-Length", 0))
        payload = json.loads(self.rfile.read(length))
        if self.path != "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset":
            self.send_response(404)
            self.end_headers()
            return
        reset = payload["ResetType"]
        self.state["resets"].append(reset)
        self.state["PowerState"] = "Off" if reset == "ForceOff" else "On"
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def redfish_server():
    _Redfish.state = {"PowerState": "Off", "resets": []}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Redfish)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


async def test_redfish_power_and_status(redfish_server):
    driver = RedfishDriver(redfish_server, "admin", "pw", "1")
    assert await driver.status(timeout=5) == "Off"
    await driver.power("on", timeout=5)
    assert await driver.status(timeout=5) == "On"
    await driver.power("reset", timeout=5)
    await driver.power("graceful_restart", timeout=5)
    await driver.power("off", timeout=5)
    assert _Redfish.state["resets"] == ["On", "ForceRestart", "GracefulRestart", "ForceOff"]
    assert await driver.status(timeout=5) == "Off"


async def test_redfish_errors_are_power_driver_errors(redfish_server):
    with pytest.raises(PowerDriverError, match="HTTP 401"):
        await RedfishDriver(redfish_server, "admin", "wrong").power("on", timeout=5)
    with pytest.raises(PowerDriverError, match="PowerState"):
        await RedfishDriver(redfish_server, "admin", "pw", "9").status(timeout=5)
    with pytest.raises(PowerDriverError, match="ConnectError"):
        await RedfishDriver("http://127.0.0.1:9", "a", "b").power("on", timeout=2)
