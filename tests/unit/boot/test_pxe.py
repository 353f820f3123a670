"""PXE profile formats, names, chain profiles and user profiles, written into tmp dirs."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from kadeploy.boot.pxe import (
    BootTarget,
    LocalBootEnv,
    PXEMethodSettings,
    PXEProfiles,
    disk_index,
    profile_name,
)
from kadeploy.errors import ConfigError, ErrorCode, KadeployError

NODE = BootTarget("node-1.c1.testbed", "10.0.10.11", "AA:BB:CC:DD:EE:FF")
NODE2 = BootTarget("node-2.c1.testbed", "10.0.10.12", "aa:bb:cc:dd:ee:01")


def settings(repo: Path, method: str = "PXElinux", **kw) -> PXEMethodSettings:
    return PXEMethodSettings(method=method, repository=repo, export_server="10.0.0.1", **kw)


@pytest.mark.parametrize(
    "scheme, expected",
    [
        ("ip_hex", "0A000A0B"),
        ("ip", "10.0.10.11"),
        ("hostname", "node-1.c1.testbed"),
        ("hostname_short", "node-1"),
        ("mac", "01-aa-bb-cc-dd-ee-ff"),
    ],
)
def test_profile_names_follow_the_scheme(scheme, expected):
    assert profile_name(scheme, NODE) == expected


def test_mac_scheme_without_mac_is_a_config_error():
    with pytest.raises(ConfigError, match="node-3"):
        profile_name("mac", BootTarget("node-3", "10.0.0.3"))


def test_unknown_scheme_and_bad_export_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="profiles/filename"):
        settings(tmp_path, profiles_filename="uuid")
    with pytest.raises(ConfigError, match="PXElinux does not support export kind 'http'"):
        settings(tmp_path, export_kind="http")
    with pytest.raises(ConfigError, match='unknown PXE method "Syslinux"'):
        settings(tmp_path, method="Syslinux")


@pytest.mark.parametrize("device, index", [("/dev/sda", 0), ("/dev/sdc", 2), ("/dev/vdb", 1), ("/dev/nvme1n1", 1), ("/dev/sdaa", 26)])
def test_disk_index(device, index):
    assert disk_index(device) == index


def test_pxelinux_deploy_kernel_profile(tmp_path):
    profiles = PXEProfiles(settings(tmp_path), headers={"networkboot": "PROMPT 1\nTIMEOUT 50"})
    result = profiles.deploy_kernel([NODE, NODE2], "kernels/deploy-vmlinuz", "kernels/deploy-initrd", "console=tty0 rw")
    assert result.ok == [NODE.hostname, NODE2.hostname] and result.ko == {}
    path = tmp_path / "pxelinux.cfg" / "0A000A0B"
    assert path.read_text() == (
        "PROMPT 1\nTIMEOUT 50\n"
        "DEFAULT network\nLABEL network\n"
        "\tKERNEL /kernels/deploy-vmlinuz\n"
        "\tAPPEND initrd=/kernels/deploy-initrd console=tty0 rw\n"
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert (tmp_path / "pxelinux.cfg" / "0A000A0C").exists()
    # no temporary file is left behind
    assert sorted(p.name for p in (tmp_path / "pxelinux.cfg").iterdir()) == ["0A000A0B", "0A000A0C"]


def test_pxelinux_local_boot_chainloads_the_partition(tmp_path):
    profiles = PXEProfiles(settings(tmp_path))
    profiles.local_boot([NODE], 0, 3, LocalBootEnv(kernel="/vmlinuz"))
    assert (tmp_path / "pxelinux.cfg" / "0A000A0B").read_text() == (
        "DEFAULT local\nLABEL local\n\tCOM32 /chain.c32\n\tAPPEND hd0 3\n"
    )


def test_gpxelinux_exports_over_http(tmp_path):
    profiles = PXEProfiles(settings(tmp_path, "GPXElinux", export_kind="http"))
    profiles.deploy_kernel([NODE], "k/vmlinuz", None, "rw")
    text = (tmp_path / "pxelinux.cfg" / "0A000A0B").read_text()
    assert "\tKERNEL http://10.0.0.1/k/vmlinuz\n\tAPPEND rw\n" in text


def test_ipxe_profiles(tmp_path):
    ipxe = settings(tmp_path, "IPXE", export_kind="http", profiles_directory="ipxe", profiles_filename="mac")
    profiles = PXEProfiles(ipxe, headers={"networkboot": "echo booting"})
    profiles.deploy_kernel([NODE], "kernels/vmlinuz", "kernels/initrd", "console=ttyS0")
    path = tmp_path / "ipxe" / "01-aa-bb-cc-dd-ee-ff"
    assert path.read_text() == (
        "#!ipxe\necho booting\n"
        "initrd http://10.0.0.1/kernels/initrd\n"
        "chain http://10.0.0.1/kernels/vmlinuz console=ttyS0\n"
    )
    profiles.local_boot([NODE], 0, 3, LocalBootEnv())
    assert path.read_text() == "#!ipxe\nchain http://10.0.0.1/chain.c32 hd0 3\n"


def test_grubpxe_network_and_local_profiles(tmp_path):
    grub = settings(tmp_path, "GrubPXE", profiles_directory="grub.cfg", profiles_filename="ip")
    profiles = PXEProfiles(grub)
    profiles.deploy_kernel([NODE], "kernels/vmlinuz", "kernels/initrd", "rw")
    path = tmp_path / "grub.cfg" / "10.0.10.11"
    assert path.read_text() == (
        "timeout=0\ndefault=0\nmenuentry network {\n"
        "\tlinux (pxe)/kernels/vmlinuz rw\n\tinitrd (pxe)/kernels/initrd\n}\n"
    )
    env = LocalBootEnv(kernel="/vmlinuz", initrd="/initrd.img", kernel_params="")
    profiles.local_boot([NODE], 0, 3, env, default_params="console=ttyS0")
    assert path.read_text() == (
        "timeout=0\ndefault=0\nmenuentry local {\n"
        "\tset root=(hd0,3)\n\tlinux /vmlinuz console=ttyS0 root=/dev/sda3\n\tinitrd /initrd.img\n}\n"
    )


def test_grubpxe_http_export_and_xen_and_header_with_timeout(tmp_path):
    grub = settings(tmp_path, "GrubPXE", export_kind="http", profiles_directory="grub.cfg")
    profiles = PXEProfiles(grub, headers={"localboot": "set timeout=5"})
    env = LocalBootEnv(os="xen", kernel="/boot/vmlinuz", initrd="/boot/initrd", kernel_params="ro",
                       hypervisor="/boot/xen.gz", hypervisor_params="dom0_mem=1G")
    profiles.local_boot([NODE], 1, 2, env, block_device="/dev/nvme1n1")
    assert (tmp_path / "grub.cfg" / "0A000A0B").read_text() == (
        "set timeout=5\ndefault=0\nmenuentry local {\n\tset root=(hd1,2)\n"
        "\tmultiboot /boot/xen.gz dom0_mem=1G\n\tmodule /boot/vmlinuz ro root=/dev/nvme1n1p2\n"
        "\tmodule /boot/initrd\n}\n"
    )
    profiles.deploy_kernel([NODE], "k", None, "")
    assert "\tlinux (http,10.0.0.1)/k\n" in (tmp_path / "grub.cfg" / "0A000A0B").read_text()


def test_chain_profile_when_localboot_method_differs(tmp_path):
    dhcp = settings(tmp_path)
    local = settings(tmp_path, "GrubPXE", binary="grubpxe.0", profiles_directory="grub.cfg", profiles_filename="ip")
    profiles = PXEProfiles(dhcp, localboot=local, headers={"dhcp": "PROMPT 1", "localboot": "set timeout=5"})
    result = profiles.local_boot([NODE], 0, 3, LocalBootEnv(kernel="/vmlinuz"))
    assert result.ok == [NODE.hostname]
    assert (tmp_path / "pxelinux.cfg" / "0A000A0B").read_text() == (
        "PROMPT 1\nDEFAULT chain\nLABEL chain\n\tKERNEL /grubpxe.0\n\tAPPEND keeppxe\n"
    )
    assert (tmp_path / "grub.cfg" / "10.0.10.11").read_text().startswith("set timeout=5\ndefault=0\nmenuentry local {")
    # the network boot is not chained: networkboot defaults to dhcp
    profiles.deploy_kernel([NODE], "k", None, "")
    assert "DEFAULT network" in (tmp_path / "pxelinux.cfg" / "0A000A0B").read_text()


def test_ipxe_and_grub_chain_lines(tmp_path):
    ipxe_dhcp = settings(tmp_path, "IPXE", export_kind="http", profiles_directory="ipxe")
    grub_net = settings(tmp_path, "GrubPXE", binary="grub/core.0", profiles_directory="grub.cfg")
    PXEProfiles(ipxe_dhcp, networkboot=grub_net).deploy_kernel([NODE], "k", None, "")
    assert (tmp_path / "ipxe" / "0A000A0B").read_text() == "#!ipxe\nchain http://10.0.0.1/grub/core.0\n"
    pxe_net = settings(tmp_path, "PXElinux", binary="pxelinux.0", profiles_directory="pxelinux.cfg")
    grub_dhcp = settings(tmp_path, "GrubPXE", profiles_directory="grub.cfg")
    PXEProfiles(grub_dhcp, networkboot=pxe_net).deploy_kernel([NODE], "k", None, "")
    assert "\tpxechainloader (pxe)/pxelinux.0\n\tboot\n" in (tmp_path / "grub.cfg" / "0A000A0B").read_text()


def test_chain_to_the_same_file_is_refused(tmp_path):
    local = settings(tmp_path, "GPXElinux", binary="gpxelinux.0")
    with pytest.raises(ConfigError, match="same profile file"):
        PXEProfiles(settings(tmp_path), localboot=local).local_boot([NODE], 0, 3, LocalBootEnv())


def test_user_profile_copies_files_and_substitutes(tmp_path):
    repo = tmp_path / "tftp"
    src = tmp_path / "src"
    src.mkdir()
    (src / "myvmlinuz").write_bytes(b"KERNEL" * 100)
    (src / "cached-abc123").write_bytes(b"INITRD")
    profiles = PXEProfiles(settings(repo))
    text = (
        "DEFAULT bootlabel\nlabel bootlabel\n"
        "\tKERNEL FILES_PREFIX--myvmlinuz\n"
        "\tAPPEND initrd=FILES_PREFIX--myinitrd id=NODE_SINGULARITY rw\n"
    )
    result = profiles.user_profile(
        [NODE, NODE2], text, "alice", {NODE.hostname: "42"},
        {"myvmlinuz": src / "myvmlinuz", "myinitrd": src / "cached-abc123"},
    )
    assert sorted(result.ok) == [NODE.hostname, NODE2.hostname]
    assert (repo / "userfiles" / "pxe-alice--myvmlinuz").read_bytes() == b"KERNEL" * 100
    assert (repo / "userfiles" / "pxe-alice--myinitrd").read_bytes() == b"INITRD"
    first = (repo / "pxelinux.cfg" / "0A000A0B").read_text()
    assert "\tKERNEL /userfiles/pxe-alice--myvmlinuz\n" in first
    assert "initrd=/userfiles/pxe-alice--myinitrd id=42 rw" in first
    assert "id= rw" in (repo / "pxelinux.cfg" / "0A000A0C").read_text()


@pytest.mark.parametrize("name", ["../etc/passwd", "..", "a/b", ""])
def test_user_file_names_are_confined(tmp_path, name):
    profiles = PXEProfiles(settings(tmp_path))
    with pytest.raises(KadeployError) as info:
        profiles.user_profile([NODE], "x", "alice", None, {name: tmp_path / "f"})
    assert info.value.code == ErrorCode.INVALID_FILE
    assert not (tmp_path / "userfiles").exists()


def test_user_name_is_confined(tmp_path):
    with pytest.raises(KadeployError, match="Invalid user name"):
        PXEProfiles(settings(tmp_path)).user_profile([NODE], "x", "../root", None, [])


def test_missing_user_file_is_a_user_error(tmp_path):
    with pytest.raises(KadeployError) as info:
        PXEProfiles(settings(tmp_path)).user_profile([NODE], "x", "bob", None, [tmp_path / "nope"])
    assert info.value.code == ErrorCode.INVALID_FILE


def test_unwritable_profile_fails_the_node_only(tmp_path):
    # a directory where the profile should be: the rename fails, even for root
    (tmp_path / "pxelinux.cfg" / "0A000A0B").mkdir(parents=True)
    result = PXEProfiles(settings(tmp_path)).deploy_kernel([NODE, NODE2], "k", None, "")
    assert result.ok == [NODE2.hostname]
    assert "Cannot write the PXE profile" in result.ko[NODE.hostname]
    assert sorted(p.name for p in (tmp_path / "pxelinux.cfg").iterdir()) == ["0A000A0B", "0A000A0C"]


# -- a node moved into a VLAN (--vlan) boots under its VLAN address -------------------------

IN_VLAN = BootTarget("node-1.c1.testbed", "10.0.10.11", "AA:BB:CC:DD:EE:FF", vlan_ip="10.0.129.11")


def test_profile_is_written_under_the_vlan_address_too(tmp_path):
    profiles = PXEProfiles(settings(tmp_path))
    result = profiles.local_boot([IN_VLAN, NODE2], 0, 3, LocalBootEnv(kernel="/vmlinuz"))
    assert result.ok == [IN_VLAN.hostname, NODE2.hostname] and result.ko == {}
    written = tmp_path / "pxelinux.cfg"
    # 0A00810B is 10.0.129.11, the address the node's firmware gets in the VLAN
    assert sorted(p.name for p in written.iterdir()) == ["0A000A0B", "0A000A0C", "0A00810B"]
    assert (written / "0A00810B").read_text() == (written / "0A000A0B").read_text()
    assert "APPEND hd0 3" in (written / "0A00810B").read_text()


def test_vlan_address_under_the_ip_scheme(tmp_path):
    PXEProfiles(settings(tmp_path, profiles_filename="ip")).deploy_kernel([IN_VLAN], "k", None, "")
    assert sorted(p.name for p in (tmp_path / "pxelinux.cfg").iterdir()) == ["10.0.10.11", "10.0.129.11"]


@pytest.mark.parametrize("scheme, name", [("mac", "01-aa-bb-cc-dd-ee-ff"), ("hostname", "node-1.c1.testbed")])
def test_schemes_that_do_not_name_the_address_write_one_profile(tmp_path, scheme, name):
    result = PXEProfiles(settings(tmp_path, profiles_filename=scheme)).deploy_kernel([IN_VLAN], "k", None, "")
    assert result.ok == [IN_VLAN.hostname]
    assert [p.name for p in (tmp_path / "pxelinux.cfg").iterdir()] == [name]


def test_user_profile_goes_under_the_vlan_address_with_its_singularity(tmp_path):
    PXEProfiles(settings(tmp_path)).user_profile([IN_VLAN], "APPEND x=NODE_SINGULARITY", "bob",
                                                 {IN_VLAN.hostname: "42"})
    assert (tmp_path / "pxelinux.cfg" / "0A00810B").read_text() == "APPEND x=42"


def test_a_node_whose_vlan_profile_cannot_be_written_fails(tmp_path):
    (tmp_path / "pxelinux.cfg" / "0A00810B").mkdir(parents=True)
    result = PXEProfiles(settings(tmp_path)).deploy_kernel([IN_VLAN, NODE2], "k", None, "")
    assert result.ok == [NODE2.hostname]
    assert "0A00810B" in result.ko[IN_VLAN.hostname]

