"""The testbed's PDU agent (pysnmp) driven by net-snmp's tools, and grouped very_hard escalation on it.

The agent serves APC PowerNet-MIB outlets on loopback, each feeding a group of
`SimplePower` nodes; `snmpset`/`snmpget`/`snmpwalk` are the real net-snmp
clients, and the grouped commands are the administrator's script that the
testbed's configuration writer produces (configdir.PDU_SCRIPT), run by
`kadeploy.boot.power.escalate` inside a `RebootWindow`. No root needed.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kadeploy.boot.commands import CommandTable, RemoteOp
from kadeploy.boot.drivers import IPMIDriver
from kadeploy.boot.power import escalate
from kadeploy.boot.window import RebootWindow
from kadeploy.errors import KadeployError
from kadeploy_testbed.bmc import BMCSpec, SimplePower, start_bmcs
from kadeploy_testbed.configdir import write_pdu_script
from kadeploy_testbed.pdu import OUTLET_CTL_OID, OUTLET_NAME_OID, PDUAgent, PDUSpec, start_pdu
from tests.requirements import requires

pytestmark = requires("snmpset")

ADDRESS = "127.0.0.1"
NODES = ["n1", "n2", "n3", "n4", "n5"]
OUTLETS = {1: ["n1", "n2"], 2: ["n3", "n4"], 3: ["n5"]}
CTL = ".".join(map(str, OUTLET_CTL_OID))
NAME = ".".join(map(str, OUTLET_NAME_OID))


@dataclass
class Lab:
    agent: PDUAgent
    powers: dict[str, SimplePower]
    script: Path

    @property
    def target(self) -> str:
        return f"{ADDRESS}:{self.agent.port}"

    def snmp(self, tool: str, *args: str, community: str = "private") -> subprocess.CompletedProcess[str]:
        return subprocess.run([tool, "-v2c", "-c", community, "-t", "1", "-r", "0", "-Oqn", self.target, *args],
                              capture_output=True, text=True, timeout=30)

    def calls(self) -> dict[str, list[str]]:
        return {name: list(power.calls) for name, power in self.powers.items() if power.calls}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="pdu-test-loop", daemon=True)
    thread.start()
    powers = {name: SimplePower(on=True) for name in NODES}
    spec = PDUSpec(ADDRESS, {outlet: [(name, powers[name]) for name in names] for outlet, names in OUTLETS.items()},
                   port=0)
    agent = asyncio.run_coroutine_threadsafe(start_pdu(spec), loop).result(10)
    directory = tmp_path_factory.mktemp("pdu")
    table = directory / "pdu-outlets"
    table.write_text("".join(f"{outlet} {','.join(names)}\n" for outlet, names in OUTLETS.items()))
    write_pdu_script(directory / "pdu", table, f"{ADDRESS}:{agent.port}")
    try:
        yield Lab(agent, powers, directory / "pdu")
    finally:
        async def close() -> None:
            agent.stop()
            await asyncio.sleep(0.1)  # the dispatcher's timer task ends on its cancellation

        asyncio.run_coroutine_threadsafe(close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture(autouse=True)
def _fresh(lab: Lab) -> None:
    for power in lab.powers.values():
        power.calls.clear()
        power.on = True


def test_an_outlet_reboot_cycles_every_node_it_feeds_and_no_other(lab: Lab) -> None:
    result = lab.snmp("snmpset", f"{CTL}.1", "i", "3")
    assert result.returncode == 0, result.stderr
    assert lab.calls() == {"n1": ["cycle"], "n2": ["cycle"]}
    assert lab.snmp("snmpset", f"{CTL}.2", "i", "2").returncode == 0
    assert lab.calls() == {"n1": ["cycle"], "n2": ["cycle"], "n3": ["off"], "n4": ["off"]}
    state = lab.snmp("snmpget", f"{CTL}.1", f"{CTL}.2", community="public")
    assert state.stdout.split() == [f".{CTL}.1", "1", f".{CTL}.2", "2"]
    lab.powers["n1"].on = False  # the outlet's nodes differ: outletUnknown
    assert lab.snmp("snmpget", f"{CTL}.1", community="public").stdout.split()[-1] == "4"


def test_an_snmpwalk_lists_each_outlets_nodes(lab: Lab) -> None:
    walk = lab.snmp("snmpwalk", NAME, community="public")
    assert walk.returncode == 0, walk.stderr
    assert walk.stdout.split("\n")[:3] == [f'.{NAME}.1 "n1,n2"', f'.{NAME}.2 "n3,n4"', f'.{NAME}.3 "n5"']


@pytest.mark.parametrize(
    ("args", "community", "message"),
    [
        ((f"{CTL}.1", "i", "7"), "private", "wrongValue"),  # delayed reboot: this PDU has no delays
        ((f"{CTL}.1", "i", "3"), "public", "noAccess"),  # the read community cannot switch outlets
        ((f"{CTL}.9", "i", "3"), "private", "noCreation"),  # no outlet 9
        ((f"{NAME}.1", "s", "n1"), "private", "notWritable"),
        ((f"{CTL}.1", "i", "3"), "guess", "Timeout"),  # an unknown community gets no answer
    ],
)
def test_refused_sets_change_nothing(lab: Lab, args: tuple[str, ...], community: str, message: str) -> None:
    result = lab.snmp("snmpset", *args, community=community)
    assert result.returncode != 0 and message in result.stderr + result.stdout
    assert lab.calls() == {}


def test_the_administrators_script_switches_the_groups_outlet(lab: Lab) -> None:
    done = subprocess.run([str(lab.script), "reboot", "n3,n4"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert lab.calls() == {"n3": ["cycle"], "n4": ["cycle"]}
    stray = subprocess.run([str(lab.script), "reboot", "n3"], capture_output=True, text=True, timeout=30)
    assert stray.returncode == 1 and "no outlet feeds exactly 'n3'" in stray.stderr
    assert lab.calls() == {"n3": ["cycle"], "n4": ["cycle"]}


# --- very_hard escalation and the reboot window on the PDU ----------------------------------

def _free_udp_port(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((address, 0))
        return probe.getsockname()[1]


@pytest.fixture
def table(lab: Lab, tmp_path: Path) -> Iterator[CommandTable]:
    """soft: none; hard: each node's IPMI BMC, refusing the configured password; very_hard: the PDU."""
    # one BMC per node (the BMC server keys them by address): 127.0.0.7<k>, on a port the kernel picks
    bmc_of = {name: f"127.0.0.{71 + index}" for index, name in enumerate(NODES)}
    ports = {name: _free_udp_port(bmc_of[name]) for name in NODES}
    bmcs = start_bmcs([BMCSpec(bmc_of[name], lab.powers[name], port=ports[name], name=name) for name in NODES])
    groups = tmp_path / "pdu-groups"
    groups.write_text("".join(",".join(names) + "\n" for names in OUTLETS.values()))
    try:
        yield CommandTable({"reboot": [
            RemoteOp("hard", driver=lambda host: IPMIDriver(bmc_of[host], "ADMIN", "wrong", port=ports[host],
                                                            extra_args=("-N", "1", "-R", "1"))),
            RemoteOp("very_hard", cmd=f"{lab.script} reboot GROUP_SHORT", group=groups),
        ]})
    finally:
        bmcs.stop()


needs_ipmitool = requires("ipmitool")


@needs_ipmitool
def test_very_hard_reboots_by_outlet_once_per_group_in_the_window(lab: Lab, table: CommandTable) -> None:
    window = RebootWindow(1)
    lines: list[str] = []
    result = asyncio.run(escalate("reboot", ["n1", "n2", "n3", "n4"], "soft", table, window, command_timeout=30,
                                  output=lambda level, text: lines.append(text.strip())))
    assert sorted(result.ok) == ["n1", "n2", "n3", "n4"] and result.ko == {}
    assert lab.calls() == {name: ["cycle"] for name in ("n1", "n2", "n3", "n4")}
    # 4 hard commands (one per BMC), then one very_hard command per outlet, never two at once
    assert (window.total, window.peak) == (4 + 2, 1)
    assert lines[:2] == ["* Performing a soft reboot on n[1-4]", "! No soft reboot command is defined for n1"]
    assert "* Performing a very_hard reboot on n[1-4]" in lines


@needs_ipmitool
def test_a_node_whose_group_is_not_all_there_is_not_powered(lab: Lab, table: CommandTable) -> None:
    result = asyncio.run(escalate("reboot", ["n1", "n2", "n3"], "soft", table, RebootWindow(4), command_timeout=30))
    assert sorted(result.ok) == ["n1", "n2"]
    assert "belongs to the group [n3,n4] and not all the nodes of the group are in the operation" in result.ko["n3"]
    assert lab.calls() == {"n1": ["cycle"], "n2": ["cycle"]}  # n4, outside the operation, keeps running


def test_a_port_already_taken_is_an_error_naming_it(lab: Lab) -> None:
    with pytest.raises(KadeployError, match=f"PDU agent on {ADDRESS}:{lab.agent.port}: .*in use"):
        asyncio.run(start_pdu(PDUSpec(ADDRESS, {}, port=lab.agent.port)))
