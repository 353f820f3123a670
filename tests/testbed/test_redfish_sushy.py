"""The `redfish` power driver against sushy-tools' emulator, and escalation across IPMI and Redfish.

The peer is the real sushy-tools application (the OpenStack Redfish emulator)
served over HTTPS with basic authentication by `kadeploy_testbed.redfish`,
whose systems are `SimplePower` objects here (the testbed daemon gives it the
node supervisors instead: tests/testbed/test_redfish_testbed_power.py). The
IPMI side is the testbed's pyghmi BMC driven by the real `ipmitool`. All on
loopback, on ports the kernel picks; no root needed.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from kadeploy.boot.commands import CommandTable, RemoteOp
from kadeploy.boot.drivers import IPMIDriver, PowerDriverError, RedfishDriver
from kadeploy.boot.power import escalate, power_status
from kadeploy.boot.window import RebootWindow
from kadeploy_testbed.bmc import BMCSpec, SimplePower, start_bmcs
from kadeploy_testbed.redfish import RedfishService, RedfishSpec, ensure_certificate, start_redfish
from tests.requirements import requires

ADDRESS = "127.0.0.1"
USER, PASSWORD = "admin", "s3cret"


@dataclass
class Emulator:
    service: RedfishService
    ca: Path
    nodes: dict[str, SimplePower]

    def driver(self, node: str, *, password: str = PASSWORD, verify: bool | str | None = None) -> RedfishDriver:
        return RedfishDriver(self.service.system_url(node), USER, password,
                             verify=str(self.ca) if verify is None else verify)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    directory = tmp_path_factory.mktemp("redfish")
    cert, key = directory / "redfish.crt", directory / "redfish.key"
    ensure_certificate(cert, key, ADDRESS)
    nodes = {"node-1": SimplePower(on=False), "node-2": SimplePower(on=True)}
    service = start_redfish(RedfishSpec(ADDRESS, nodes, directory, port=0, user=USER, password=PASSWORD,
                                        cert=cert, key=key))
    try:
        yield Emulator(service, cert, nodes)
    finally:
        service.stop()


@pytest.fixture(autouse=True)
def _forget_calls(emulator: Emulator) -> None:
    for power in emulator.nodes.values():
        power.calls.clear()


def run(coroutine):
    return asyncio.run(coroutine)


def test_status_and_every_power_action_reach_the_system(emulator: Emulator) -> None:
    node = emulator.nodes["node-1"]
    driver = emulator.driver("node-1")
    node.on = False
    assert run(driver.status()) == "Off"
    run(driver.power("on"))
    assert run(driver.status()) == "On"
    run(driver.power("reset"))
    run(driver.power("cycle"))
    run(driver.power("off"))
    assert run(driver.status()) == "Off"
    assert node.calls == ["on", "reset", "cycle", "off"]
    assert emulator.nodes["node-2"].calls == []


def test_the_service_serves_each_node_as_a_system_of_its_own(emulator: Emulator) -> None:
    listing = httpx.get(f"{emulator.service.url}/redfish/v1/Systems", auth=(USER, PASSWORD),
                        verify=ssl.create_default_context(cafile=str(emulator.ca)))
    members = sorted(member["@odata.id"] for member in listing.json()["Members"])
    assert members == ["/redfish/v1/Systems/node-1", "/redfish/v1/Systems/node-2"]
    emulator.nodes["node-2"].on = True
    assert run(emulator.driver("node-2").status()) == "On"
    with pytest.raises(PowerDriverError, match="HTTP 404"):
        run(emulator.driver("node-9").power("on"))


def test_a_wrong_password_is_refused_and_nothing_is_done(emulator: Emulator) -> None:
    driver = emulator.driver("node-1", password="wrong")
    with pytest.raises(PowerDriverError, match="ForceRestart refused with HTTP 401: Incorrect username or password"):
        run(driver.power("reset"))
    with pytest.raises(PowerDriverError, match="cannot read PowerState: HTTP 401"):
        run(driver.status())
    assert emulator.nodes["node-1"].calls == []


def test_https_certificate_is_verified(emulator: Emulator) -> None:
    # the emulator's certificate is self-signed: the system's CAs do not vouch for it
    with pytest.raises(PowerDriverError, match="ConnectError:.*CERTIFICATE_VERIFY_FAILED"):
        run(emulator.driver("node-1", verify=True).power("on"))
    assert emulator.nodes["node-1"].calls == []
    # ... its own certificate as the CA does
    run(emulator.driver("node-1").power("on"))
    assert emulator.nodes["node-1"].calls == ["on"]


def test_a_reset_the_node_cannot_do_is_refused_with_the_reason(emulator: Emulator) -> None:
    with pytest.raises(PowerDriverError, match="GracefulShutdown refused with HTTP 400: .*no ACPI power button"):
        run(emulator.driver("node-2").power("soft_off"))
    assert emulator.nodes["node-2"].calls == []


@pytest.mark.parametrize(
    ("address", "base", "system", "error"),
    [
        ("bmc-1.site", "https://bmc-1.site", "1", ""),
        ("http://10.0.0.1:8000", "http://10.0.0.1:8000", "1", ""),
        ("https://10.0.0.1:8443/redfish/v1/Systems/node-3", "https://10.0.0.1:8443", "node-3", ""),
        ("https://10.0.0.1/redfish/v1/Managers/1", "https://10.0.0.1", "1", "a path must be /redfish/v1/Systems/"),
        ("ftp://10.0.0.1", "ftp://10.0.0.1", "1", "expected [https://]HOST"),
    ],
)
def test_the_address_of_a_cluster_file_names_the_service_and_the_system(address, base, system, error) -> None:
    driver = RedfishDriver(address, USER, PASSWORD)
    assert (driver.base_url, driver.system_id) == (base, system)
    assert error in driver.address_error and bool(error) == bool(driver.address_error)
    if error:  # the node's power action fails with the reason; nothing is sent
        with pytest.raises(PowerDriverError, match="Redfish address"):
            run(driver.power("on"))


# --- escalation across IPMI and Redfish ----------------------------------------------------

def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((ADDRESS, 0))
        return probe.getsockname()[1]


@pytest.fixture
def node_with_two_bmcs(emulator: Emulator) -> Iterator[tuple[SimplePower, int]]:
    """node-1 behind both the emulator and a pyghmi IPMI BMC: one PowerControl, two protocols."""
    port = _free_udp_port()
    server = start_bmcs([BMCSpec(ADDRESS, emulator.nodes["node-1"], user=USER, password=PASSWORD, port=port)])
    try:
        yield emulator.nodes["node-1"], port
    finally:
        server.stop()


def _ipmi(port: int, password: str = PASSWORD) -> IPMIDriver:
    return IPMIDriver(ADDRESS, USER, password, port=port, extra_args=("-N", "1", "-R", "2"))


needs_ipmitool = requires("ipmitool")


@needs_ipmitool
def test_both_protocols_see_one_power_state(emulator: Emulator, node_with_two_bmcs) -> None:
    node, port = node_with_two_bmcs
    node.on = False
    run(_ipmi(port).power("on"))
    assert run(emulator.driver("node-1").status()) == "On"
    run(emulator.driver("node-1").power("off"))
    assert run(_ipmi(port).status()) == "Chassis Power is off"
    assert node.calls == ["on", "off"]


@needs_ipmitool
def test_soft_by_ipmi_fails_then_hard_by_redfish_reboots(emulator: Emulator, node_with_two_bmcs) -> None:
    node, port = node_with_two_bmcs
    table = CommandTable({"reboot": [
        RemoteOp("soft", driver=lambda host: _ipmi(port, password="wrong")),
        RemoteOp("hard", driver=lambda host: emulator.driver(host)),
        RemoteOp("very_hard", driver=lambda host: _ipmi(port), action="cycle"),
    ]})
    lines: list[str] = []
    result = run(escalate("reboot", ["node-1"], "soft", table, RebootWindow(4), command_timeout=30,
                          output=lambda level, text: lines.append(text)))
    assert result.ok == ["node-1"] and result.ko == {}
    assert node.calls == ["reset"]  # Redfish's ForceRestart, and only it
    assert [line.strip() for line in lines] == ["* Performing a soft reboot on node-1",
                                                "* Performing a hard reboot on node-1"]


@needs_ipmitool
def test_hard_by_redfish_fails_then_very_hard_by_ipmi_cycles(emulator: Emulator, node_with_two_bmcs) -> None:
    node, port = node_with_two_bmcs
    table = CommandTable({"reboot": [
        RemoteOp("soft", driver=lambda host: _ipmi(port, password="wrong")),
        RemoteOp("hard", driver=lambda host: emulator.driver(host, password="wrong")),
        RemoteOp("very_hard", driver=lambda host: _ipmi(port), action="cycle"),
    ]})
    result = run(escalate("reboot", ["node-1"], "soft", table, RebootWindow(4), command_timeout=30))
    assert result.ok == ["node-1"]
    assert node.calls == ["cycle"]


@needs_ipmitool
def test_every_level_failing_reports_the_last_error(emulator: Emulator, node_with_two_bmcs) -> None:
    node, port = node_with_two_bmcs
    table = CommandTable({"power_on": [
        RemoteOp("soft", driver=lambda host: _ipmi(port, password="wrong")),
        RemoteOp("hard", driver=lambda host: emulator.driver(host, password="wrong")),
    ]}, levels=("soft", "hard"))
    result = run(escalate("power_on", ["node-1"], "soft", table, RebootWindow(4), command_timeout=30))
    assert result.ok == [] and "On refused with HTTP 401" in result.ko["node-1"]
    assert node.calls == []
    status = run(power_status(["node-1"], CommandTable({"power_status": [
        RemoteOp("soft", driver=lambda host: emulator.driver(host))]}), RebootWindow(4)))
    assert status.status == {"node-1": "On" if node.on else "Off"}
