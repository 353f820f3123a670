"""Root tests on the real netns testbed: power through IPMI, PXE boots, local boot, kexec, down.

One module-scoped testbed of 4 nodes (2G sparse disks, 1 s firmware delay) is
brought up with the `kadeploy-testbed` CLI and torn down at the end; the last
test checks by listing them that no namespace, link, loop device, mount or
process is left. The deployment rootfs is `images.ensure_deploy_rootfs()`
unless KADEPLOY_TESTBED_DEPLOY_ROOTFS names one (e.g. a quick debootstrap).
"""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kadeploy.boot.nbp import LocalBootEnv
from kadeploy.boot.pxe import BootTarget, PXEMethodSettings, PXEProfiles
from kadeploy_testbed import cli
from tests.testbed.deployrootfs import deploy_rootfs

pytestmark = [pytest.mark.root, pytest.mark.testbed]

FIRMWARE_DELAY = 1.0
BOOT_MARGIN = 5.0
DEPLOY_PROFILE = ("DEFAULT network\nLABEL network\n\tKERNEL /kernels/deploy-vmlinuz\n"
                  "\tAPPEND initrd=/kernels/deploy-initrd console=tty0 console=ttyS0,38400n8 rw\n")
LOCAL_PROFILE = "DEFAULT local\nLABEL local\n\tCOM32 /chain.c32\n\tAPPEND hd0 3\n"


class Testbed:
    __test__ = False

    def __init__(self, directory: Path, rootfs: Path) -> None:
        self.directory = directory
        self.rootfs = rootfs
        self.key = directory / "etc" / "keys" / "id_deploy"

    def cli(self, *args: str) -> int:
        return cli.main(["--dir", str(self.directory), *args])

    def status(self) -> dict[str, dict[str, str]]:
        answer = cli.control(self.directory, {"op": "status"})
        return {entry["node"]: entry for entry in answer["nodes"]}

    def profile(self, ip: str, text: str) -> None:
        name = "".join(f"{int(part):02X}" for part in ip.split("."))
        (self.directory / "tftpboot" / "pxelinux.cfg" / name).write_text(text)

    def ipmi(self, bmc: str, *action: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ipmitool", "-I", "lanplus", "-N", "2", "-R", "4", "-H", bmc, "-U", "admin",
                               "-P", "testbed", "chassis", "power", *action],
                              capture_output=True, text=True, timeout=30)

    def ssh(self, host: str, command: str, *, input: bytes | None = None, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["ssh", "-i", str(self.key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                               "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=3",
                               f"root@{host}", command], input=input, capture_output=True, timeout=timeout)


def port_open(ip: str, port: int) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_ports(ip: str, up: list[int], down: list[int], timeout: float) -> float:
    """Seconds until every `up` port accepts and every `down` port refuses; fails after `timeout`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if all(port_open(ip, p) for p in up) and not any(port_open(ip, p) for p in down):
            return time.monotonic() - start
        time.sleep(0.2)
    pytest.fail(f"{ip}: ports {up} up / {down} down not reached within {timeout}s")


def boots(testbed: Testbed, host: str) -> int:
    """How many systems the supervisor has started on `host`: read it before asking for a boot."""
    return int(testbed.status()[host]["boot_count"])


def wait_booted(testbed: Testbed, host: str, ip: str, state: str, timeout: float, after: int) -> None:
    """Wait until `host` runs `state` in a boot newer than `after` and that system's sshd answers.

    Ports alone race with the old system: while it is being killed, its marker
    port may already be closed and its sshd still open. The state alone races
    too: the BMC acts asynchronously, so right after `power cycle` the old
    system may still show the awaited state. Hence boot count, state, then port.
    """
    start = time.monotonic()
    seen: dict[str, object] = {}
    while time.monotonic() - start < timeout:
        seen = testbed.status()[host]
        if int(seen["boot_count"]) > after and seen["state"] == state and port_open(ip, 22):
            return
        time.sleep(0.2)
    pytest.fail(f"{host}: not running {state!r} (boot > {after}) with sshd up within {timeout}s (last {seen!r})")


@pytest.fixture(scope="module")
def testbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testbed]:
    directory = tmp_path_factory.mktemp("ktb") / "testbed"
    bed = Testbed(directory, deploy_rootfs())
    assert bed.cli("up", "--nodes", "4", "--disk-size", "2G", "--firmware-delay", str(FIRMWARE_DELAY),
                   "--seed", "1", "--deploy-rootfs", str(bed.rootfs)) == 0
    try:
        yield bed
    finally:
        bed.cli("down")


def test_up_writes_config_and_refuses_a_second_testbed(testbed: Testbed, capsys: pytest.CaptureFixture[str]) -> None:
    assert (testbed.directory / "etc" / "server.conf").exists()
    assert len((testbed.directory / "nodes").read_text().split()) == 4
    assert socket.gethostbyname("node-3.c1.testbed") == "10.200.1.3"
    assert testbed.cli("up", "--nodes", "1", "--deploy-rootfs", str(testbed.rootfs)) == 1
    assert "already exists" in capsys.readouterr().err
    assert all(entry["power"] == "off" for entry in testbed.status().values())


def test_ipmitool_power_changes_status(testbed: Testbed) -> None:
    bmc = "node-4-bmc.c1.testbed"
    assert "off" in testbed.ipmi(bmc, "status").stdout
    assert testbed.ipmi(bmc, "on").returncode == 0
    assert testbed.status()["node-4.c1.testbed"]["power"] == "on"
    assert "Chassis Power is on" in testbed.ipmi(bmc, "status").stdout
    assert testbed.ipmi(bmc, "cycle").returncode == 0
    time.sleep(0.3)
    assert testbed.status()["node-4.c1.testbed"]["state"] in ("firmware", "hung")
    assert testbed.ipmi(bmc, "off").returncode == 0
    entry = testbed.status()["node-4.c1.testbed"]
    assert (entry["power"], entry["state"]) == ("off", "off")


def test_silent_bmc_does_not_answer(testbed: Testbed) -> None:
    assert testbed.cli("fault", "node-4", "bmc-silent", "yes") == 0
    assert testbed.ipmi("node-4-bmc.c1.testbed", "status").returncode != 0
    assert testbed.cli("fault", "node-4", "bmc-silent", "off") == 0
    assert testbed.ipmi("node-4-bmc.c1.testbed", "status").returncode == 0


def test_deploy_kernel_profile_opens_ssh_and_marker_port(testbed: Testbed) -> None:
    testbed.profile("10.200.1.1", DEPLOY_PROFILE)
    before = boots(testbed, "node-1.c1.testbed")
    assert testbed.ipmi("node-1-bmc.c1.testbed", "on").returncode == 0
    wait_booted(testbed, "node-1.c1.testbed", "10.200.1.1", "deploy-env", FIRMWARE_DELAY + BOOT_MARGIN + 3, before)
    # the node shows deploy-env only once both listen
    assert port_open("10.200.1.1", 22) and port_open("10.200.1.1", 25300)
    assert testbed.status()["node-1.c1.testbed"]["detail"] == ""
    result = testbed.ssh("node-1.c1.testbed", "hostname; test -b /dev/sda && echo disk")
    assert result.stdout.decode().split() == ["node-1.c1.testbed", "disk"]


def test_missing_kernel_leaves_node_unreachable(testbed: Testbed) -> None:
    testbed.profile("10.200.1.2", DEPLOY_PROFILE.replace("deploy-vmlinuz", "no-such-kernel"))
    assert testbed.ipmi("node-2-bmc.c1.testbed", "on").returncode == 0
    time.sleep(FIRMWARE_DELAY + 2)
    entry = testbed.status()["node-2.c1.testbed"]
    assert (entry["power"], entry["state"]) == ("on", "hung")
    assert "no-such-kernel" in entry["detail"]
    assert not port_open("10.200.1.2", 22)
    # No network at all: a connection is not refused (that needs a live stack), it goes unanswered.
    with socket.socket() as sock:
        sock.settimeout(1.0)
        assert sock.connect_ex(("10.200.1.2", 22)) != errno.ECONNREFUSED


@pytest.fixture(scope="module")
def debian_on_partition_3(testbed: Testbed) -> str:
    """node-1 (deployment env) partitioned, Debian 12 extracted on sda3, bootloader configured."""
    host = "node-1.c1.testbed"
    testbed.profile("10.200.1.1", DEPLOY_PROFILE)
    if testbed.status()[host]["state"] != "deploy-env":
        testbed.ipmi("node-1-bmc.c1.testbed", "cycle")
        wait_ports("10.200.1.1", [22, 25300], [], FIRMWARE_DELAY + BOOT_MARGIN)
    script = (testbed.directory / "etc" / "scripts" / "partitioning").read_bytes()
    run = testbed.ssh(host, "tmp=$(mktemp) && chmod 755 $tmp && cat - > $tmp && "
                      "KADEPLOY_BLOCK_DEVICE=/dev/sda KADEPLOY_DEPLOY_PART_NUM=3 $tmp && "
                      "mkfs.ext4 -q -F /dev/sda3 && mkdir -p /mnt/dest && mount /dev/sda3 /mnt/dest", input=script)
    assert run.returncode == 0, run.stderr
    tar = subprocess.Popen(["tar", "-C", str(testbed.rootfs), "--numeric-owner", "-cf", "-", "."],
                           stdout=subprocess.PIPE)
    extract = subprocess.run(["ssh", "-i", str(testbed.key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                              "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", f"root@{host}",
                              "tar --numeric-owner -C /mnt/dest -xf - && mkdir -p /mnt/dest/root/.ssh && "
                              "cat /root/.ssh/authorized_keys > /mnt/dest/root/.ssh/authorized_keys"],
                             stdin=tar.stdout, capture_output=True, timeout=300)
    assert tar.wait(timeout=60) == 0 and extract.returncode == 0, extract.stderr
    bootloader = (testbed.directory / "etc" / "scripts" / "install_bootloader").read_bytes()
    env = ("KADEPLOY_ENV=debian12-min KADEPLOY_ENV_KERNEL=/vmlinuz KADEPLOY_ENV_INITRD=/initrd.img "
           "KADEPLOY_DEPLOY_PART=/dev/sda3 KADEPLOY_DEPLOY_PART_NUM=3 KADEPLOY_ENV_EXTRACTION_DIR=/mnt/dest")
    run = testbed.ssh(host, f"tmp=$(mktemp) && chmod 755 $tmp && cat - > $tmp && {env} $tmp && sync && "
                      "umount /mnt/dest", input=bootloader)
    assert run.returncode == 0, run.stderr
    return host


def test_chain_profile_boots_debian_from_partition_3(testbed: Testbed, debian_on_partition_3: str) -> None:
    host = debian_on_partition_3
    testbed.profile("10.200.1.1", LOCAL_PROFILE)
    before = boots(testbed, host)
    testbed.ssh(host, "nohup /bin/sh -c 'sleep 1; /sbin/reboot -f' >/dev/null 2>&1 &")
    wait_booted(testbed, host, "10.200.1.1", "partition 3", 1 + FIRMWARE_DELAY + BOOT_MARGIN + 3, before)
    assert not port_open("10.200.1.1", 25300)
    result = testbed.ssh(host, "cat /etc/os-release; cat /proc/mounts")
    text = result.stdout.decode()
    assert 'VERSION_ID="12"' in text and "Debian" in text


def test_kexec_from_deploy_env_boots_partition_without_firmware(testbed: Testbed, debian_on_partition_3: str) -> None:
    host = debian_on_partition_3
    testbed.profile("10.200.1.1", DEPLOY_PROFILE)
    before = boots(testbed, host)
    testbed.ipmi("node-1-bmc.c1.testbed", "reset")
    wait_booted(testbed, host, "10.200.1.1", "deploy-env", FIRMWARE_DELAY + BOOT_MARGIN + 3, before)
    wait_ports("10.200.1.1", [22, 25300], [], BOOT_MARGIN)
    before = boots(testbed, host)
    loaded = testbed.ssh(host, "mount /dev/sda3 /mnt/dest && kexec -l /mnt/dest/etc/hostname "
                               "--append='console=ttyS0 root=/dev/sda3 ro' && umount /mnt/dest && "
                               "(nohup /bin/sh -c 'sleep 1; kexec -e' >/dev/null 2>&1 &)")
    assert loaded.returncode == 0, loaded.stderr
    # kexec skips the firmware delay and the PXE fetch: the deploy profile is still in place.
    wait_booted(testbed, host, "10.200.1.1", "partition 3", 1 + BOOT_MARGIN, before)
    assert not port_open("10.200.1.1", 25300)
    assert 'VERSION_ID="12"' in testbed.ssh(host, "cat /etc/os-release").stdout.decode()


# (method, export kind, export server): iPXE and GRUB also fetch over HTTP, as sites configure them
PXE_METHODS = [
    ("PXElinux", "tftp", "10.200.0.1"),
    ("GPXElinux", "http", "10.200.0.1:8069"),
    ("IPXE", "http", "10.200.0.1:8069"),
    ("IPXE", "tftp", "10.200.0.1"),
    ("GrubPXE", "tftp", "10.200.0.1"),
    ("GrubPXE", "http", "10.200.0.1:8069"),
]


def _profiles(testbed: Testbed, method: str, kind: str, server: str) -> PXEProfiles:
    """The server's PXE writer for `method`, on the testbed's TFTP root (the ROM reads pxelinux.cfg/)."""
    return PXEProfiles(dhcp=PXEMethodSettings(method, testbed.directory / "tftpboot", profiles_directory="pxelinux.cfg",
                                              profiles_filename="ip_hex", export_kind=kind, export_server=server))


@pytest.mark.parametrize(("method", "kind", "server"), PXE_METHODS)
def test_each_pxe_method_boots_the_deployment_kernel(testbed: Testbed, method: str, kind: str, server: str) -> None:
    host = "node-2.c1.testbed"
    written = _profiles(testbed, method, kind, server).deploy_kernel(
        [BootTarget(host, "10.200.1.2")], "kernels/deploy-vmlinuz", "kernels/deploy-initrd", "console=ttyS0 rw")
    assert written.ok == [host], written.ko
    before = boots(testbed, host)
    assert testbed.ipmi("node-2-bmc.c1.testbed", "cycle").returncode == 0
    wait_booted(testbed, host, "10.200.1.2", "deploy-env", FIRMWARE_DELAY + BOOT_MARGIN + 3, before)
    assert port_open("10.200.1.2", 25300)


@pytest.mark.parametrize(("method", "kind", "server"), PXE_METHODS)
def test_each_pxe_method_boots_partition_3(testbed: Testbed, debian_on_partition_3: str, method: str, kind: str,
                                           server: str) -> None:
    host = debian_on_partition_3
    env = LocalBootEnv(os="linux", kernel="/vmlinuz", initrd="/initrd.img", kernel_params="console=ttyS0")
    written = _profiles(testbed, method, kind, server).local_boot([BootTarget(host, "10.200.1.1")], 0, 3, env)
    assert written.ok == [host], written.ko
    before = boots(testbed, host)
    assert testbed.ipmi("node-1-bmc.c1.testbed", "cycle").returncode == 0
    wait_booted(testbed, host, "10.200.1.1", "partition 3", FIRMWARE_DELAY + BOOT_MARGIN + 3, before)
    assert 'VERSION_ID="12"' in testbed.ssh(host, "cat /etc/os-release").stdout.decode()


def _boot_deploy_env(testbed: Testbed, index: int) -> str:
    host, ip = f"node-{index}.c1.testbed", f"10.200.1.{index}"
    testbed.profile(ip, DEPLOY_PROFILE)
    if testbed.status()[host]["state"] != "deploy-env":
        before = boots(testbed, host)
        assert testbed.ipmi(f"node-{index}-bmc.c1.testbed", "cycle").returncode == 0
        wait_booted(testbed, host, ip, "deploy-env", FIRMWARE_DELAY + BOOT_MARGIN + 3, before)
    return host


def _reaches(testbed: Testbed, source: str, ip: str) -> bool:
    """Whether `source` (a running node) opens a TCP connection to ip:22."""
    result = testbed.ssh(source, f"nc -z -w 2 {ip} 22", timeout=30)
    return result.returncode == 0


@pytest.fixture
def two_deploy_nodes(testbed: Testbed) -> Iterator[tuple[str, str]]:
    yield _boot_deploy_env(testbed, 3), _boot_deploy_env(testbed, 4)
    testbed.cli("vlan", "--vlan", "DEFAULT", "node-3.c1.testbed")
    for kind in ("disk-fail", "netem-delay", "netem-loss", "link-rate"):
        testbed.cli("fault", "node-3", kind, "off")
        testbed.cli("fault", "node-4", kind, "off")


def test_vlan_cuts_a_node_off_from_the_default_vlan(testbed: Testbed, two_deploy_nodes: tuple[str, str]) -> None:
    node3, node4 = two_deploy_nodes
    assert _reaches(testbed, node4, "10.200.1.3")
    # a VLAN the site does not have, as kavlan refuses it
    assert testbed.cli("vlan", "--vlan", "5", node3) == 1
    # as the server's network/vlan/set_cmd calls it (kavlan's -m syntax)
    assert testbed.cli("vlan", "--vlan", "100", "-m", node3) == 0
    assert not _reaches(testbed, node4, "10.200.1.3"), "node-3 in VLAN 100 still reachable from VLAN DEFAULT"
    assert not _reaches(testbed, node4, "10.200.129.3"), "node-3's VLAN address reachable from VLAN DEFAULT"
    # the server (the frontend) reaches a node in a VLAN at its VLAN address, by its VLAN name, and only there
    assert port_open("10.200.129.3", 22)
    assert not port_open("10.200.1.3", 22), "node-3's default address still answers in VLAN 100"
    vlan_name = "node-3-kavlan-100.c1.testbed"
    assert socket.gethostbyname(vlan_name) == "10.200.129.3"
    assert testbed.ssh(vlan_name, "hostname").stdout.decode().strip() == node3
    assert Path("/sys/class/net/ktb0v100").exists()
    assert testbed.cli("vlan", "--vlan", "DEFAULT", node3) == 0
    assert _reaches(testbed, node4, "10.200.1.3")
    assert port_open("10.200.1.3", 22) and not port_open("10.200.129.3", 22)


def test_a_node_booting_in_a_vlan_fetches_the_profile_of_its_vlan_address(testbed: Testbed) -> None:
    """The VLAN's DHCP gives the node its VLAN address: its PXE ROM asks for that address's profile."""
    node = "node-2.c1.testbed"
    # under the default address, a profile that would leave the node hung
    testbed.profile("10.200.1.2", DEPLOY_PROFILE.replace("deploy-vmlinuz", "no-such-kernel"))
    testbed.profile("10.200.129.2", DEPLOY_PROFILE)
    try:
        assert testbed.cli("vlan", "--vlan", "101", node) == 0
        before = boots(testbed, node)
        assert testbed.ipmi("node-2-bmc.c1.testbed", "cycle").returncode == 0
        wait_booted(testbed, node, "10.200.129.2", "deploy-env", FIRMWARE_DELAY + BOOT_MARGIN + 3, before)
        console = (testbed.directory / "run" / "node-2" / "console.log").read_text()
        assert "CLIENT IP: 10.200.129.2" in console and "pxelinux.cfg/0AC88102" in console
    finally:
        testbed.cli("vlan", "--vlan", "DEFAULT", node)


def test_disk_fault_makes_writes_fail_until_repaired(testbed: Testbed, two_deploy_nodes: tuple[str, str]) -> None:
    node3, _ = two_deploy_nodes
    write = "dd if=/dev/zero of=/dev/sda bs=4096 count=1 oflag=direct conv=fsync 2>&1"
    assert testbed.ssh(node3, write).returncode == 0
    assert testbed.cli("fault", "node-3", "disk-fail", "yes") == 0
    failed = testbed.ssh(node3, write)
    assert failed.returncode != 0, failed.stdout
    assert testbed.cli("fault", "node-3", "disk-fail", "off") == 0
    assert testbed.ssh(node3, write).returncode == 0


def _connect_seconds(ip: str, timeout: float = 3.0) -> float | None:
    start = time.monotonic()
    try:
        with socket.create_connection((ip, 22), timeout=timeout):
            return time.monotonic() - start
    except OSError:
        return None


def test_link_loss_drops_a_nodes_traffic_both_ways(testbed: Testbed, two_deploy_nodes: tuple[str, str],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    node3, node4 = two_deploy_nodes
    assert _connect_seconds("10.200.1.4") is not None
    assert testbed.cli("fault", "node-4", "netem-loss", "100") == 0
    assert _connect_seconds("10.200.1.4", timeout=2.0) is None        # towards node-4
    assert not _reaches(testbed, node3, "10.200.1.4")                  # from another node
    assert testbed.cli("fault", "node-4", "netem-loss", "150") == 1
    assert "expected a percentage" in capsys.readouterr().err
    assert testbed.cli("fault", "node-4", "netem-loss", "off") == 0
    assert _connect_seconds("10.200.1.4") is not None
    assert _reaches(testbed, node3, "10.200.1.4")


def _transfer_seconds(testbed: Testbed, host: str, size_mib: int) -> float:
    start = time.monotonic()
    result = testbed.ssh(host, "cat > /dev/null", input=b"\0" * (size_mib << 20), timeout=120)
    assert result.returncode == 0, result.stderr
    return time.monotonic() - start


def test_link_rate_slows_a_node_down(testbed: Testbed, two_deploy_nodes: tuple[str, str]) -> None:
    _, node4 = two_deploy_nodes
    fast = _transfer_seconds(testbed, node4, 1)
    assert testbed.cli("fault", "node-4", "link-rate", "1mbit") == 0
    slow = _transfer_seconds(testbed, node4, 1)      # 8 Mbit at 1 Mbit/s: about 8 s
    assert testbed.cli("fault", "node-4", "link-rate", "off") == 0
    assert slow >= 6.0 and slow > 2 * fast, (fast, slow)
    assert _transfer_seconds(testbed, node4, 1) < slow / 2


def test_link_delay_where_the_kernel_has_netem(testbed: Testbed, two_deploy_nodes: tuple[str, str],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    quick = _connect_seconds("10.200.1.4")
    assert quick is not None
    if testbed.cli("fault", "node-4", "netem-delay", "300") != 0:
        # this kernel has no netem: a clear refusal, and nothing recorded
        assert "no netem qdisc" in capsys.readouterr().err
        assert "netem-delay" not in testbed.status()["node-4.c1.testbed"].get("detail", "")
        assert "netem-delay" not in str(cli.control(testbed.directory, {"op": "status"}).get("faults", {}))
        return
    delayed = _connect_seconds("10.200.1.4")
    assert delayed is not None and delayed >= 0.3, delayed
    assert testbed.cli("fault", "node-4", "netem-delay", "off") == 0
    again = _connect_seconds("10.200.1.4")
    # relative to the delayed connect just measured: the 300 ms netem added is gone (half of it is margin for load)
    assert again is not None and again < delayed - 0.15, (delayed, again)


def test_status_cli_prints_every_node(testbed: Testbed, capsys: pytest.CaptureFixture[str]) -> None:
    assert testbed.cli("status") == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == [f"node-{i}.c1.testbed" for i in range(1, 5)]
    for line in lines:  # what it booted, since when, and its boot counter
        assert re.search(r" since [0-9.]+s, boot #[0-9]+", line), line


def _leftovers(directory: Path) -> list[str]:
    found = []
    netns = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True).stdout or "[]"
    found += [f"netns {n['name']}" for n in json.loads(netns) if n["name"].startswith("ktb-")]
    links = json.loads(subprocess.run(["ip", "-j", "link"], capture_output=True, text=True).stdout)
    found += [f"link {l['ifname']}" for l in links if l["ifname"].startswith("ktb")]
    loops = subprocess.run(["losetup", "-l", "-n", "-O", "BACK-FILE"], capture_output=True, text=True).stdout
    found += [f"loop {l}" for l in loops.split() if str(directory) in l]
    found += [f"mount {line.split()[1]}" for line in Path("/proc/self/mounts").read_text().splitlines()
              if str(directory) in line]
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(directory) in cmd and int(pid) != os.getpid():
            found.append(f"process {pid} {cmd[:80]}")
    if "kadeploy-testbed" in Path("/etc/hosts").read_text():
        found.append("/etc/hosts block")
    return found


def test_down_leaves_nothing_behind(testbed: Testbed) -> None:
    assert _leftovers(testbed.directory)  # the testbed is really there before
    assert testbed.cli("down") == 0
    assert _leftovers(testbed.directory) == []
    assert not testbed.directory.exists()
