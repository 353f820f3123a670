"""`kadeploy3 --resume WID` (beyond Kadeploy3): a breakpointed deployment finishes without redoing its first steps."""

from __future__ import annotations

import pytest
from scenario import workflow_id

pytestmark = [pytest.mark.e2e, pytest.mark.root, pytest.mark.testbed]


def test_resume_finishes_a_breakpointed_deployment_without_rebooting_first(site) -> None:
    node = site.nodes[0]
    key = f"{site.user_key}.pub"
    first = site.tool("kadeploy3", "-e", "debian12-min", "-m", node, "-k", key, "-V", "4",
                      "--breakpoint", "BroadcastEnvKascade:install_bootloader")
    assert "The deployment is successful on nodes" in first.stdout  # breakpointed nodes count as OK
    assert site.node_status()[node]["state"] == "deploy-env"
    site.ssh(node, "test -e /mnt/dest/etc/os-release && echo resumed-here > /mnt/dest/root/marker")

    resumed = site.tool("kadeploy3", "--resume", workflow_id(first), "-m", node, "-k", key, "-V", "4")
    assert "The deployment is successful on nodes" in resumed.stdout, resumed.stdout
    # it went on from the breakpoint: no new trip through the deployment environment, no new broadcast
    assert "SetDeploymentEnvUntrusted" not in resumed.stdout
    assert "send_environment" not in resumed.stdout
    assert "install_bootloader" in resumed.stdout
    site.assert_debian_on_partition(node)
    # the file written while the node waited at the breakpoint is in the deployed system
    assert site.ssh(node, "cat /root/marker").stdout.strip() == "resumed-here"
