"""Unit tests (no root): the Kadeploy configuration directory written for the testbed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from kadeploy.vlan import vlan_hostname
from kadeploy_testbed.configdir import BOOTLOADER_SCRIPT, write_config
from kadeploy_testbed.fake.configdir import write_fake_config
from kadeploy_testbed.fake.settings import FakeSettings
from kadeploy_testbed.layout import VLANS, build_layout


def test_config_directory_has_every_kadeploy_file(tmp_path: Path) -> None:
    paths = write_config(tmp_path, build_layout(5, 2), "admin", "secret")
    names = {p.name for p in paths.etc.iterdir()}
    assert {"server.conf", "clusters.conf", "c1.conf", "c2.conf", "command.conf", "client.conf", "version"} <= names
    assert paths.private_key.exists() and paths.private_key.with_suffix(".pub").read_text().startswith("ssh-ed25519")
    assert paths.nodes_file.read_text().split() == [f"node-{i}.c{1 if i <= 3 else 2}.testbed" for i in range(1, 6)]
    assert (tmp_path / "nodes-c2").read_text().split() == ["node-4.c2.testbed", "node-5.c2.testbed"]


def test_server_conf_points_at_the_testbed(tmp_path: Path) -> None:
    write_config(tmp_path, build_layout(2), "admin", "secret")
    server = yaml.safe_load((tmp_path / "etc" / "server.conf").read_text())
    assert server["database"] == {"kind": "sqlite", "name": str(tmp_path / "kadeploy.db")}
    assert server["pxe"]["dhcp"]["export"] == {"kind": "tftp", "server": "10.200.0.1"}
    assert server["pxe"]["dhcp"]["profiles"] == {"directory": "pxelinux.cfg", "filename": "ip_hex"}
    assert server["authentication"]["acl"]["whitelist"] == ["127.0.0.1", "10.200.0.1"]
    assert "VLAN_ID" in server["network"]["vlan"]["set_cmd"] and "NODES" in server["network"]["vlan"]["set_cmd"]


def test_cluster_file_uses_ipmitool_against_the_bmcs(tmp_path: Path) -> None:
    write_config(tmp_path, build_layout(2), "admin", "secret")
    cluster = yaml.safe_load((tmp_path / "etc" / "c1.conf").read_text())
    assert cluster["partitioning"]["partitions"] == {"swap": 1, "prod": 2, "deploy": 3, "tmp": 5}
    assert Path(cluster["partitioning"]["script"]).stat().st_mode & 0o111
    hard = {op["name"]: op["cmd"] for op in cluster["remoteops"]["reboot"]}["hard"]
    assert hard.startswith("ipmitool -I lanplus") and "-H HOSTNAME_SHORT-bmc.c1.testbed" in hard
    assert "-U admin -P secret chassis power reset" in hard
    assert cluster["timeouts"] == {"reboot": "30 + n", "kexec": 20}
    clusters = yaml.safe_load((tmp_path / "etc" / "clusters.conf").read_text())
    assert clusters["clusters"][0]["nodes"][1] == {"name": "node-2.c1.testbed", "address": "10.200.1.2",
                                                   "mac": "02:00:0a:c8:01:02"}


def test_bootloader_script_writes_grub_cfg_naming_the_deploy_partition(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "KADEPLOY_ENV_EXTRACTION_DIR": str(tmp_path), "KADEPLOY_ENV": "debian12-min",
           "KADEPLOY_ENV_KERNEL": "/vmlinuz", "KADEPLOY_ENV_INITRD": "/initrd.img",
           "KADEPLOY_ENV_KERNEL_PARAMS": "console=ttyS0", "KADEPLOY_DEPLOY_PART": "/dev/sda3",
           "KADEPLOY_DEPLOY_PART_NUM": "3"}
    subprocess.run(["sh", "-c", BOOTLOADER_SCRIPT], env=env, check=True, timeout=30)
    grub = (tmp_path / "boot" / "grub" / "grub.cfg").read_text()
    assert "linux /vmlinuz console=ttyS0 root=/dev/sda3" in grub and "set root=(hd0,3)" in grub


def test_vlan_names_the_server_computes_are_the_testbeds(tmp_path: Path) -> None:
    layout = build_layout(3, 2)
    write_config(tmp_path, layout, "admin", "secret")
    vlan = yaml.safe_load((tmp_path / "etc" / "server.conf").read_text())["network"]["vlan"]
    assert vlan["set_cmd"].startswith("kadeploy-testbed vlan")
    for node in layout.nodes:
        for vlan_id in VLANS:
            assert vlan_hostname(node.hostname, vlan["hostname_suffix"], str(vlan_id)) == node.vlan_hostname(vlan_id)


def test_testbed_nodes_are_reached_by_name_and_fake_ones_by_address(tmp_path: Path) -> None:
    write_config(tmp_path / "netns", build_layout(2), "admin", "secret")
    cluster = yaml.safe_load((tmp_path / "netns" / "etc" / "c1.conf").read_text())
    assert "hooks" not in cluster  # Kadeploy3's default: by name, which the testbed's /etc/hosts block resolves
    (tmp_path / "fake").mkdir()
    write_fake_config(FakeSettings(directory=str(tmp_path / "fake"), nodes=2))
    fake_cluster = yaml.safe_load((tmp_path / "fake" / "etc" / "c1.conf").read_text())
    assert fake_cluster["hooks"] == {"use_ip_to_deploy": True}


def test_every_end_hook_is_set_and_appends_its_kind_and_workflow_id(tmp_path: Path) -> None:
    import shlex

    from kadeploy_testbed.configdir import hooks_log

    write_config(tmp_path, build_layout(2), "admin", "secret")
    hooks = yaml.safe_load((tmp_path / "etc" / "server.conf").read_text())["hooks"]
    assert set(hooks) == {"end_of_deployment", "end_of_reboot", "end_of_power"}
    for key, wid in (("end_of_deployment", "D-1"), ("end_of_reboot", "R-2"), ("end_of_power", "P-3")):
        # Kadeploy3 (config.rb `hooks`): a command whose file is readable and executable
        script = Path(shlex.split(hooks[key])[0])
        assert script.is_file() and script.stat().st_mode & 0o111
        # kaworkflow.rb `work_end_hook`: the command line with WORKFLOW_ID replaced, no stdin
        subprocess.run(hooks[key].replace("WORKFLOW_ID", wid), shell=True, check=True, timeout=30,
                       stdin=subprocess.DEVNULL)
    assert hooks_log(tmp_path).read_text() == "deployment D-1\nreboot R-2\npower P-3\n"
