"""The QEMU mode's BMC: OpenIPMI's ipmi_sim wired to a real QEMU, driven by the real ipmitool.

A tiny VM (64 MiB, no disk, no NIC) stands for a node: what is checked is the
power path the cluster's commands take (RMCP+ session, chassis power
on/off/cycle/reset/status) and that the process is the power state.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kadeploy.errors import KadeployError
from kadeploy_testbed.layout import NodeSpec
from kadeploy_testbed.qemu import bmcsim
from kadeploy_testbed.qemu.layout import qmp_socket, run_dir
from kadeploy_testbed.qemu.vm import vm_status
from tests.ports import free_port
from tests.qemu.ipmivm import ipmi_bmc_args, kill_bmc_and_vm, qemu_pid, wait_until
from tests.requirements import require

USER, PASSWORD = "admin", "s3cret"


def _node() -> NodeSpec:
    return NodeSpec(index=1, cluster="qemu", ip="10.202.1.1", mac="02:00:0a:ca:01:01", bmc_ip="127.0.0.1")


def test_lan_conf_names_the_bmc_address_the_vm_link_the_start_script_and_the_user(tmp_path: Path) -> None:
    node = _node()
    conf = bmcsim.lan_conf(tmp_path, node, USER, PASSWORD, ipmi_port=1623, vm_port=19002)
    assert "addr 127.0.0.1 1623" in conf
    assert "serial kcs 127.0.0.1 19002 codec VM" in conf
    assert f'startcmd "{run_dir(tmp_path, node)}/start-vm"' in conf
    assert "startnow false" in conf
    assert f'user 2 true "{USER}" "{PASSWORD}" admin' in conf


@pytest.mark.parametrize("password", ['pa"ss', "pa ss", "pa\\ss", "pa\nss", ""])
def test_lan_conf_refuses_what_it_cannot_quote(tmp_path: Path, password: str) -> None:
    with pytest.raises(KadeployError, match="BMC password"):
        bmcsim.lan_conf(tmp_path, _node(), USER, password)


def test_lan_conf_refuses_a_directory_with_a_space(tmp_path: Path) -> None:
    with pytest.raises(KadeployError, match="testbed directory"):
        bmcsim.lan_conf(tmp_path / "a b", _node(), USER, PASSWORD)


def test_power_refuses_an_unknown_action() -> None:
    with pytest.raises(KadeployError, match="expected on, off, cycle or reset"):
        bmcsim.power("127.0.0.1", USER, PASSWORD, "explode")


@pytest.fixture
def bmc(tmp_path: Path) -> Iterator[tuple[Path, NodeSpec, int]]:
    require("ipmi_sim", "ipmitool", "qemu")
    node = _node()
    ipmi_port, vm_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
    run = run_dir(tmp_path, node)
    run.mkdir(parents=True)
    qemu = ["qemu-system-x86_64", "-name", "bmc-test", "-machine", "pc", "-accel", "tcg", "-m", "64", "-nodefaults",
            "-display", "none",
            *ipmi_bmc_args("127.0.0.1", vm_port),
            "-qmp", f"unix:{qmp_socket(tmp_path, node)},server=on,wait=off", "-pidfile", str(run / "qemu.pid")]
    bmcsim.write_bmc_files(tmp_path, node, qemu, USER, PASSWORD, ipmi_port=ipmi_port, vm_port=vm_port)
    pid = bmcsim.start_bmc(tmp_path, node, USER, PASSWORD, ipmi_port=ipmi_port)
    try:
        yield tmp_path, node, ipmi_port
    finally:
        kill_bmc_and_vm(pid, tmp_path, node)


def test_ipmitool_powers_the_vm_through_ipmi_sim(bmc: tuple[Path, NodeSpec, int]) -> None:
    directory, node, port = bmc
    status = lambda: bmcsim.power_status("127.0.0.1", USER, PASSWORD, port=port)  # noqa: E731
    assert status() == "off" and vm_status(directory, node) == "off"
    # a reset acts on a running machine only (ipmi_sim refuses it: "Invalid data field in
    # request"): why the cluster's hard reboot is a power cycle
    with pytest.raises(KadeployError, match="power reset"):
        bmcsim.power("127.0.0.1", USER, PASSWORD, "reset", port=port)
    time.sleep(1)
    assert status() == "off" and qemu_pid(directory, node) is None

    bmcsim.power("127.0.0.1", USER, PASSWORD, "on", port=port)
    wait_until(lambda: vm_status(directory, node) == "running", "running after power on")
    assert status() == "on"
    first = qemu_pid(directory, node)

    bmcsim.power("127.0.0.1", USER, PASSWORD, "reset", port=port)  # in place: same process
    time.sleep(1)
    assert qemu_pid(directory, node) == first and status() == "on"

    bmcsim.power("127.0.0.1", USER, PASSWORD, "cycle", port=port)  # off then on: a new process
    wait_until(lambda: qemu_pid(directory, node) not in (None, first), "restarted by power cycle")
    wait_until(lambda: vm_status(directory, node) == "running", "running after power cycle")

    bmcsim.power("127.0.0.1", USER, PASSWORD, "off", port=port)
    wait_until(lambda: qemu_pid(directory, node) is None, "stopped by power off", timeout=bmcsim.POWEROFF_WAIT + 10)
    assert status() == "off" and vm_status(directory, node) == "off"


def test_a_wrong_password_is_refused_by_the_bmc(bmc: tuple[Path, NodeSpec, int]) -> None:
    _directory, _node_spec, port = bmc
    with pytest.raises(KadeployError, match="BMC 127.0.0.1"):
        bmcsim.power("127.0.0.1", USER, "wrong", "on", port=port)
