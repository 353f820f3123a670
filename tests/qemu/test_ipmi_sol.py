"""The serial console through IPMI Serial-over-LAN: ipmi_sim's SOL wired to a QEMU VM's serial port.

The peer is OpenIPMI's `ipmi_sim` (the QEMU mode's BMC, `bmcsim`) with its
`sol "tcp:..."` device connected to the VM's first serial port (a TCP server
of QEMU's, `bmcsim.sol_chardev`), and the real `ipmitool ... sol activate`.
The VM is tiny (64 MiB, no disk, no NIC): its SeaBIOS writes on the serial
port (`etc/sercon-port`) and waits a minute for ESC, so what crosses the SOL
session is checked both ways: ESC typed into the session opens SeaBIOS's boot
menu, whose text comes back through it. Then the same through kadeploy3d and
kaconsole3, with the cluster's console command `ipmitool ... sol activate`.
"""

from __future__ import annotations

import os
import pty
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from kadeploy_testbed.answering import wait_answering
from kadeploy_testbed.layout import NodeSpec
from kadeploy_testbed.qemu import bmcsim
from kadeploy_testbed.qemu.layout import run_dir
from tests.integration.server.configdir import write_config_dir
from tests.ports import free_port
from tests.processgroups import stop_process
from tests.qemu.ipmivm import ipmi_bmc_args, kill_bmc_and_vm
from tests.ptyconsole import detach, read_until, reap
from tests.requirements import requires

pytestmark = requires("ipmi_sim", "ipmitool", "qemu")

USER, PASSWORD = "admin", "s3cret"
ADDRESS = "127.0.0.1"
MENU = b"Select boot device"
CONNECT_TIMEOUT = 30.0  # ipmi_sim retries its SOL connection every 10 s until the VM's port answers


@dataclass
class Machine:
    directory: Path
    node: NodeSpec
    ipmi_port: int
    sol_port: int

    def sol_command(self) -> list[str]:
        return bmcsim.ipmitool_command(ADDRESS, USER, PASSWORD, "sol", "activate", port=self.ipmi_port)

    def wait_sol_link(self) -> None:
        """Until ipmi_sim holds its connection to the VM's serial port (its SOL device)."""
        deadline = time.monotonic() + CONNECT_TIMEOUT
        while time.monotonic() < deadline:
            listing = subprocess.run(["ss", "-tnH", "state", "established", f"( dport = :{self.sol_port} )"],
                                     capture_output=True, text=True, timeout=10).stdout
            if listing.strip():
                return
            time.sleep(0.5)
        pytest.fail(f"ipmi_sim did not connect to the VM's serial port within {CONNECT_TIMEOUT:.0f}s")


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[Machine]:
    """A VM behind ipmi_sim, powered on through IPMI, its serial port linked to the BMC's SOL."""
    node = NodeSpec(index=1, cluster="qemu", ip="10.202.1.1", mac="02:00:0a:ca:01:01", bmc_ip=ADDRESS)
    ipmi_port, vm_port, sol_port = (free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM),
                                    free_port(socket.SOCK_STREAM))
    run = run_dir(tmp_path, node)
    run.mkdir(parents=True)
    (run / "sercon-port").write_bytes((0x3F8).to_bytes(8, "little"))  # SeaBIOS: console on COM1
    qemu = ["qemu-system-x86_64", "-name", "sol-test", "-machine", "pc", "-accel", "tcg", "-m", "64", "-nodefaults",
            "-display", "none", "-device", "VGA", "-fw_cfg", f"name=etc/sercon-port,file={run / 'sercon-port'}",
            "-boot", "menu=on,splash-time=60000", *bmcsim.sol_chardev(ADDRESS, sol_port),
            *ipmi_bmc_args(ADDRESS, vm_port),
            "-pidfile", str(run / "qemu.pid")]
    bmcsim.write_bmc_files(tmp_path, node, qemu, USER, PASSWORD, ipmi_port=ipmi_port, vm_port=vm_port,
                           sol_port=sol_port)
    pid = bmcsim.start_bmc(tmp_path, node, USER, PASSWORD, ipmi_port=ipmi_port)
    try:
        bmcsim.power(ADDRESS, USER, PASSWORD, "on", port=ipmi_port)
        machine = Machine(tmp_path, node, ipmi_port, sol_port)
        machine.wait_sol_link()
        yield machine
    finally:
        kill_bmc_and_vm(pid, tmp_path, node)


def test_lan_conf_connects_sol_to_the_vms_serial_port(tmp_path: Path) -> None:
    node = NodeSpec(index=1, cluster="qemu", ip="10.202.1.1", mac="02:00:0a:ca:01:01", bmc_ip="10.202.64.1")
    assert 'sol "tcp:10.202.64.1:9003" 115200' in bmcsim.lan_conf(tmp_path, node, USER, PASSWORD, sol_port=9003)
    assert "sol " not in bmcsim.lan_conf(tmp_path, node, USER, PASSWORD)


def test_ipmitool_sol_activate_types_into_and_reads_the_vms_serial_console(machine: Machine) -> None:
    session = subprocess.Popen(machine.sol_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    try:
        assert session.stdout is not None and session.stdin is not None
        banner = read_until(session.stdout.fileno(), b"SOL Session operational", 20)
        assert b"SOL Session operational" in banner, banner
        session.stdin.write(b"\x1b")  # ESC: SeaBIOS's boot menu
        session.stdin.flush()
        shown = read_until(session.stdout.fileno(), MENU, 20)
        assert MENU in shown, shown
        session.stdin.write(b"\r~.")  # ipmitool's escape: leave the session
        session.stdin.flush()
        assert session.wait(timeout=20) == 0
    finally:
        if session.poll() is None:
            session.kill()
            session.wait()


def test_kaconsole3_reaches_the_console_through_ipmi_sol(machine: Machine, tmp_path: Path) -> None:
    port = free_port(socket.SOCK_STREAM)
    etc = write_config_dir(tmp_path / "kadeploy", port, tmp_path / "kadeploy" / "kadeploy.db")
    cluster = yaml.safe_load((etc / "c1.conf").read_text())
    # the administrator's console command: the node's BMC's Serial-over-LAN (one BMC here for every node)
    sol = " ".join(bmcsim.ipmitool_command(ADDRESS, USER, PASSWORD, "sol", "activate", port=machine.ipmi_port))
    cluster["remoteops"]["console"] = [{"name": "soft", "cmd": sol}]
    (etc / "c1.conf").write_text(yaml.safe_dump(cluster))
    (etc / "keys").mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(etc / "keys" / "id_deploy")], check=True,
                   timeout=30)
    (etc / "client.conf").write_text(yaml.safe_dump(
        {"default": "t", "servers": [{"name": "t", "hostname": ADDRESS, "port": port, "secure": False}]}))
    env = dict(os.environ, KADEPLOY3_CONFIG_DIR=str(etc), KADEPLOY3_LOG_DIR=str(tmp_path / "kadeploy"),
               KADEPLOY3_RUN_DIR=str(tmp_path / "kadeploy"), USER="root", TERM="dumb")
    with (tmp_path / "kadeploy" / "kadeploy3d.out").open("wb") as log:
        server = subprocess.Popen(["kadeploy3d"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_answering(f"http://{ADDRESS}:{port}/version", server, 30,
                       printed=lambda: (tmp_path / "kadeploy" / "kadeploy3d.out").read_text(errors="replace")[-2000:])
        pid, fd = pty.fork()
        if pid == 0:  # the child: kaconsole3 on a terminal, as a user runs it
            os.execvpe("kaconsole3", ["kaconsole3", "-m", "node-1.c1.test"], env)
        try:
            banner = read_until(fd, b"SOL Session operational", 30)
            assert b"SOL Session operational" in banner, banner
            os.write(fd, b"\x1b")
            shown = read_until(fd, MENU, 20)
            assert MENU in shown, shown
            assert detach(pid, fd, 20) == 0
        finally:
            reap(pid, fd)
    finally:
        stop_process(server)
