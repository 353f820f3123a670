"""Unit tests (no root): testbed layout, PXE profile parsing, state file, hosts block."""

from __future__ import annotations

from pathlib import Path

import pytest

from kadeploy.errors import KadeployError
from kadeploy_testbed.hostsetup import HOSTS_BEGIN, HOSTS_END, remove_hosts_text, write_hosts_block
from kadeploy_testbed.layout import MAX_NODES, VLANS, build_layout, pxe_candidates
from kadeploy_testbed.profiles import parse_profile, root_partition
from kadeploy_testbed.state import TestbedState, load_state
from kadeploy_testbed.supervisor import read_boot_flag


def test_nodes_split_over_clusters_in_contiguous_blocks() -> None:
    layout = build_layout(5, 2)
    assert [n.hostname for n in layout.nodes] == [
        "node-1.c1.testbed", "node-2.c1.testbed", "node-3.c1.testbed", "node-4.c2.testbed", "node-5.c2.testbed"]
    assert layout.clusters == ("c1", "c2")


def test_addresses_macs_and_bmcs_are_unique_and_in_their_ranges() -> None:
    layout = build_layout(300)
    ips = {n.ip for n in layout.nodes}
    macs = {n.mac for n in layout.nodes}
    bmcs = {n.bmc_ip for n in layout.nodes}
    assert len(ips) == len(macs) == len(bmcs) == 300
    assert layout.nodes[0].ip == "10.200.1.1" and layout.nodes[253].ip == "10.200.1.254"
    assert layout.nodes[254].ip == "10.200.2.1"
    assert all(64 <= int(ip.split(".")[2]) < 128 for ip in bmcs)
    assert layout.nodes[0].mac == "02:00:0a:c8:01:01"


def test_pxe_rom_order_is_mac_then_hex_ip_prefixes_then_default() -> None:
    node = build_layout(1).nodes[0]
    names = pxe_candidates(node)
    assert names[0] == "01-02-00-0a-c8-01-01"
    assert names[1:4] == ["0AC80101", "0AC8010", "0AC801"]
    assert names[-2:] == ["0", "default"]


def test_vlan_addresses_are_unique_and_apart_from_nodes_and_bmcs() -> None:
    layout = build_layout(MAX_NODES)
    vlan_ips = {n.vlan_ip for n in layout.nodes}
    assert len(vlan_ips) == MAX_NODES
    assert all(128 <= int(ip.split(".")[2]) < 192 for ip in vlan_ips)
    assert not vlan_ips & ({n.ip for n in layout.nodes} | {n.bmc_ip for n in layout.nodes})
    node = layout.nodes[0]
    assert node.vlan_ip == "10.200.129.1" and node.address(None) == node.ip and node.address(100) == node.vlan_ip
    assert node.vlan_hostname(101) == "node-1-kavlan-101.c1.testbed"


def test_in_a_vlan_the_pxe_rom_asks_for_its_vlan_address() -> None:
    node = build_layout(1).nodes[0]
    names = pxe_candidates(node, node.vlan_ip)
    assert names[0] == "01-02-00-0a-c8-01-01"  # the MAC does not change with the VLAN
    assert names[1:3] == ["0AC88101", "0AC8810"] and "0AC80101" not in names


@pytest.mark.parametrize("nodes,clusters", [(0, 1), (3, 4), (2, 0)])
def test_bad_sizes_are_user_errors(nodes: int, clusters: int) -> None:
    with pytest.raises(KadeployError, match="--"):
        build_layout(nodes, clusters)


def test_find_accepts_every_name_of_a_node() -> None:
    layout = build_layout(3)
    for name in ("node-2.c1.testbed", "node-2", "10.200.1.2", "node-2-bmc.c1.testbed", "ktb-2"):
        assert layout.find(name).index == 2
    with pytest.raises(KadeployError, match="node-9"):
        layout.find("node-9")


def test_pxelinux_deploy_kernel_profile() -> None:
    choice = parse_profile("PROMPT 1\nDEFAULT network\nLABEL network\n\tKERNEL /kernels/deploy-vmlinuz\n"
                           "\tAPPEND initrd=/kernels/deploy-initrd console=tty0 rw\n")
    assert (choice.kind, choice.kernel, choice.initrd, choice.params) == (
        "kernel", "/kernels/deploy-vmlinuz", ["/kernels/deploy-initrd"], "console=tty0 rw")


def test_pxelinux_chain_c32_boots_the_named_partition() -> None:
    choice = parse_profile("DEFAULT local\nLABEL local\n\tCOM32 /chain.c32\n\tAPPEND hd0 3\n")
    assert (choice.kind, choice.disk, choice.partition) == ("local", 0, 3)


def test_pxelinux_default_without_matching_label_is_nothing() -> None:
    assert parse_profile("garbage\n").kind == "none"


def test_ipxe_kernel_chain_and_sanboot() -> None:
    kernel = parse_profile("#!ipxe\ninitrd http://10.200.0.1:8069/kernels/deploy-initrd\n"
                           "chain http://10.200.0.1:8069/kernels/deploy-vmlinuz rw quiet\n")
    assert (kernel.kind, kernel.kernel, kernel.initrd, kernel.params) == (
        "kernel", "http://10.200.0.1:8069/kernels/deploy-vmlinuz", ["http://10.200.0.1:8069/kernels/deploy-initrd"],
        "rw quiet")
    local = parse_profile("#!ipxe\nchain http://10.200.0.1:8069/chain.c32 hd0 5\n")
    assert (local.kind, local.partition) == ("local", 5)
    sanboot = parse_profile("#!ipxe\nsanboot --no-describe --drive 0x80\n")
    assert (sanboot.kind, sanboot.disk, sanboot.partition) == ("local", 0, None)


def test_grub_set_root_and_network_kernel() -> None:
    local = parse_profile("default=0\ntimeout=0\nmenuentry local {\n set root=(hd0,3)\n"
                          " linux /vmlinuz root=/dev/sda3\n initrd /initrd.img\n}\n")
    assert (local.kind, local.partition) == ("local", 3)
    network = parse_profile("menuentry deploy {\n linux (pxe)/kernels/deploy-vmlinuz rw\n"
                            " initrd (pxe)/kernels/deploy-initrd\n}\n")
    assert (network.kind, network.kernel) == ("kernel", "(pxe)/kernels/deploy-vmlinuz")
    msdos = parse_profile("menuentry x {\nset root=(hd0,msdos2)\nchainloader +1\n}\n")
    assert msdos.partition == 2


def test_root_partition_from_kexec_arguments() -> None:
    assert root_partition('-l /mnt/dest/vmlinuz --append="console=tty0 root=/dev/sda3 ro"') == 3
    assert root_partition("-l k --append=root=/dev/sda5") == 5
    assert root_partition("-l k --append=quiet") is None


def test_state_round_trip(tmp_path: Path) -> None:
    state = TestbedState(directory=str(tmp_path), nodes=4, clusters=2, faults={"1": {"bmc-silent": "yes"}})
    state.save()
    loaded = load_state(tmp_path)
    assert loaded == state
    assert loaded.fault(loaded.layout().nodes[0], "bmc-silent") == "yes"
    with pytest.raises(KadeployError, match="no testbed"):
        load_state(tmp_path / "missing")


def test_hosts_block_is_added_once_and_removed_cleanly(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n")
    write_hosts_block(build_layout(2), hosts)
    write_hosts_block(build_layout(2), hosts)
    text = hosts.read_text()
    assert text.count(HOSTS_BEGIN) == 1 and "10.200.1.2\tnode-2.c1.testbed" in text
    assert "node-1-bmc.c1.testbed" in text and HOSTS_END in text
    assert remove_hosts_text(text).strip() == "127.0.0.1 localhost"


def test_hosts_block_names_every_node_in_every_vlan(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    write_hosts_block(build_layout(2), hosts)
    entries = {name: line[0] for line in (line.split() for line in hosts.read_text().splitlines()
                                          if line.startswith("10.200.")) for name in line[1:]}
    assert entries["node-2-kavlan-100.c1.testbed"] == "10.200.129.2"
    assert entries["node-1-kavlan-103.c1.testbed"] == "10.200.129.1"
    assert "node-1-kavlan-104.c1.testbed" not in entries
    assert {name for name, address in entries.items() if address == "10.200.129.2"} == \
        {f"node-2-kavlan-{vlan}.c1.testbed" for vlan in VLANS}


def test_boot_flag_read_from_the_mbr(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    sector = bytearray(512)
    sector[510:512] = b"\x55\xaa"
    sector[446 + 16 * 2] = 0x80
    disk.write_bytes(bytes(sector))
    assert read_boot_flag(disk) == 3
    disk.write_bytes(bytes(512))
    assert read_boot_flag(disk) is None
