"""BootNewEnvPivotRoot on a real VM: the deployed system starts without its firmware and without a new kernel.

One QEMU VM, two deployments (Untrusted + Kascade + PivotRoot, Kexec as the
fallback). In the first, the deployment environment's init (PID 1) execs
switch_root into the deployed Debian's systemd, whose sshd then answers.
What shows that no boot happened after the deployment environment's own:
the VM fetched its network bootloader (dnsmasq's log) and started the
deployment environment (its /init's first console line) once per
SetDeploymentEnv attempt and never again, and the deployed system's kernel
has been up (/proc/uptime) since before the broadcast began (the server's
step2 + step3 durations), while `uname -r` there is the image's kernel.

In the second, the environment's kernel file declares another release: a
user post-install writes a copy of the image's kernel whose bzImage header
says `<release>` with `amd64` replaced by `other`, and the description boots
that file. The release check refuses the pivot, says so with both versions,
and Kexec boots the node (a new kernel, up for less than BootNewEnv took, still no firmware boot).
Only the label differs (the same kernel runs after the kexec): the test
shows the decision and the fallback on a real VM, not a second kernel build.
"""

from __future__ import annotations

import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.qemu.conftest import CACHE, QemuSite, qemu_site
from tests.e2e.scenario import workflow_id
from tests.qemu.test_qemu_deploy import (
    UNTRUSTED_KASCADE,
    assert_deployed_debian,
    deploy_command,
    image_kernel_release,
    pxe_boots,
)

pytestmark = [pytest.mark.slow, pytest.mark.root]

ADDRESS = "10.202.1.1"
STEPS = f"{UNTRUSTED_KASCADE}&BootNewEnv|BootNewEnvPivotRoot:0:900,BootNewEnvKexec:0:900"

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


@pytest.fixture(scope="module")
def site() -> Iterator[QemuSite]:
    with qemu_site(1) as running:
        yield running


def environment_starts(console: bytes) -> int:
    """How many times the deployment environment's /init started (its first console line)."""
    return console.count(b"kadeploy-deploy-env: loading drivers")


def uptime(site: QemuSite, node: str) -> float:
    """Seconds since the running kernel started."""
    return float(site.ssh(node, "cat /proc/uptime").stdout.split()[0])


def step_durations(site: QemuSite, result) -> tuple[int, int]:
    """The BroadcastEnv and BootNewEnv durations the server recorded for this deployment."""
    row = site.tool("kastat3", "-w", workflow_id(result), "-F", "step2_duration,step3_duration").stdout.split()
    broadcast, boot = row[0].split(",")
    return int(broadcast), int(boot)


def console_since(site: QemuSite, offset: int) -> bytes:
    with (site.directory / "run" / "node-1" / "console.log").open("rb") as console:
        console.seek(offset)
        return console.read()


def console_size(site: QemuSite) -> int:
    path = site.directory / "run" / "node-1" / "console.log"
    return path.stat().st_size if path.exists() else 0


def test_pivot_root_starts_the_deployed_system_without_any_boot(site: QemuSite) -> None:
    node = site.nodes[0]
    console_before = console_size(site)
    boots_before = pxe_boots(site, ADDRESS)
    started = time.monotonic()
    result = site.tool(*deploy_command(site, [node], "-V", "4", "--force-steps", STEPS), check=False,
                       timeout=3600)
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert "The deployment is successful on nodes" in result.stdout, result.stdout
    assert "does not apply" not in result.stdout and "Deploy[BootNewEnvKexec]" not in result.stdout, result.stdout
    assert "Performing a Deploy[BootNewEnvPivotRoot] step" in result.stdout

    # the deployed Debian from /dev/sda3 with its own sshd, the marker port closed, on the image's kernel...
    assert_deployed_debian(site, node, ADDRESS)
    # ... which is the kernel the deployment environment booted: no other one ever started
    text = console_since(site, console_before)
    environments = result.stdout.count("Performing a Deploy[SetDeploymentEnv")
    assert b"switching root to /mnt/dest" in text
    assert environment_starts(text) == environments, text[-3000:]
    assert pxe_boots(site, ADDRESS) - boots_before == environments
    broadcast, boot = step_durations(site, result)
    assert uptime(site, node) >= broadcast + boot, "the kernel restarted after the broadcast"
    # the deployed system's init, started by switch_root, is PID 1 now
    assert site.ssh(node, "cat /proc/1/comm").stdout.strip() == "systemd"
    print(f"\nQEMU deployment with BootNewEnvPivotRoot: {seconds:.0f}s")


def relabelled_environment(directory: Path) -> Path:
    script = directory / "relabel.sh"
    script.write_text(RELABEL)
    script.chmod(0o755)
    archive = directory / "relabel.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(script, arcname="relabel.sh")
    description = yaml.safe_load((CACHE / "user-images" / "debian12-min.yaml").read_text())
    description["name"] = "debian12-min-relabelled"
    description["boot"]["kernel"] = "/boot/vmlinuz-relabelled"
    description["postinstalls"] = [{"archive": str(archive), "compression": "gzip", "script": "relabel.sh"}]
    path = directory / "relabelled.yaml"
    path.write_text(yaml.safe_dump(description))
    return path


def test_an_environment_kernel_of_another_release_falls_back_to_kexec_and_says_so(site: QemuSite,
                                                                                   tmp_path: Path) -> None:
    node = site.nodes[0]
    console_before = console_size(site)
    boots_before = pxe_boots(site, ADDRESS)
    release = image_kernel_release()
    started = time.monotonic()
    result = site.tool("kadeploy3", "-a", str(relabelled_environment(tmp_path)), "-k", f"{site.user_key}.pub",
                       "-m", node, "-V", "4", "--force-steps", STEPS, check=False, timeout=3600)
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert "The deployment is successful on nodes" in result.stdout, result.stdout
    said = [line for line in result.stdout.splitlines() if "BootNewEnvPivotRoot does not apply" in line]
    other = release.removesuffix("amd64") + "other"
    assert len(said) == 1, result.stdout
    assert f"the environment's kernel is {other} and the running kernel is {release}" in said[0]
    assert "Performing a Deploy[BootNewEnvKexec] step" in result.stdout
    assert_deployed_debian(site, node, ADDRESS)
    text = console_since(site, console_before)
    environments = result.stdout.count("Performing a Deploy[SetDeploymentEnv")
    assert b"switching root" not in text
    assert environment_starts(text) == environments
    assert pxe_boots(site, ADDRESS) - boots_before == environments
    _, boot = step_durations(site, result)
    assert uptime(site, node) < boot + 60, "no new kernel: kexec did not happen"
    print(f"\nQEMU deployment falling back from BootNewEnvPivotRoot to BootNewEnvKexec: {seconds:.0f}s")
