"""Redfish in QEMU mode: sushy-tools' emulator in front of a VM's ipmi_sim BMC, driven by the redfish driver.

The VM is the tiny one of test_qemu_bmcsim (64 MiB, no disk, no NIC) whose
QEMU process ipmi_sim owns; the Redfish service (`qemu.redfishbmc`, the real
sushy-tools application over HTTPS) acts through that BMC with ipmitool, so
what is checked is the VM's process: started by On, kept by ForceRestart,
replaced by PowerCycle, ended by ForceOff; and ipmi_sim's refusal of a reset
on a machine that is off comes back as a Redfish error.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kadeploy.boot.drivers import PowerDriverError, RedfishDriver
from kadeploy_testbed.layout import NodeSpec
from kadeploy_testbed.qemu import bmcsim
from kadeploy_testbed.qemu.layout import qmp_socket, run_dir
from kadeploy_testbed.qemu.redfishbmc import BMCPower, start_qemu_redfish
from kadeploy_testbed.qemu.vm import vm_status
from kadeploy_testbed.redfish import ensure_certificate
from tests.ports import free_port
from tests.qemu.ipmivm import ipmi_bmc_args, kill_bmc_and_vm, qemu_pid, wait_until
from tests.requirements import requires

pytestmark = requires("ipmi_sim", "ipmitool", "qemu")

USER, PASSWORD = "admin", "s3cret"
ADDRESS = "127.0.0.1"


@dataclass
class Bench:
    directory: Path
    node: NodeSpec
    driver: RedfishDriver

    def qemu_pid(self) -> int | None:
        return qemu_pid(self.directory, self.node)


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[Bench]:
    node = NodeSpec(index=1, cluster="qemu", ip="10.202.1.1", mac="02:00:0a:ca:01:01", bmc_ip=ADDRESS)
    ipmi_port, vm_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
    run = run_dir(tmp_path, node)
    run.mkdir(parents=True)
    qemu = ["qemu-system-x86_64", "-name", "redfish-test", "-machine", "pc", "-accel", "tcg", "-m", "64",
            "-nodefaults", "-display", "none",
            *ipmi_bmc_args(ADDRESS, vm_port),
            "-qmp", f"unix:{qmp_socket(tmp_path, node)},server=on,wait=off", "-pidfile", str(run / "qemu.pid")]
    bmcsim.write_bmc_files(tmp_path, node, qemu, USER, PASSWORD, ipmi_port=ipmi_port, vm_port=vm_port)
    pid = bmcsim.start_bmc(tmp_path, node, USER, PASSWORD, ipmi_port=ipmi_port)
    cert, key = tmp_path / "redfish.crt", tmp_path / "redfish.key"
    ensure_certificate(cert, key, ADDRESS)
    service = start_qemu_redfish(ADDRESS, {node.short_name: BMCPower(ADDRESS, USER, PASSWORD, ipmi_port)}, tmp_path,
                                 port=0, user=USER, password=PASSWORD, cert=cert, key=key)
    bench = Bench(tmp_path, node, RedfishDriver(service.system_url(node.short_name), USER, PASSWORD, verify=str(cert)))
    try:
        yield bench
    finally:
        service.stop()
        kill_bmc_and_vm(pid, tmp_path, node)


def test_redfish_powers_the_vm_through_its_ipmi_sim(bench: Bench) -> None:
    status = lambda: asyncio.run(bench.driver.status(timeout=60))  # noqa: E731
    assert status() == "Off" and bench.qemu_pid() is None
    # ipmi_sim refuses to reset a machine that is off: Redfish says so instead of a 204
    with pytest.raises(PowerDriverError, match="ForceRestart refused with HTTP 500: .*power reset"):
        asyncio.run(bench.driver.power("reset", timeout=60))
    assert bench.qemu_pid() is None

    asyncio.run(bench.driver.power("on", timeout=60))
    wait_until(lambda: vm_status(bench.directory, bench.node) == "running", "running after On")
    assert status() == "On"
    first = bench.qemu_pid()

    asyncio.run(bench.driver.power("reset", timeout=60))  # ForceRestart: in place, same process
    time.sleep(1)
    assert bench.qemu_pid() == first and status() == "On"

    asyncio.run(bench.driver.power("cycle", timeout=60))  # PowerCycle: off then on, a new process
    wait_until(lambda: bench.qemu_pid() not in (None, first), "restarted by PowerCycle")

    asyncio.run(bench.driver.power("off", timeout=60))
    wait_until(lambda: bench.qemu_pid() is None, "stopped by ForceOff", timeout=bmcsim.POWEROFF_WAIT + 10)
    assert status() == "Off"
