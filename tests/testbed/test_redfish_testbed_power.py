"""Redfish in the netns testbed: the daemon's sushy-tools emulator powers the real nodes.

A 2-node testbed brought up with `--power-method redfish`: its cluster file
powers the nodes with the `redfish` driver (HTTPS, the service's own
certificate as `ca_file`), soft levels by ssh and very_hard by IPMI. Shown:
Redfish and IPMI act on one power state (each sees what the other did), a
Redfish ForceRestart really reboots the node (its boot counter moves), and
kadeploy3d's kapower3 goes through Redfish, escalating from a failed soft
power-off (ssh to a node without sshd) to Redfish's ForceOff.
Run under `flock /tmp/kadeploy-lab.lock` (one testbed at a time).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kadeploy.boot.drivers import RedfishDriver
from kadeploy_testbed import cli
from kadeploy_testbed.answering import wait_answering
from kadeploy_testbed.configdir import redfish_tls_paths
from kadeploy_testbed.layout import REDFISH_PORT, SERVER_IP
from tests.processgroups import stop_process
from tests.testbed.deployrootfs import deploy_rootfs

pytestmark = [pytest.mark.root, pytest.mark.testbed]

NODE_1, NODE_2 = "node-1.c1.testbed", "node-2.c1.testbed"


class Bed:
    __test__ = False

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ca = redfish_tls_paths(directory)[0]

    def status(self, node: str) -> dict[str, object]:
        answer = cli.control(self.directory, {"op": "status"})
        return {entry["node"]: entry for entry in answer["nodes"]}[node]

    def redfish(self, short_name: str, password: str = "testbed") -> RedfishDriver:
        return RedfishDriver(f"https://{SERVER_IP}:{REDFISH_PORT}/redfish/v1/Systems/{short_name}", "admin",
                             password, verify=str(self.ca))

    def ipmi(self, short_name: str, action: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ipmitool", "-I", "lanplus", "-N", "1", "-R", "3", "-H", f"{short_name}-bmc.c1.testbed",
                               "-U", "admin", "-P", "testbed", "chassis", "power", action],
                              capture_output=True, text=True, timeout=30)

    def wait_boot(self, node: str, after: int, timeout: float = 30) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = self.status(node)
            if int(seen["boot_count"]) > after:
                return seen
            time.sleep(0.2)
        pytest.fail(f"{node}: no boot after #{after} within {timeout}s ({self.status(node)})")


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    directory = tmp_path_factory.mktemp("ktb-redfish") / "testbed"
    assert cli.main(["--dir", str(directory), "up", "--nodes", "2", "--disk-size", "2G", "--firmware-delay", "0.5",
                     "--seed", "1", "--power-method", "redfish", "--deploy-rootfs", str(deploy_rootfs())]) == 0
    try:
        yield Bed(directory)
    finally:
        cli.main(["--dir", str(directory), "down"])


def test_redfish_and_ipmi_act_on_one_power_state(bed: Bed) -> None:
    driver = bed.redfish("node-1")
    assert asyncio.run(driver.status()) == "Off"
    assert bed.ipmi("node-1", "on").returncode == 0
    assert asyncio.run(driver.status()) == "On"
    assert bed.status(NODE_1)["power"] == "on"
    asyncio.run(driver.power("off"))
    assert bed.ipmi("node-1", "status").stdout.strip() == "Chassis Power is off"
    assert bed.status(NODE_1)["power"] == "off"


def test_a_redfish_force_restart_reboots_the_node(bed: Bed) -> None:
    driver = bed.redfish("node-1")
    asyncio.run(driver.power("on"))
    first = int(bed.wait_boot(NODE_1, 0)["boot_count"]) if int(bed.status(NODE_1)["boot_count"]) == 0 \
        else int(bed.status(NODE_1)["boot_count"])
    asyncio.run(driver.power("reset"))
    assert int(bed.wait_boot(NODE_1, first)["boot_count"]) == first + 1
    asyncio.run(driver.power("cycle"))
    bed.wait_boot(NODE_1, first + 1)
    with pytest.raises(Exception, match="HTTP 401"):
        asyncio.run(bed.redfish("node-1", password="wrong").power("off"))
    assert bed.status(NODE_1)["power"] == "on"
    asyncio.run(driver.power("off"))


def test_kapower3_powers_nodes_through_redfish(bed: Bed) -> None:
    run = bed.directory / "kadeploy-run"
    run.mkdir(exist_ok=True)
    env = dict(os.environ, KADEPLOY3_CONFIG_DIR=str(bed.directory / "etc"), KADEPLOY3_LOG_DIR=str(run),
               KADEPLOY3_RUN_DIR=str(run), USER="root")
    with (run / "kadeploy3d.out").open("wb") as log:
        server = subprocess.Popen(["kadeploy3d"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_answering(f"http://{SERVER_IP}:25300/version", server, 30)

        def kapower(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["kapower3", "-m", NODE_2, "-V", "3", *args], env=env, capture_output=True,
                                  text=True, timeout=120)

        before = int(bed.status(NODE_2)["boot_count"])
        on = kapower("--on")
        assert on.returncode == 0, on.stdout + on.stderr
        assert "Performing a hard power_on" in on.stdout
        bed.wait_boot(NODE_2, before)
        status = kapower("--status")
        assert f"{NODE_2}: On" in status.stdout, status.stdout + status.stderr
        # the node is on but hung in its firmware (no PXE profile): no sshd, so the soft
        # power-off (ssh poweroff) fails and Redfish's ForceOff takes over
        off = kapower("--off")
        assert off.returncode == 0, off.stdout + off.stderr
        assert "Performing a soft power_off" in off.stdout and "Performing a hard power_off" in off.stdout
        assert bed.status(NODE_2)["power"] == "off"
        assert f"{NODE_2}: Off" in kapower("--status").stdout
    finally:
        stop_process(server)
