"""The QEMU testbed's own VM powered by Redfish and reached by Serial-over-LAN, through kadeploy3d.

`kadeploy-testbed up --mode qemu --power-method redfish` with one VM: the
cluster file powers the VM through the `redfish` driver against the testbed's
sushy-tools service (`qemu.redfishbmc`), which acts through the VM's ipmi_sim;
the console command is `ipmitool ... sol activate` against that ipmi_sim, whose
SOL device is the VM's serial port. What is checked is the VM itself: its QEMU
process started by kapower3 --on and ended by kapower3 --off, and the firmware's
output (SeaBIOS redirects its screen and the iPXE ROM's to the serial port)
read by kaconsole3 after a reset, also found in the console log the testbed
keeps beside SOL. No deployment: the VM only runs its firmware.
"""

from __future__ import annotations

import os
import pty
import ssl
import subprocess
from collections.abc import Iterator

import httpx
import pytest
import yaml

from kadeploy_testbed.configdir import redfish_tls_paths
from kadeploy_testbed.qemu.bmcsim import SOL_PORT
from kadeploy_testbed.qemu.layout import build_layout
from kadeploy_testbed.qemu.vm import vm_status
from tests.ptyconsole import detach, read_until, reap
from tests.qemu.conftest import QEMU_DIR, QemuSite, qemu_site
from tests.qemu.ipmivm import qemu_pid, wait_until

NODE_SPEC = build_layout(1).nodes[0]
NODE = NODE_SPEC.hostname
SYSTEM_URL = f"https://10.202.0.1:8443/redfish/v1/Systems/{NODE_SPEC.short_name}"
SOL_LINK_TIMEOUT = 40.0  # ipmi_sim retries its SOL connection every 10 s until the VM's serial port answers


def redfish_processes() -> list[int]:
    """The testbed's Redfish service processes (found by command line, as `down` finds them)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = open(f"/proc/{entry}/cmdline", "rb").read().decode(errors="replace")
            except OSError:
                continue
            if "kadeploy_testbed.qemu.redfishbmc" in cmdline and str(QEMU_DIR) in cmdline:
                found.append(int(entry))
    return found


@pytest.fixture(scope="module")
def site() -> Iterator[QemuSite]:
    with qemu_site(1, power_method="redfish", environments=False) as running:
        assert redfish_processes(), "up --power-method redfish started no Redfish service"
        yield running
    assert not redfish_processes(), "down left the Redfish service running"


def vm_pid() -> int | None:
    return qemu_pid(QEMU_DIR, NODE_SPEC)


def redfish_power_state(site: QemuSite) -> str:
    """PowerState as the testbed's Redfish service reports it (its own certificate as CA)."""
    ca = ssl.create_default_context(cafile=str(redfish_tls_paths(site.directory)[0]))
    answer = httpx.get(SYSTEM_URL, auth=("admin", "testbed"), verify=ca, timeout=30)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["PowerState"])


def sol_linked() -> bool:
    """ipmi_sim holds its SOL connection to the VM's serial port (a TCP server of QEMU's)."""
    listing = subprocess.run(["ss", "-tnH", "state", "established", f"( dport = :{SOL_PORT} )"],
                             capture_output=True, text=True, timeout=10).stdout
    return NODE_SPEC.bmc_ip in listing


def test_kapower3_powers_the_vm_on_and_off_through_the_redfish_service(site: QemuSite) -> None:
    cluster = yaml.safe_load((site.etc / "qemu.conf").read_text())["remoteops"]
    assert [op.get("driver") for op in cluster["power_on"]] == ["redfish"]  # no other way to power on
    assert cluster["power_off"][-1]["driver"] == "redfish" and cluster["power_status"][0]["driver"] == "redfish"
    assert vm_pid() is None and redfish_power_state(site) == "Off"

    site.tool("kapower3", "--on", "-m", NODE, timeout=300)
    wait_until(lambda: vm_status(QEMU_DIR, NODE_SPEC) == "running", "running after kapower3 --on", timeout=60)
    assert redfish_power_state(site) == "On"
    status = site.tool("kapower3", "--status", "-m", NODE, timeout=300).stdout
    assert f"{NODE}: On" in status, status  # the driver's answer: Redfish's PowerState

    started = vm_pid()
    site.tool("kapower3", "--off", "-l", "hard", "-m", NODE, timeout=300)  # hard: Redfish's ForceOff
    wait_until(lambda: vm_pid() is None, "stopped by kapower3 --off", timeout=60)
    assert started is not None and redfish_power_state(site) == "Off"
    status = site.tool("kapower3", "--status", "-m", NODE, timeout=300).stdout
    assert f"{NODE}: Off" in status, status


def test_kaconsole3_reads_the_vms_firmware_through_ipmi_sol(site: QemuSite) -> None:
    site.tool("kapower3", "--on", "-m", NODE, timeout=300)
    wait_until(sol_linked, "linked to the BMC's SOL", timeout=SOL_LINK_TIMEOUT)
    log = site.directory / "run" / NODE_SPEC.short_name / "console.log"
    pid, fd = pty.fork()
    if pid == 0:  # kaconsole3 on a terminal, as a user runs it
        os.execvpe("kaconsole3", ["kaconsole3", "-m", NODE], dict(site.env, TERM="dumb"))
    try:
        banner = read_until(fd, b"SOL Session operational", 60)
        assert b"SOL Session operational" in banner, banner
        logged_before = log.stat().st_size
        running = vm_pid()
        # a reset in place: the same QEMU process, the firmware starts again and writes on the serial port
        reset = site.ipmi(1, "reset")
        assert reset.returncode == 0, reset.stderr
        shown = read_until(fd, b"iPXE", 60)
        assert b"SeaBIOS" in shown and b"iPXE" in shown, shown[-2000:]
        assert vm_pid() == running
        # what the guest wrote is also in the console log the testbed keeps beside SOL
        with log.open("rb") as handle:
            handle.seek(logged_before)
            assert b"iPXE" in handle.read()
        assert detach(pid, fd, 30) == 0
    finally:
        reap(pid, fd)

    # the console command ends its stale SOL session (the server kills ipmitool without a
    # deactivation): a second kaconsole3 right after the first one gets the console too
    pid, fd = pty.fork()
    if pid == 0:
        os.execvpe("kaconsole3", ["kaconsole3", "-m", NODE], dict(site.env, TERM="dumb"))
    try:
        banner = read_until(fd, b"SOL Session operational", 60)
        assert b"SOL Session operational" in banner, banner
        assert detach(pid, fd, 30) == 0
    finally:
        reap(pid, fd)
