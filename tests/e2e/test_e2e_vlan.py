"""`kadeploy3 --vlan`: the nodes end the deployment in the VLAN (KaVLAN through the
cluster's `network/vlan/set_cmd`, here `kadeploy-testbed vlan`), booted on the deployed
system, which the server still reaches (a frontend routes to its VLANs)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.root, pytest.mark.testbed]


def _bridge_of(site, node: str) -> str:
    index = node.split(".")[0].rsplit("-", 1)[1]
    return Path(f"/sys/class/net/ktbv{index}/master").resolve().name


def test_vlan_deployment_ends_with_the_nodes_in_the_vlan(site, tmp_path) -> None:
    n5, n6 = site.nodes[4:6]
    ok_file, ko_file = tmp_path / "ok", tmp_path / "ko"
    try:
        result = site.tool("kadeploy3", "-e", "debian12-min", "-m", n5, "-m", n6, "-k", f"{site.user_key}.pub",
                           "--vlan", "100", "-o", str(ok_file), "-n", str(ko_file), "-d")
        assert sorted(ok_file.read_text().split()) == sorted([n5, n6]), result.stdout
        assert ko_file.read_text().strip() == ""
        status = site.node_status()
        for node in (n5, n6):
            assert status[node]["vlan"] == 100, status[node]
            assert _bridge_of(site, node) == "ktb0v100"
            site.assert_debian_on_partition(node)
        # the VLAN move happened before the final boot was awaited, as in Kadeploy3
        lines = result.stdout.splitlines()
        set_vlan = [i for i, line in enumerate(lines) if "set_vlan" in line]
        wait_reboot = [i for i, line in enumerate(lines) if "wait_reboot" in line]
        assert set_vlan and wait_reboot and set_vlan[-1] < wait_reboot[-1], result.stdout
    finally:
        site.testbed("vlan", "--vlan", "DEFAULT", n5, n6, check=False)
    status = site.node_status()
    assert status[n5]["vlan"] is None and _bridge_of(site, n5) == "ktb0"
