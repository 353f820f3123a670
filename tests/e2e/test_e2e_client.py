"""What the user tools add around a deployment: Ctrl-C cancels the workflow on the server and
releases its nodes; `--json` writes a machine-readable result that matches the nodes.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
import yaml
from scenario import machine_args

pytestmark = [pytest.mark.e2e, pytest.mark.root, pytest.mark.testbed]


def _micro(site, wid_file, node: str) -> str | None:
    if not wid_file.exists() or not wid_file.read_text().strip():
        return None
    response = site.api("GET", f"/deployment/{wid_file.read_text().strip()}/state")
    return (response.json().get(node) or {}).get("micro") if response.status_code == 200 else None


def test_ctrl_c_cancels_the_deployment_then_json_result_of_a_new_one(site, tmp_path) -> None:
    nodes = site.nodes[:2]
    machines = machine_args(nodes)
    wid_file = tmp_path / "wid"
    process = subprocess.Popen(["kadeploy3", "-e", "debian12-min", *machines, "--write-workflow-id", str(wid_file)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=dict(site.env, USER="root"))
    try:
        deadline = time.monotonic() + 120
        while _micro(site, wid_file, nodes[0]) not in ("wait_reboot", "send_key_in_deploy_env",
                                                         "create_partition_table", "format_deploy_part"):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the deployment did not start"
            time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    wid = wid_file.read_text().strip()
    assert "SIGINT trapped" in stdout + stderr
    # cancelled on the server: the workflow ends (or is gone) soon, and its nodes are not held any more
    deadline = time.monotonic() + 45
    while True:
        info = site.api("GET", f"/deployment/{wid}")
        if info.status_code != 200 or info.json().get("done"):
            break
        assert time.monotonic() < deadline, f"still running after Ctrl-C: {info.text}"
        time.sleep(0.5)
    states = yaml.safe_load(site.tool("kanodes3", "-s", *machines).stdout)
    assert all(states[n]["state"] != "deploying" for n in nodes), states
    # no --force needed: the nodes were released
    result = site.tool("kadeploy3", "-e", "debian12-min", *machines, "-k", f"{site.user_key}.pub",
                       "--json", str(tmp_path / "result.json"))
    document = json.loads((tmp_path / "result.json").read_text())
    assert sorted(document["ok"]) == sorted(nodes) and document["ko"] == [], result.stdout
    assert document["wid"].startswith("D-") and document["wid"] in result.stdout
    for node in nodes:
        assert document["nodes"][node]["state"] == "ok"
        site.assert_debian_on_partition(node)
