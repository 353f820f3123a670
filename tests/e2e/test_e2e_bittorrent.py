"""BroadcastEnvBittorrent in a whole deployment on the netns testbed: two nodes, one batch.

The nodes run the host's aria2c in their namespaces; `mount_tmp_part` mounts
each node's tmp partition where the image is stored before it is unpacked.
The testbed's fresh disks have an unformatted tmp partition, so the request
asks for it to be formatted (`-r ext4`: format_tmp_part, which Kadeploy3 runs
only on request); a node whose tmp partition cannot be mounted fails
mount_tmp_part with mount's message, as in Kadeploy3.
"""

from __future__ import annotations

import pytest
from scenario import assert_batch_ok, workflow_id

pytestmark = [pytest.mark.e2e, pytest.mark.root, pytest.mark.testbed]


def test_a_bittorrent_deployment_boots_debian_on_both_nodes(site, tmp_path) -> None:
    nodes = site.nodes[4:6]
    steps = ("SetDeploymentEnv|SetDeploymentEnvUntrusted:0:200&BroadcastEnv|BroadcastEnvBittorrent:0:200"
             "&BootNewEnv|BootNewEnvClassical:0:150")
    results = site.tools({node: ["kadeploy3", "-e", "debian12-min", "-m", node, "-k", f"{site.user_key}.pub",
                                 "-r", "ext4", "-o", str(tmp_path / f"{node}.ok"),
                                 "-n", str(tmp_path / f"{node}.ko"),
                                 "-V", "4", "--force-steps", steps] for node in nodes})
    assert_batch_ok(results, tmp_path)
    for node in nodes:
        site.assert_debian_on_partition(node)
        assert "send_environment" in results[node].stdout
        row = site.tool("kastat3", "-w", workflow_id(results[node]), "-F", "step1,step2,step3,success").stdout.split()
        assert row == ["SetDeploymentEnvUntrusted,BroadcastEnvBittorrent,BootNewEnvClassical,true"], row
