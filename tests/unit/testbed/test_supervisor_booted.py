"""A netns node's state is its booting system's only once nodeinit announces its services listen.

The announcement travels through the node's real control fifo; only the one of
the boot in progress counts, so a system killed just after announcing cannot
pass the next boot off as ready (which made deploy-env show before port 25300
listened, the flaky test_each_pxe_method_boots_the_deployment_kernel).
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from kadeploy_testbed.layout import build_layout
from kadeploy_testbed.state import TestbedState, node_run_dir
from kadeploy_testbed.supervisor import BOOTING, NodeSupervisor, TestbedContext


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[NodeSupervisor]:
    state = TestbedState(directory=str(tmp_path), nodes=1, clusters=1)
    node = build_layout(1).nodes[0]
    (node_run_dir(tmp_path, node) / "ctl").mkdir(parents=True)
    loop = asyncio.new_event_loop()
    sup = NodeSupervisor(node, TestbedContext(state, "digest", random.Random(1)), loop)
    sup.open_control_fifo()
    try:
        yield sup
    finally:
        sup.close_control_fifo()
        loop.close()


def announce(sup: NodeSupervisor, line: str) -> None:
    """What nodeinit's `announce` does: one line into the fifo; then the loop's reader callback."""
    fd = os.open(sup.run_dir / "ctl" / "ctl", os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(fd, line.encode() + b"\n")
    finally:
        os.close(fd)
    sup._on_fifo()


def booting(sup: NodeSupervisor, boot: int, into: str) -> None:
    """The state `_run_node` leaves while the system it started comes up."""
    sup.boot_count = boot
    sup._booting_into = into
    sup._set_phase(BOOTING, into)


def test_the_announcement_of_the_boot_in_progress_ends_booting(supervisor: NodeSupervisor) -> None:
    booting(supervisor, 3, "deploy-env")
    assert (supervisor.phase, supervisor.detail) == ("booting", "deploy-env")
    announce(supervisor, "booted 2")  # the previous system's, read late
    assert supervisor.phase == "booting"
    announce(supervisor, "booted 3")
    assert (supervisor.phase, supervisor.detail) == ("deploy-env", "")
    announce(supervisor, "booted 3 sshd not listening on 22")  # a repeat changes nothing
    assert (supervisor.phase, supervisor.detail) == ("deploy-env", "")


def test_what_did_not_come_up_is_the_detail(supervisor: NodeSupervisor) -> None:
    booting(supervisor, 1, "partition 3")
    announce(supervisor, "booted 1 sshd not listening on 22")
    assert (supervisor.phase, supervisor.detail) == ("partition 3", "sshd not listening on 22")


def test_an_announcement_after_power_off_is_ignored(supervisor: NodeSupervisor) -> None:
    booting(supervisor, 5, "deploy-env")
    supervisor._set_phase("off")
    announce(supervisor, "booted 5")
    assert supervisor.phase == "off"
