"""Real firmware in the loop: PXE-boot, deploy and boot from disk on two QEMU VMs.

Slow (software emulation: minutes per boot) and root-only. The module shares one
2-VM QEMU testbed with kadeploy3d; the second test runs two deployments at once
to keep the suite short.
"""

from __future__ import annotations

import os
import pty
import re
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.ptyconsole import detach, read_until, reap
from tests.qemu.conftest import CACHE, QemuSite, qemu_site

pytestmark = [pytest.mark.slow, pytest.mark.root]

def image_kernel_release() -> str:
    """The kernel release debian12-min boots: the target of its /vmlinuz symlink."""
    target = os.readlink(CACHE / "user-images" / "rootfs" / "vmlinuz")
    return re.sub(r"^.*vmlinuz-", "", target)


def port_open(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=3):
            return True
    except OSError:
        return False


def assert_deployed_debian(site: QemuSite, node: str, address: str) -> None:
    """The VM runs the deployed Debian 12 from its disk, with the image's own kernel."""
    release = site.ssh(node, "cat /etc/os-release").stdout
    assert 'VERSION_ID="12"' in release and "Debian" in release
    assert site.ssh(node, "uname -r").stdout.strip() == image_kernel_release()
    assert site.ssh(node, "findmnt -n -o SOURCE /").stdout.strip() == "/dev/sda3"
    assert not port_open(address, 25300), "the deployment environment's marker port is still open"


UNTRUSTED_KASCADE = "SetDeploymentEnv|SetDeploymentEnvUntrusted:1:1500&BroadcastEnv|BroadcastEnvKascade:1:1200"


def deploy_command(site: QemuSite, nodes: list[str], *extra: str) -> list[str]:
    args = ["kadeploy3", "-e", "debian12-min", "-k", f"{site.user_key}.pub"]
    for node in nodes:
        args += ["-m", node]
    return [*args, *extra]


def pxe_boots(site: QemuSite, address: str) -> int:
    """How many times the VM at `address` fetched pxelinux.0, i.e. went through its PXE firmware."""
    return (site.directory / "dnsmasq.log").read_text().count(f"tftpboot/pxelinux.0 to {address}\n")


@pytest.fixture(scope="module")
def site() -> Iterator[QemuSite]:
    with qemu_site(2) as running:
        yield running


def test_deploy_two_vms_untrusted_kascade_classical(site: QemuSite) -> None:
    started = time.monotonic()
    result = site.tool(*deploy_command(site, site.nodes, "--force-steps",
                                       f"{UNTRUSTED_KASCADE}&BootNewEnv|BootNewEnvClassical:0:1200"),
                       check=False, timeout=3600)
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert "The deployment is successful on nodes" in result.stdout
    for index, node in enumerate(site.nodes, start=1):
        assert_deployed_debian(site, node, f"10.202.1.{index}")
        # PXElinux booted the deploy kernel, then chainloaded the disk (chain.c32 hd0 3)
        assert pxe_boots(site, f"10.202.1.{index}") >= 2
    print(f"\nfull deployment of 2 VMs (Untrusted + Kascade + Classical): {seconds:.0f}s")


def test_kaconsole_reaches_the_serial_console_of_a_deployed_vm(site: QemuSite) -> None:
    """kaconsole3 on a terminal: keystrokes reach the VM's serial getty and its answer comes back."""
    node = site.nodes[0]  # deployed by the test above: the image's getty runs on ttyS0
    pid, fd = pty.fork()
    if pid == 0:
        os.execvpe("kaconsole3", ["kaconsole3", "-m", node], dict(site.env, TERM="dumb"))
    try:
        # agetty answers an empty login with a new prompt ("<hostname> login:"); Enter is pressed
        # again until it comes: the first one may be typed before the console is attached
        answer = b""
        deadline = time.monotonic() + 90
        while b"login:" not in answer and time.monotonic() < deadline:
            os.write(fd, b"\r")
            answer += read_until(fd, b"login:", 5)
        assert b"login:" in answer, answer[-2000:]
        exit_code = detach(pid, fd, 30)
        assert exit_code is not None, "kaconsole3 did not end on the escape sequence"
        assert exit_code == 0
    finally:
        reap(pid, fd)


def test_kexec_and_broken_bootloader_side_by_side(site: QemuSite) -> None:
    """node-1 is deployed with BootNewEnvKexec; node-2's image gets no bootloader and never comes back."""
    kexec_node, broken_node = site.nodes
    boots_before = pxe_boots(site, "10.202.1.1")
    broken_console = site.directory / "run" / "node-2" / "console.log"
    console_before = broken_console.stat().st_size
    commands = {
        "kexec": deploy_command(site, [kexec_node], "--force-steps",
                                f"{UNTRUSTED_KASCADE}&BootNewEnv|BootNewEnvKexec:0:900"),
        "broken": deploy_command(site, [broken_node], "--disable-bootloader-install",
                                 "--reboot-classical-timeout", "300", "--force-steps",
                                 f"{UNTRUSTED_KASCADE}&BootNewEnv|BootNewEnvClassical:0:900"),
    }
    running = {name: subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      env=site.env) for name, argv in commands.items()}
    outputs = {name: proc.communicate(timeout=3600)[0] for name, proc in running.items()}
    kexec, broken = running["kexec"], running["broken"]
    assert kexec.returncode == 0, outputs["kexec"]
    assert "BootNewEnvKexec" in outputs["kexec"]
    assert_deployed_debian(site, kexec_node, "10.202.1.1")
    # kexec, not a reboot: the firmware ran only to boot the deployment environment
    # (once, twice if SetDeploymentEnv was retried), never into the deployed system
    assert pxe_boots(site, "10.202.1.1") - boots_before == outputs["kexec"].count("Performing a Deploy[SetDeploymentEnv")
    # as in Kadeploy3, failed nodes are a result, not a request error: exit 0, node listed KO
    assert broken.returncode == 0, outputs["broken"]
    assert "The deployment failed on nodes" in outputs["broken"]
    assert f"{broken_node} (BootNewEnvClassical-wait_reboot: Unreachable after the reboot)" in outputs["broken"]
    assert not port_open("10.202.1.2", 22)
    # the firmware found no bootloader: no kernel of the image ever started on node-2
    with broken_console.open("rb") as console:
        console.seek(console_before)
        assert b"debian12-min login" not in console.read()
