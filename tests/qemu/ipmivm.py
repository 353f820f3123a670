"""The tiny VM behind an ipmi_sim BMC that the QEMU-mode BMC tests share (bmcsim, Redfish, SOL).

Why one home: those tests each start a 64 MiB QEMU whose power belongs to
OpenIPMI's ipmi_sim (it starts and ends the QEMU process); they wire the VM to
its BMC the same way, read the VM's process from the pid file QEMU writes,
poll for power changes, and kill both processes at the end.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kadeploy_testbed.layout import NodeSpec
from kadeploy_testbed.qemu.layout import run_dir


def ipmi_bmc_args(address: str, vm_port: int) -> list[str]:
    """QEMU's side of the BMC link: an external IPMI BMC (ipmi_sim's `vm_port`) behind a KCS interface."""
    return ["-chardev", f"socket,id=ipmi0,host={address},port={vm_port},reconnect=1",
            "-device", "ipmi-bmc-extern,id=bmc0,chardev=ipmi0", "-device", "isa-ipmi-kcs,bmc=bmc0"]


def qemu_pid(directory: Path, node: NodeSpec) -> int | None:
    """The VM's QEMU process if it is alive (its pid file, written by QEMU itself), else None."""
    try:
        pid = int((run_dir(directory, node) / "qemu.pid").read_text())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll `predicate` until it holds; fail the test naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    pytest.fail(f"not {what} after {timeout:.0f}s")


def kill_bmc_and_vm(bmc_pid: int, directory: Path, node: NodeSpec) -> None:
    """SIGKILL ipmi_sim (started by the test) and the VM's QEMU if it runs (ipmi_sim's child)."""
    for victim in (bmc_pid, qemu_pid(directory, node)):
        if victim:
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                pass
