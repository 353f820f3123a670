"""The PDU in the netns testbed: grouped very_hard commands through kadeploy3d cut real nodes' power.

A 4-node testbed brought up with `--power-method pdu`: IPMI for the hard
levels and, as very_hard, the administrator's script around `snmpset` that
switches the PDU outlet feeding a group (2 nodes per outlet; the daemon's
pysnmp agent powers both nodes of an outlet). Shown through the real server
and kapower3: a very_hard power-off of a complete group powers both nodes off
with one command, and a node whose group is not all in the operation is not
powered (Kadeploy3's rule) while the others go on.
Run under `flock /tmp/kadeploy-lab.lock` (one testbed at a time).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kadeploy_testbed import cli
from kadeploy_testbed.answering import wait_answering
from kadeploy_testbed.layout import SERVER_IP
from tests.processgroups import stop_process
from tests.testbed.deployrootfs import deploy_rootfs

pytestmark = [pytest.mark.root, pytest.mark.testbed]

NODES = [f"node-{k}.c1.testbed" for k in range(1, 5)]


class Site:
    __test__ = False

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        run = directory / "kadeploy-run"
        self.env = dict(os.environ, KADEPLOY3_CONFIG_DIR=str(directory / "etc"), KADEPLOY3_LOG_DIR=str(run),
                        KADEPLOY3_RUN_DIR=str(run), USER="root")

    def status(self) -> dict[str, dict[str, object]]:
        return {entry["node"]: entry for entry in cli.control(self.directory, {"op": "status"})["nodes"]}

    def kapower(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["kapower3", "-V", "3", *args], env=self.env, capture_output=True, text=True,
                              timeout=120)

    def wait_power(self, nodes: list[str], power: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.status()[node]["power"] == power for node in nodes):
                return
            time.sleep(0.2)
        pytest.fail(f"{nodes}: not all {power} within {timeout}s: {self.status()}")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    directory = tmp_path_factory.mktemp("ktb-pdu") / "testbed"
    assert cli.main(["--dir", str(directory), "up", "--nodes", "4", "--disk-size", "2G", "--firmware-delay", "0.5",
                     "--seed", "1", "--power-method", "pdu", "--deploy-rootfs", str(deploy_rootfs())]) == 0
    site = Site(directory)
    server = None
    try:
        (directory / "kadeploy-run").mkdir()
        with (directory / "kadeploy-run" / "kadeploy3d.out").open("wb") as log:
            server = subprocess.Popen(["kadeploy3d"], env=site.env, stdout=log, stderr=subprocess.STDOUT)
        wait_answering(f"http://{SERVER_IP}:25300/version", server, 30)
        yield site
    finally:
        if server is not None:
            stop_process(server)
        cli.main(["--dir", str(directory), "down"])


def test_the_pdu_script_powers_an_outlets_nodes(site: Site) -> None:
    script = site.directory / "etc" / "scripts" / "pdu"
    done = subprocess.run([str(script), "on", "node-1,node-2"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    site.wait_power(NODES[:2], "on")
    assert [site.status()[node]["power"] for node in NODES[2:]] == ["off", "off"]


def test_very_hard_power_through_kadeploy_switches_whole_outlets(site: Site) -> None:
    site.wait_power(NODES[:2], "on")
    off = site.kapower("--off", "--op-level", "very_hard", "-m", NODES[0], "-m", NODES[1])
    assert off.returncode == 0, off.stdout + off.stderr
    assert "Performing a very_hard power_off on node-[1-2]" in off.stdout
    site.wait_power(NODES[:2], "off")
    # node-3's outlet also feeds node-4, which is not in the operation: node-3 is not powered
    on = site.kapower("--on", "--op-level", "very_hard", "-m", NODES[0], "-m", NODES[2])
    output = on.stdout + on.stderr
    assert "The power operation failed on nodes" in output, output
    assert ("node node-3.c1.testbed belongs to the group [node-3.c1.testbed,node-4.c1.testbed] and not all "
            "the nodes of the group are in the operation") in output
    site.wait_power([NODES[0]], "off", timeout=2)  # node-1's group was not complete either
    assert [site.status()[node]["power"] for node in NODES[2:]] == ["off", "off"]
    both = site.kapower("--on", "--op-level", "very_hard", "-m", NODES[2], "-m", NODES[3])
    assert both.returncode == 0, both.stdout + both.stderr
    site.wait_power(NODES[2:], "on")
