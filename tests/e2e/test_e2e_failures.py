"""Failure scenarios: a node that does not boot, the same healed by `--retry-failed`, a node
lost in the middle of the broadcast, and kadeploy3d killed during a deployment.

Automata are forced without retries so that a failure shows at once and the suite stays
short; every verdict is checked against the nodes themselves.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import yaml
from scenario import machine_args

pytestmark = [pytest.mark.e2e, pytest.mark.root, pytest.mark.testbed]

NO_RETRIES = ("SetDeploymentEnv|SetDeploymentEnvUntrusted:0:120&BroadcastEnv|BroadcastEnvKascade:0:200"
              "&BootNewEnv|BootNewEnvClassical:0:120")


def _deploy(site, nodes, out: Path, tag: str, *args: str) -> list[str]:
    return ["kadeploy3", "-e", "debian12-min", *machine_args(nodes), "-k", f"{site.user_key}.pub",
            "-o", str(out / f"{tag}.ok"), "-n", str(out / f"{tag}.ko"), "--write-workflow-id", str(out / f"{tag}.wid"),
            *args]


def _wait_for(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def _micro_of(site, wid_file: Path, node: str) -> str | None:
    if not wid_file.exists() or not wid_file.read_text().strip():
        return None
    wid = wid_file.read_text().strip()
    response = site.api("GET", f"/deployment/{wid}/state")
    if response.status_code != 200:
        return None
    return (response.json().get(node) or {}).get("micro")


@pytest.fixture
def clear_faults(site):
    yield
    for node in site.nodes:
        site.testbed("fault", node, "boot-failure-rate", "off", check=False)


def test_boot_failure_and_node_lost_mid_broadcast(site, tmp_path, clear_faults) -> None:
    n1, n2, n3, n4 = site.nodes[:4]
    site.testbed("fault", n1, "boot-failure-rate", "1")
    wid_file = tmp_path / "b.wid"
    commands = {
        "boot": _deploy(site, [n1, n2], tmp_path, "a", "--force-steps", NO_RETRIES),
        "broadcast": _deploy(site, [n3, n4], tmp_path, "b", "--force-steps", NO_RETRIES),
    }
    env = dict(site.env, USER="root")
    processes = {name: subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                 for name, argv in commands.items()}
    try:
        _wait_for(lambda: _micro_of(site, wid_file, n3) == "send_environment", 150, "the broadcast to start")
        site.testbed("power", "off", n3)   # n3 dies in the middle of the broadcast
        outputs = {name: process.communicate(timeout=600) for name, process in processes.items()}
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
    # the node that never boots: KO with the reference's message, the other one deployed
    assert (tmp_path / "a.ok").read_text().split() == [n2], outputs["boot"][0]
    assert (tmp_path / "a.ko").read_text().split() == [n1]
    assert "Unreachable after the reboot" in outputs["boot"][0]
    site.assert_debian_on_partition(n2)
    assert site.node_status()[n1]["state"] == "hung"
    # the node lost mid-broadcast: KO, and the rest of the chain got the whole image
    assert (tmp_path / "b.ok").read_text().split() == [n4], outputs["broadcast"][0]
    assert (tmp_path / "b.ko").read_text().split() == [n3]
    site.assert_debian_on_partition(n4)
    assert site.node_status()[n3]["power"] == "off"


def test_retry_failed_redeploys_the_node_whose_boot_failed(site, tmp_path, clear_faults) -> None:
    n1, n2 = site.nodes[:2]
    site.testbed("fault", n1, "boot-failure-rate", "1")
    process = subprocess.Popen(_deploy(site, [n1, n2], tmp_path, "r", "--force-steps", NO_RETRIES,
                                       "--retry-failed", "2"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(site.env, USER="root"))
    try:
        # the first boot of n1 fails; the fault is then repaired, as an operator would
        _wait_for(lambda: site.node_status()[n1]["state"] == "hung", 120, "the injected boot failure")
        site.testbed("fault", n1, "boot-failure-rate", "off")
        stdout, stderr = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
    assert sorted((tmp_path / "r.ok").read_text().split()) == sorted([n1, n2]), stdout + stderr
    assert (tmp_path / "r.ko").read_text().strip() == ""
    for node in (n1, n2):
        site.assert_debian_on_partition(node)


def test_server_killed_mid_deployment_releases_nodes_and_redeploy_succeeds(site, tmp_path) -> None:
    n3, n4 = site.nodes[2:4]
    wid_file = tmp_path / "k.wid"
    process = subprocess.Popen(_deploy(site, [n3, n4], tmp_path, "k"), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=dict(site.env, USER="root"))
    try:
        _wait_for(lambda: _micro_of(site, wid_file, n3) in ("wait_reboot", "send_key_in_deploy_env",
                                                            "create_partition_table"), 120, "the deployment to run")
        site.stop_server(crash=True)
        process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    site.start_server()
    states = yaml.safe_load(site.tool("kanodes3", "-s", "-m", n3, "-m", n4).stdout)
    for node in (n3, n4):
        assert states[node]["state"] not in ("deploying",), states
    # no --force: the nodes must have been released by the restarted server
    result = site.tool("kadeploy3", "-e", "debian12-min", "-m", n3, "-m", n4, "-k", f"{site.user_key}.pub",
                       "-o", str(tmp_path / "again.ok"))
    assert sorted((tmp_path / "again.ok").read_text().split()) == sorted([n3, n4]), result.stdout
    for node in (n3, n4):
        site.assert_debian_on_partition(node)
