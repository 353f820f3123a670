"""The BMC burst (issue 20, point 7): 16 nodes power-cycled three times back to back through
IPMI by kapower3, while other IPMI clients hold every session slot of some BMCs.

Why: real BMCs accept a few concurrent RMCP+ sessions and answer "insufficient resources
for session" beyond that; the testbed's BMCs do the same. A server that ran ipmitool once
per node and gave up would fail those nodes; kadeploy3d paces session set-up per BMC
(`windows/bmc` in server.conf) and retries a refused session with backoff, so no node
fails. The burst's duration is printed (run with -s to see it).

Own 16-node testbed in its own directory (not the e2e one), kadeploy3d started on the
configuration it wrote; everything is taken down at the end. Run under
`flock /tmp/kadeploy-lab.lock`.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from kadeploy_testbed.answering import wait_answering
from kadeploy_testbed.bmc import DEFAULT_MAX_SESSIONS

pytestmark = [pytest.mark.root, pytest.mark.testbed]

NODES = 16
ROUNDS = 3
SERVER_URL = "http://10.200.0.1:25300/version"
# BMCs whose every slot is held by other clients while a kapower3 starts, and for how long
CROWDED_BMCS = 4
HOLD_SECONDS = 3.0
REFUSED = "insufficient resources for session"


@dataclass
class Bed:
    directory: Path
    nodes: list[str]
    env: dict[str, str]
    bmc_user: str
    bmc_password: str
    max_sessions: int

    def bmc(self, node: str) -> str:
        short, cluster = node.split(".")[:2]
        return f"{short}-bmc.{cluster}.testbed"

    def ipmitool(self, node: str, *command: str) -> list[str]:
        return ["ipmitool", "-I", "lanplus", "-N", "1", "-R", "2", "-H", self.bmc(node),
                "-U", self.bmc_user, "-P", self.bmc_password, *command]


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    if subprocess.run(["ip", "link", "show", "ktb0"], capture_output=True).returncode == 0:
        pytest.fail("A testbed is already up (bridge ktb0 exists): take it down with `kadeploy-testbed down` first")
    directory = tmp_path_factory.mktemp("burst") / "testbed"
    testbed = ["kadeploy-testbed", "--dir", str(directory)]
    server: subprocess.Popen | None = None
    try:
        subprocess.run([*testbed, "up", "--nodes", str(NODES), "--disk-size", "1G", "--firmware-delay", "1",
                        "--seed", "1"], check=True, capture_output=True, timeout=300)
        etc = directory / "etc"
        env = dict(os.environ, KADEPLOY3_CONFIG_DIR=str(etc), KADEPLOY3_LOG_DIR=str(directory / "log"),
                   KADEPLOY3_RUN_DIR=str(directory / "run"), USER="root")
        (directory / "log").mkdir(exist_ok=True)
        (directory / "run").mkdir(exist_ok=True)
        with (directory / "log" / "kadeploy3d.out").open("ab") as log:
            server = subprocess.Popen(["kadeploy3d"], env=env, stdout=log, stderr=subprocess.STDOUT)
        wait_answering(SERVER_URL, server, 30)
        nodes = [line.strip() for line in (directory / "nodes").read_text().splitlines() if line.strip()]
        state = yaml.safe_load((directory / "state.json").read_text())
        yield Bed(directory, nodes, env, state["bmc_user"], state["bmc_password"], DEFAULT_MAX_SESSIONS)
    finally:
        if server is not None and server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        subprocess.run([*testbed, "down"], capture_output=True, timeout=120, check=False)


class SlotHolders:
    """Other IPMI clients: `ipmitool shell` processes, each holding one session of a BMC open."""

    def __init__(self, bed: Bed, nodes: list[str]) -> None:
        self.processes: list[subprocess.Popen[str]] = []
        for node in nodes:
            for _ in range(bed.max_sessions):
                process = subprocess.Popen(bed.ipmitool(node, "shell"), stdin=subprocess.PIPE,
                                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                self.processes.append(process)
                # the session opens with the first command; wait for its answer
                assert process.stdin is not None and process.stdout is not None
                process.stdin.write("chassis power status\n")
                process.stdin.flush()
                line = process.stdout.readline()
                while line and "Chassis Power is" not in line:
                    line = process.stdout.readline()
                assert "Chassis Power is" in line, f"{node}: a slot holder could not open its session"

    def release(self) -> None:
        for process in self.processes:
            if process.stdin is not None and not process.stdin.closed:
                process.stdin.write("exit\n")
                process.stdin.close()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes = []


def _kapower(bed: Bed, action: str, tmp_path: Path, holders_for: list[str]) -> tuple[float, str]:
    """One kapower3 on every node, with every slot of `holders_for`'s BMCs held for HOLD_SECONDS."""
    ok, ko = tmp_path / f"{action}.ok", tmp_path / f"{action}.ko"
    for path in (ok, ko):
        path.unlink(missing_ok=True)
    holders = SlotHolders(bed, holders_for)
    try:
        # the BMCs really are full: one more client is refused as a real BMC refuses it
        probe = subprocess.run(bed.ipmitool(holders_for[0], "chassis", "power", "status"), capture_output=True,
                               text=True, timeout=30)
        assert probe.returncode != 0 and REFUSED in probe.stderr, probe.stderr
        start = time.monotonic()
        process = subprocess.Popen(["kapower3", f"--{action}", "-l", "hard", "-f", str(bed.directory / "nodes"),
                                    "-o", str(ok), "-n", str(ko)], env=bed.env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        time.sleep(HOLD_SECONDS)
    finally:
        holders.release()
    output, _ = process.communicate(timeout=300)
    elapsed = time.monotonic() - start
    failed = ko.read_text().split() if ko.exists() else []
    assert process.returncode == 0 and not failed, f"kapower3 --{action}: failed on {failed}\n{output}"
    assert sorted(ok.read_text().split()) == sorted(bed.nodes), output
    assert "Unable to establish" not in output, output
    return elapsed, output


def test_sixteen_nodes_power_cycled_three_times_while_bmcs_are_crowded(bed: Bed, tmp_path: Path) -> None:
    assert len(bed.nodes) == NODES
    timings: list[float] = []
    start = time.monotonic()
    for round_number in range(ROUNDS):
        # a different set of BMCs is crowded each time
        crowded = [bed.nodes[(round_number * CROWDED_BMCS + k) % NODES] for k in range(CROWDED_BMCS)]
        for action in ("off", "on"):
            elapsed, _ = _kapower(bed, action, tmp_path, crowded)
            timings.append(elapsed)
    total = time.monotonic() - start
    print(f"\nBMC burst: {NODES} nodes x {ROUNDS} power cycles in {total:.1f}s "
          f"(kapower3 runs: {', '.join(f'{t:.1f}s' for t in timings)})")
    # every node ends powered on, as the last kapower3 --on left it
    status = subprocess.run(["kapower3", "--status", "-f", str(bed.directory / "nodes")], env=bed.env,
                            capture_output=True, text=True, timeout=300)
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.count("Chassis Power is on") == NODES, status.stdout
