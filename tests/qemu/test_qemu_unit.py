"""Fast checks of the QEMU mode's pure parts: layout, config, dnsmasq and QEMU lines, boot segment."""

from __future__ import annotations

import gzip
import subprocess
from pathlib import Path

import pytest
import yaml

from kadeploy.config import load_config
from kadeploy.errors import KadeployError
from kadeploy_testbed import cli
from kadeploy_testbed.configdir import redfish_tls_paths
from kadeploy_testbed.qemu import host
from kadeploy_testbed.qemu.configdir import write_config
from kadeploy_testbed.qemu.redfishbmc import make_certificate
from kadeploy_testbed.qemu.deployimage import boot_segment
from kadeploy_testbed.qemu.layout import build_layout
from kadeploy_testbed.qemu.vm import qemu_command
from tests.requirements import require


def test_layout_uses_its_own_subnet_cluster_and_names() -> None:
    layout = build_layout(3)
    assert [n.hostname for n in layout.nodes] == [f"node-{k}.qemu.testbed" for k in (1, 2, 3)]
    assert [n.ip for n in layout.nodes] == ["10.202.1.1", "10.202.1.2", "10.202.1.3"]
    assert layout.nodes[1].bmc_hostname == "node-2-bmc.qemu.testbed"
    assert len({n.mac for n in layout.nodes}) == 3


@pytest.mark.parametrize("count", [0, 5])
def test_layout_refuses_more_than_four_vms(count: int) -> None:
    with pytest.raises(KadeployError, match="1 to 4"):
        build_layout(count)


@pytest.mark.parametrize("method", ["PXElinux", "IPXE", "GrubPXE"])
def test_written_config_loads_and_names_the_method(tmp_path: Path, method: str) -> None:
    write_config(tmp_path, build_layout(2), "admin", "pw", method)
    cfg = load_config(tmp_path / "etc")
    assert cfg.server.pxe.dhcp.method == method
    cluster = cfg.clusters["qemu"]
    assert cluster.partitioning.block_device == "/dev/sda"
    assert "grub-install" in cluster.boot.install_bootloader
    assert sorted(cfg.nodes) == ["node-1.qemu.testbed", "node-2.qemu.testbed"]
    assert cfg.nodes["node-2.qemu.testbed"].address == "10.202.1.2"
    conf = yaml.safe_load((tmp_path / "etc" / "qemu.conf").read_text())
    assert "node-1-bmc" not in str(conf) and "HOSTNAME_SHORT-bmc.qemu.testbed" in str(conf)


def test_bootloader_script_is_valid_shell(tmp_path: Path) -> None:
    write_config(tmp_path, build_layout(1), "admin", "pw")
    script = tmp_path / "etc" / "scripts" / "install_bootloader"
    assert subprocess.run(["sh", "-n", str(script)], check=False).returncode == 0


def test_dnsmasq_gives_each_mac_its_address_and_the_method_boot_file(tmp_path: Path) -> None:
    layout = build_layout(2)
    argv = host.dnsmasq_command(tmp_path, layout, "PXElinux")
    assert "--interface=ktq0" in argv and "--port=0" in argv and "--bind-interfaces" in argv
    assert f"--dhcp-host={layout.nodes[1].mac},set:node2,10.202.1.2,node-2" in argv
    assert "--dhcp-boot=tag:node2,pxelinux.0,,10.202.0.1" in argv
    ipxe = host.dnsmasq_command(tmp_path, layout, "IPXE")
    assert "--dhcp-boot=tag:node1,http://10.202.0.1:8069/ipxe.cfg/10.202.1.1,,10.202.0.1" in ipxe
    grub = host.dnsmasq_command(tmp_path, layout, "GrubPXE")
    assert "--dhcp-boot=tag:node1,boot/grub/i386-pc/core.0,,10.202.0.1" in grub


def test_qemu_line_boots_network_first_then_the_ide_disk(tmp_path: Path) -> None:
    node = build_layout(1).nodes[0]
    argv = qemu_command(tmp_path, node, "tcg")
    line = " ".join(argv)
    # the BMC owns the process: it is not started paused, and a power off (or a guest poweroff) ends it
    assert "-S" not in argv and "-no-shutdown" not in argv and argv[argv.index("-m") + 1] == "1024"
    assert f"socket,id=ipmi0,host={node.bmc_ip},port=9002" in line and "ipmi-bmc-extern,id=bmc0" in line
    assert f"e1000,netdev=net0,mac={node.mac},bootindex=1" in line
    assert "ide-hd,drive=disk0,bus=ide.0,bootindex=2" in line
    assert "ifname=ktqt1" in line and "-accel tcg" in line and "-cpu max" in line


def test_qemu_serial_port_is_the_bmcs_sol_line_and_is_logged(tmp_path: Path) -> None:
    node = build_layout(1).nodes[0]
    line = " ".join(qemu_command(tmp_path, node, "tcg"))
    # the serial port is the TCP server ipmi_sim's `sol "tcp:10.202.64.1:9003"` connects to, logged to console.log
    assert (f"socket,id=sol0,host={node.bmc_ip},port=9003,server=on,wait=off,"
            f"logfile={tmp_path}/run/node-1/console.log,logappend=on" in line) and "-serial chardev:sol0" in line
    assert "console.sock" not in line
    # SeaBIOS's console redirection to COM1, so the firmware's screen reaches the serial console
    assert f"name=etc/sercon-port,file={tmp_path}/run/node-1/sercon-port" in line
    assert (tmp_path / "run/node-1/sercon-port").read_bytes() == (0x3F8).to_bytes(8, "little")


def test_console_command_is_ipmi_serial_over_lan(tmp_path: Path) -> None:
    write_config(tmp_path, build_layout(1), "admin", "pw")
    console = load_config(tmp_path / "etc").clusters["qemu"].remoteops.console[0].cmd
    options = "-I lanplus -C 3 -H HOSTNAME_SHORT-bmc.qemu.testbed -U admin -P pw"
    # a session the server killed (SIGKILL, no deactivation) must not keep the next one out
    assert console == f"ipmitool {options} sol deactivate >/dev/null 2>&1; exec ipmitool {options} sol activate"


def test_redfish_power_method_writes_a_cluster_file_driving_the_redfish_driver(tmp_path: Path) -> None:
    write_config(tmp_path, build_layout(2), "admin", "pw", power_method="redfish")
    make_certificate(tmp_path)  # `up` makes it: the cluster file names it as the driver's CA file
    ops = load_config(tmp_path / "etc").clusters["qemu"].remoteops
    url = "https://10.202.0.1:8443/redfish/v1/Systems/HOSTNAME_SHORT"
    for kind, level in (("power_on", "hard"), ("power_off", "hard"), ("power_status", "soft"), ("reboot", "hard")):
        op = ops.command(kind, level)
        assert op is not None and op.driver == "redfish" and op.address == url, (kind, op)
        assert op.ca_file == str(redfish_tls_paths(tmp_path)[0]) and (op.user, op.password) == ("admin", "pw")
    assert [op.name for op in ops.power_on] == ["hard"]  # On by Redfish only
    # ForceRestart is refused by ipmi_sim on a VM that is off: very_hard stays IPMI's off, pause, on
    very_hard = ops.command("reboot", "very_hard")
    assert very_hard is not None and very_hard.driver is None and "chassis power off; sleep 5;" in very_hard.cmd


def test_qemu_mode_refuses_the_pdu_power_method_before_anything_is_made(tmp_path: Path, capsys) -> None:
    assert cli.main(["--dir", str(tmp_path / "q"), "up", "--mode", "qemu", "--nodes", "1",
                     "--power-method", "pdu"]) == 1
    assert "--power-method pdu: QEMU mode powers its VMs by ipmi or redfish (no PDU agent serves them)" in \
        capsys.readouterr().err
    assert not (tmp_path / "q").exists()


def test_boot_segment_is_a_cpio_the_kernel_can_overlay(tmp_path: Path) -> None:
    require("cpio")
    archive = tmp_path / "seg.cpio"
    archive.write_bytes(gzip.decompress(boot_segment("ssh-ed25519 AAAAkey test")))
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["cpio", "-idm", "--quiet", "-F", str(archive)], cwd=out, check=True)
    assert (out / "root/.ssh/authorized_keys").read_text() == "ssh-ed25519 AAAAkey test"
    assert (out / "root/.ssh/authorized_keys").stat().st_mode & 0o777 == 0o600
    init = (out / "init").read_text()
    assert init.startswith("#!/bin/sh") and "udhcpc" in init and "e1000" in init
    assert (out / "init").stat().st_mode & 0o111
    assert subprocess.run(["sh", "-n", str(out / "init")], check=False).returncode == 0
    assert "kexec -e" in (out / "usr/sbin/reboot").read_text()
