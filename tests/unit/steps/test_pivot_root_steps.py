"""BootNewEnvPivotRoot (issue 17, point 2): the kernel check, the switch-root request, the fallback and its stats.

The node commands run in a real /bin/sh over a fake root (a crafted bzImage
header, symlinks as Debian's /vmlinuz); `uname` is a script on PATH so that
the running kernel is the one the test names. The fallback runs the real
engine and `NodeSteps` with a scripted executor: a node whose environment
kernel differs goes on to BootNewEnvKexec, with a line saying why, and the
statistics then hold both implementations.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from kadeploy.boot.commands import CommandTable, RemoteOp
from kadeploy.boot.pxe import BootTarget, PXEMethodSettings, PXEProfiles
from kadeploy.boot.window import RebootWindow
from kadeploy.cli.stepstats import step_table
from kadeploy.db import Database
from kadeploy.db import stats as db_stats
from kadeploy.engine import ImplementationSpec, ListOutput, Workflow
from kadeploy.remote.result import CommandResult
from kadeploy.steps import commands
from kadeploy.steps.context import ClusterRun, FileRef
from kadeploy.steps.deploy import NodeSteps
from kadeploy.steps.macrosteps import deploy_implementation
from kadeploy.steps.plan import DeployPlan
from kadeploy.steps.timing import TimedLibrary

RUNNING = "6.1.0-28-amd64"


def bzimage(version: str) -> bytes:
    """The first bytes of an x86 bzImage: `HdrS` at 0x202, the version string's offset (- 0x200) at 0x20E."""
    image = bytearray(0x600)
    image[0x202:0x206] = b"HdrS"
    image[0x20E:0x210] = (0x300).to_bytes(2, "little")
    text = f"{version} (debian-kernel@lists.debian.org) #1 SMP\0".encode()
    image[0x500:0x500 + len(text)] = text
    return bytes(image)


def run_check(tmp_path: Path, kernel: str, running: str = RUNNING) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "uname").write_text(f"#!/bin/sh\necho {running}\n")
    (bin_dir / "uname").chmod(0o755)
    plan = DeployPlan(cluster="c1", block_device="/dev/sda", deploy_part_num=3, env_kernel=kernel,
                      extraction_dir=str(tmp_path / "dest"))
    return subprocess.run(["/bin/sh", "-c", commands.same_kernel_check(plan)], capture_output=True, text=True,
                          timeout=30, env={"PATH": f"{bin_dir}:/usr/bin:/bin"})


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    root = tmp_path / "dest"
    (root / "boot").mkdir(parents=True)
    return root


def test_the_kernel_version_is_read_from_the_bzimage_header_through_the_images_symlinks(tmp_path, dest):
    # the file name says nothing: only the header can tell
    (dest / "boot" / "vmlinuz").write_bytes(bzimage(RUNNING))
    (dest / "vmlinuz").symlink_to("/boot/vmlinuz")  # absolute: resolved inside the image, not on this host
    assert run_check(tmp_path, "/vmlinuz").returncode == 0
    other = run_check(tmp_path, "/vmlinuz", running="6.1.0-31-amd64")
    assert other.returncode == 1
    assert other.stderr.strip() == f"the environment's kernel is {RUNNING} and the running kernel is 6.1.0-31-amd64"


def test_without_a_header_the_file_name_gives_the_version(tmp_path, dest):
    (dest / "boot" / f"vmlinuz-{RUNNING}").write_bytes(b"not a bzImage")
    (dest / "vmlinuz").symlink_to(f"boot/vmlinuz-{RUNNING}")
    assert run_check(tmp_path, "/vmlinuz").returncode == 0
    assert "running kernel is 5.10.0-1-amd64" in run_check(tmp_path, "/vmlinuz", running="5.10.0-1-amd64").stderr


def test_a_kernel_whose_version_cannot_be_told_or_that_is_missing_is_refused(tmp_path, dest):
    (dest / "boot" / "kernel.bin").write_bytes(b"\0" * 1024)
    unknown = run_check(tmp_path, "/boot/kernel.bin")
    assert unknown.returncode == 1 and "cannot tell its version" in unknown.stderr
    missing = run_check(tmp_path, "/boot/nothing")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "Environment kernel file /boot/nothing not found on the deployed partition"


def test_the_switch_root_request_is_refused_where_the_init_offers_no_hook():
    assert not Path(commands.PIVOT_HOOK).exists()  # this host's init is not a deployment environment's
    plan = DeployPlan(cluster="c1", block_device="/dev/sda", deploy_part_num=3)
    result = subprocess.run(["/bin/sh", "-c", commands.switch_root_request(plan)], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 1
    assert f"has no switch-root hook ({commands.PIVOT_HOOK})" in result.stderr


def test_pivot_root_waits_like_a_kexec_and_checks_the_kernel_before_touching_the_boot():
    pivot = deploy_implementation("BootNewEnvPivotRoot")
    assert pivot.waits_for == "kexec"
    steps = list(pivot.microsteps)
    assert steps.index("check_same_kernel") < steps.index("switch_pxe") < steps.index("switch_root")
    assert steps[-1] == "wait_reboot"


# -- the fallback, through the engine -----------------------------------------------------------------

N1, N2 = "node-1.c1.testbed", "node-2.c1.testbed"
MISMATCH = "the environment's kernel is 6.1.0-9-amd64 and the running kernel is 6.1.0-28-amd64"


class KernelExecutor:
    """Node commands succeed, except the kernel check on node-2, which fails as the shell would."""

    def __init__(self) -> None:
        self.commands: dict[str, list[str]] = {N1: [], N2: []}

    async def run(self, hosts, command, *, input=None, timeout=None, env=None, relay=True) -> dict[str, CommandResult]:
        results = {}
        for node in hosts:
            self.commands[node].append(command)
            failed = node == N2 and command == commands.same_kernel_check(PLAN)
            results[node] = CommandResult(node, 1, stderr=MISMATCH + "\n") if failed else CommandResult(node, 0)
        return results

    async def put(self, hosts, local_path, remote_path, *, timeout=None, mode=None) -> dict[str, CommandResult]:
        return {node: CommandResult(node, 0) for node in hosts}

    def forget(self, hostnames) -> None:
        pass


PLAN = DeployPlan(cluster="c1", block_device="/dev/sda", deploy_part_num=3, env_kernel="/vmlinuz",
                  env_initrd="/initrd.img")


@pytest.fixture
def ssh_port():
    """The deployed systems' sshd: a listening socket (the deployment environment's port stays closed)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_a_node_with_another_kernel_falls_back_to_kexec_saying_why_and_stats_show_both(tmp_path, ssh_port):
    executor = KernelExecutor()
    run = ClusterRun(
        wid="D-1", user="bob", cluster="c1", plan=PLAN, hosts={N1: "127.0.0.1", N2: "127.0.0.1"},
        targets={N1: BootTarget(N1, "10.200.1.1"), N2: BootTarget(N2, "10.200.1.2")},
        executor=executor,  # type: ignore[arg-type]
        reboot_window=RebootWindow(2), gate=None, commands=CommandTable({"reboot": [RemoteOp("soft", "true")]}),
        pxe=PXEProfiles(PXEMethodSettings("PXElinux", tmp_path / "tftpboot", export_server="10.200.0.1")),
        pxe_repository=tmp_path, deploy_kernel="deploy-vmlinuz", deploy_initrd="deploy-initrd",
        deploy_kernel_params="rw", reboot_timeout=lambda n: 20, kexec_timeout=lambda n: 20,
        sleep_before_ping=0.0, probe_interval=0.1, check_window=10, ssh_port=ssh_port,
        deploy_env_port=_closed_port(), partitioning_script="parted", bootloader_script="grub-install",
        custom_broadcast_cmd="", image=FileRef(tmp_path / "image.tgz", 1), ssh_key=None, archives={},
        custom_files={}, vlan_command=lambda nodes, vlan: "true", vlan_hosts={}, power_kind="")
    timed = TimedLibrary(NodeSteps(run, "Deploy"))
    output = ListOutput()
    workflow = Workflow("Deploy", "c1", [("BootNewEnv", [ImplementationSpec("BootNewEnvPivotRoot", timeout=60),
                                                         ImplementationSpec("BootNewEnvKexec", timeout=60)])],
                        timed, output)
    result = await workflow.run([N1, N2])

    assert sorted(result.ok) == [N1, N2] and not result.ko
    assert result.records[N1].steps[0].implementation == "BootNewEnvPivotRoot"
    assert result.records[N2].steps[0].implementation == "BootNewEnvKexec"
    assert result.records[N2].steps[0].retries == 1  # the fallback is counted, as Kadeploy3's retry_step3
    # node-1 was switched, never kexec'd; node-2 was kexec'd, never switched
    assert commands.switch_root_request(PLAN) in executor.commands[N1]
    assert not any("kexec -l" in c for c in executor.commands[N1])
    assert commands.switch_root_request(PLAN) not in executor.commands[N2]
    assert any("kexec -l" in c for c in executor.commands[N2])
    said = [text for text in output.texts(3) if "does not apply" in text]
    assert said == [f"  {N2}: BootNewEnvPivotRoot does not apply ({MISMATCH}); "
                    "the next implementation of the macro-step will boot it"], output.texts(5)

    database = Database(f"sqlite:///{tmp_path / 'k.db'}")
    database.migrate()
    rows = [{"wid": "D-1", "user": "bob", "hostname": node, "start": 1, "success": True,
             "step3": record.steps[0].implementation, "step3_duration": round(record.steps[0].duration),
             "micro_steps": timed.of(node)} for node, record in result.records.items()]
    database.transaction(lambda s: db_stats.add_records(s, rows))
    stats = database.transaction(lambda s: db_stats.step_durations(s, db_stats.StatsFilter()))
    database.dispose()
    assert set(stats["macro"]) == {"BootNewEnvPivotRoot", "BootNewEnvKexec"}
    assert stats["micro"]["BootNewEnvPivotRoot/check_same_kernel"]["count"] == 2  # node-2's try is timed too
    assert stats["micro"]["BootNewEnvPivotRoot/switch_root"]["count"] == 1
    table = step_table(stats)
    assert any(line.startswith("BootNewEnvPivotRoot ") for line in table)
    assert any(line.startswith("BootNewEnvKexec ") for line in table)
