"""Real firmware in the loop: PXE-boot, deploy and boot on two QEMU VMs.

Slow (software emulation: minutes per boot) and root-only. The module shares one
2-VM QEMU testbed with kadeploy3d and keeps the suite short by overlapping
deployments:

1. both VMs deployed at once with BootNewEnvClassical (PXE, then the disk);
2. kaconsole3 on node-1's serial console;
3. while node-2 is deployed in the background with no bootloader installed
   (it must never come back: the last test collects it), node-1 is deployed
   twice with BootNewEnvPivotRoot first and BootNewEnvKexec as its fallback:
   - an environment whose kernel file declares another release (a user
     post-install writes a copy of the image's kernel whose bzImage header
     says `<release>` with `amd64` replaced by `other`, and the description
     boots that file): the release check refuses the pivot, says so with both
     versions, and Kexec boots the node (a new kernel, up for less than
     BootNewEnv took, no firmware boot). Only the label differs (the same
     kernel runs after the kexec): the decision and the fallback on a real VM,
     not a second kernel build;
   - debian12-min itself: the deployment environment's init (PID 1) execs
     switch_root into the deployed Debian's systemd, whose sshd then answers.
     No boot happened after the deployment environment's own: the VM fetched
     its network bootloader (dnsmasq's log) and started the deployment
     environment (its /init's first console line) once per SetDeploymentEnv
     attempt and never again, and the deployed system's kernel has been up
     (/proc/uptime) since before the broadcast began (the server's step2 +
     step3 durations), while `uname -r` there is the image's kernel.
"""

from __future__ import annotations

import os
import pty
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.e2e.scenario import user_script_archive, workflow_id
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


# -- node-2: deployed with no bootloader, in the background while node-1's deployments run ------------

#: how long node-2's BootNewEnvClassical waits for a reboot that cannot come: well above the ~110 s a
#: QEMU VM takes to boot its deployed system (docs/design.md), the console shows no kernel ever started
NO_BOOTLOADER_REBOOT_TIMEOUT = 180


@dataclass
class BackgroundDeployment:
    """A kadeploy3 run started in the background, and node-2's console size when it started."""

    process: subprocess.Popen[str]
    console_before: int

    def wait(self, timeout: float = 3600) -> tuple[int, str]:
        output, _ = self.process.communicate(timeout=timeout)
        return self.process.returncode, output


@pytest.fixture(scope="module")
def deployment_without_bootloader(site: QemuSite) -> Iterator[BackgroundDeployment]:
    """node-2 deployed with --disable-bootloader-install, started when first asked for (node-1's
    deployments run meanwhile); collected by test_a_node_deployed_without_bootloader_never_comes_back."""
    node = site.nodes[1]
    argv = deploy_command(site, [node], "--disable-bootloader-install",
                          "--reboot-classical-timeout", str(NO_BOOTLOADER_REBOOT_TIMEOUT), "--force-steps",
                          f"{UNTRUSTED_KASCADE}&BootNewEnv|BootNewEnvClassical:0:900")
    before = console_size(site, 2)
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=site.env)
    deployment = BackgroundDeployment(process, before)
    try:
        yield deployment
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=60)


# -- node-1: BootNewEnvPivotRoot, and its fallback to BootNewEnvKexec ------------------------------------

PIVOT_THEN_KEXEC = f"{UNTRUSTED_KASCADE}&BootNewEnv|BootNewEnvPivotRoot:0:900,BootNewEnvKexec:0:900"

# Run in the deployment environment after the image is written: a copy of the image's kernel whose
# bzImage header version string says `...-other` instead of `...-amd64` (same length, same kernel).
RELABEL = r"""#!/bin/sh
set -e
D="$KADEPLOY_ENV_EXTRACTION_DIR"
exec python3 -c '
import sys
data = bytearray(open(sys.argv[1], "rb").read())
assert data[0x202:0x206] == b"HdrS"
start = 0x200 + int.from_bytes(data[0x20E:0x210], "little")
end = data.index(b" ", start)
assert data[start:end].endswith(b"amd64"), data[start:end]
data[end - 5:end] = b"other"
open(sys.argv[2], "wb").write(data)
' "$D/$(readlink "$D/vmlinuz")" "$D/boot/vmlinuz-relabelled"
"""


def environment_starts(console: bytes) -> int:
    """How many times the deployment environment's /init started (its first console line)."""
    return console.count(b"kadeploy-deploy-env: loading drivers")


def uptime(site: QemuSite, node: str) -> float:
    """Seconds since the running kernel started."""
    return float(site.ssh(node, "cat /proc/uptime").stdout.split()[0])


def step_durations(site: QemuSite, result: subprocess.CompletedProcess[str]) -> tuple[int, int]:
    """The BroadcastEnv and BootNewEnv durations the server recorded for this deployment."""
    row = site.tool("kastat3", "-w", workflow_id(result), "-F", "step2_duration,step3_duration").stdout.split()
    broadcast, boot = row[0].split(",")
    return int(broadcast), int(boot)


def console_path(site: QemuSite, index: int) -> Path:
    return site.directory / "run" / f"node-{index}" / "console.log"


def console_since(site: QemuSite, index: int, offset: int) -> bytes:
    with console_path(site, index).open("rb") as console:
        console.seek(offset)
        return console.read()


def console_size(site: QemuSite, index: int) -> int:
    path = console_path(site, index)
    return path.stat().st_size if path.exists() else 0


def relabelled_environment(directory: Path) -> Path:
    description = yaml.safe_load((CACHE / "user-images" / "debian12-min.yaml").read_text())
    description["name"] = "debian12-min-relabelled"
    description["boot"]["kernel"] = "/boot/vmlinuz-relabelled"
    description["postinstalls"] = [user_script_archive(directory, "relabel.sh", RELABEL)]
    path = directory / "relabelled.yaml"
    path.write_text(yaml.safe_dump(description))
    return path


def test_an_environment_kernel_of_another_release_falls_back_to_kexec_and_says_so(
        site: QemuSite, deployment_without_bootloader: BackgroundDeployment, tmp_path: Path) -> None:
    node, address = site.nodes[0], "10.202.1.1"
    console_before = console_size(site, 1)
    boots_before = pxe_boots(site, address)
    release = image_kernel_release()
    started = time.monotonic()
    result = site.tool("kadeploy3", "-a", str(relabelled_environment(tmp_path)), "-k", f"{site.user_key}.pub",
                       "-m", node, "-V", "4", "--force-steps", PIVOT_THEN_KEXEC, check=False, timeout=3600)
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert "The deployment is successful on nodes" in result.stdout, result.stdout
    said = [line for line in result.stdout.splitlines() if "BootNewEnvPivotRoot does not apply" in line]
    other = release.removesuffix("amd64") + "other"
    assert len(said) == 1, result.stdout
    assert f"the environment's kernel is {other} and the running kernel is {release}" in said[0]
    assert "Performing a Deploy[BootNewEnvKexec] step" in result.stdout
    assert_deployed_debian(site, node, address)
    # kexec, not a reboot: the firmware ran only to boot the deployment environment
    # (once, twice if SetDeploymentEnv was retried), never into the deployed system
    text = console_since(site, 1, console_before)
    environments = result.stdout.count("Performing a Deploy[SetDeploymentEnv")
    assert b"switching root" not in text
    assert environment_starts(text) == environments
    assert pxe_boots(site, address) - boots_before == environments
    _, boot = step_durations(site, result)
    assert uptime(site, node) < boot + 60, "no new kernel: kexec did not happen"
    print(f"\nQEMU deployment falling back from BootNewEnvPivotRoot to BootNewEnvKexec: {seconds:.0f}s")


def test_pivot_root_starts_the_deployed_system_without_any_boot(
        site: QemuSite, deployment_without_bootloader: BackgroundDeployment) -> None:
    node, address = site.nodes[0], "10.202.1.1"
    console_before = console_size(site, 1)
    boots_before = pxe_boots(site, address)
    started = time.monotonic()
    result = site.tool(*deploy_command(site, [node], "-V", "4", "--force-steps", PIVOT_THEN_KEXEC), check=False,
                       timeout=3600)
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert "The deployment is successful on nodes" in result.stdout, result.stdout
    assert "does not apply" not in result.stdout and "Deploy[BootNewEnvKexec]" not in result.stdout, result.stdout
    assert "Performing a Deploy[BootNewEnvPivotRoot] step" in result.stdout

    # the deployed Debian from /dev/sda3 with its own sshd, the marker port closed, on the image's kernel...
    assert_deployed_debian(site, node, address)
    # ... which is the kernel the deployment environment booted: no other one ever started
    text = console_since(site, 1, console_before)
    environments = result.stdout.count("Performing a Deploy[SetDeploymentEnv")
    assert b"switching root to /mnt/dest" in text
    assert environment_starts(text) == environments, text[-3000:]
    assert pxe_boots(site, address) - boots_before == environments
    broadcast, boot = step_durations(site, result)
    assert uptime(site, node) >= broadcast + boot, "the kernel restarted after the broadcast"
    # the deployed system's init, started by switch_root, is PID 1 now
    assert site.ssh(node, "cat /proc/1/comm").stdout.strip() == "systemd"
    print(f"\nQEMU deployment with BootNewEnvPivotRoot: {seconds:.0f}s")


def test_a_node_deployed_without_bootloader_never_comes_back(
        site: QemuSite, deployment_without_bootloader: BackgroundDeployment) -> None:
    """node-2's image got no bootloader: its Classical reboot times out and no kernel of it ever starts."""
    node = site.nodes[1]
    status, output = deployment_without_bootloader.wait()
    # as in Kadeploy3, failed nodes are a result, not a request error: exit 0, node listed KO
    assert status == 0, output
    assert "The deployment failed on nodes" in output
    assert f"{node} (BootNewEnvClassical-wait_reboot: Unreachable after the reboot)" in output
    assert not port_open("10.202.1.2", 22)
    # the firmware found no bootloader: no kernel of the image ever started on node-2
    assert b"debian12-min login" not in console_since(site, 2, deployment_without_bootloader.console_before)
