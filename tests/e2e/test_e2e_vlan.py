"""`kadeploy3 --vlan` and `kareboot3 --vlan` as Kadeploy3 does them: the nodes end in the VLAN
(KaVLAN through the server's `network/vlan/set_cmd`, here `kadeploy-testbed vlan`) and are
reached there under their VLAN names (`hostname_suffix` `-kavlan-VLAN_ID`, resolved by the
testbed's /etc/hosts block as a site's DNS would).

In a VLAN a testbed node has its VLAN address (10.200.129.k) and its default one
(10.200.1.k) leads nowhere, as on a site: so a deployment only ends well if the server
writes the final PXE profile under the VLAN address (the node's firmware asks for that
name) and waits for the node there, and a reboot into the deployment environment only
gets its key in if the server opens its SSH session there.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.root, pytest.mark.testbed]


def _bridge_of(node: str) -> str:
    index = node.split(".")[0].rsplit("-", 1)[1]
    return Path(f"/sys/class/net/ktbv{index}/master").resolve().name


def _vlan_name(node: str, vlan: str) -> str:
    short, domain = node.split(".", 1)
    return f"{short}-kavlan-{vlan}.{domain}"


def _profile(site, address: str) -> Path:
    return site.directory / "tftpboot" / "pxelinux.cfg" / "".join(f"{int(p):02X}" for p in address.split("."))


def _answers_ssh(address: str) -> bool:
    try:
        with socket.create_connection((address, 22), timeout=2):
            return True
    except OSError:
        return False


def test_vlan_deployment_ends_with_the_nodes_reached_by_their_vlan_names(site, tmp_path) -> None:
    n5, n6 = site.nodes[4:6]
    ok_file, ko_file = tmp_path / "ok", tmp_path / "ko"
    try:
        result = site.tool("kadeploy3", "-e", "debian12-min", "-m", n5, "-m", n6, "-k", f"{site.user_key}.pub",
                           "--vlan", "100", "-o", str(ok_file), "-n", str(ko_file), "-d")
        assert sorted(ok_file.read_text().split()) == sorted([n5, n6]), result.stdout
        assert ko_file.read_text().strip() == ""
        status = site.node_status()
        for node in (n5, n6):
            vlan_name = _vlan_name(node, "100")
            vlan_address, default_address = socket.gethostbyname(vlan_name), socket.gethostbyname(node)
            assert status[node]["vlan"] == 100, status[node]
            assert _bridge_of(node) == "ktb0v100"
            # the deployed system answers under its VLAN name only
            site.assert_debian_on_partition(vlan_name)
            assert not _answers_ssh(default_address), f"{node} still answers at {default_address}"
            # the final profile was written under the VLAN address, which the node booted from, and the default one
            written = _profile(site, vlan_address).read_text()
            assert "APPEND hd0 3" in written, written
            assert _profile(site, default_address).read_text() == written
            console = (site.directory / "run" / node.split(".")[0] / "console.log").read_text()
            loaded = [line for line in console.splitlines() if "PXE: loaded" in line]
            assert loaded[-1].endswith(f"pxelinux.cfg/{_profile(site, vlan_address).name}"), loaded[-3:]
        # the VLAN move happened before the final boot was awaited, as in Kadeploy3
        lines = result.stdout.splitlines()
        set_vlan = [i for i, line in enumerate(lines) if "set_vlan" in line]
        wait_reboot = [i for i, line in enumerate(lines) if "wait_reboot" in line]
        assert set_vlan and wait_reboot and set_vlan[-1] < wait_reboot[-1], result.stdout

        # kareboot3 into the deployment environment of the VLAN: its profile under the VLAN
        # address, then the key sent over SSH to the node where it now is
        before = site.node_status()[n5]["boot_count"]
        site.tool("kareboot3", "-r", "deploy_env", "-m", n5, "-k", f"{site.user_key}.pub", "--vlan", "100",
                  "-o", str(tmp_path / "reboot.ok"))
        assert (tmp_path / "reboot.ok").read_text().split() == [n5]
        entry = site.node_status()[n5]
        assert entry["state"] == "deploy-env" and entry["boot_count"] > before and entry["vlan"] == 100, entry
        assert site.ssh(_vlan_name(n5, "100"), "cat /etc/hostname").stdout.strip() == n5
    finally:
        site.testbed("vlan", "--vlan", "DEFAULT", n5, n6, check=False)
    status = site.node_status()
    assert status[n5]["vlan"] is None and _bridge_of(n5) == "ktb0"


def test_an_invalid_vlan_is_refused_before_any_node_is_touched(site) -> None:
    node = site.nodes[4]
    before = site.node_status()[node]["boot_count"]
    result = site.tool("kareboot3", "-r", "simple", "-m", node, "--vlan", "100;reboot", check=False)
    assert result.returncode != 0
    assert "Invalid VLAN" in result.stdout + result.stderr, result
    assert site.node_status()[node]["boot_count"] == before
