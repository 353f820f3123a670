"""fsa images: stored by the broadcast, restored by `decompress_environment` with fsarchiver.

The commands are run by a real `sh` against a recording `fsarchiver` (and
`umount`) placed first on PATH, so what is checked is the argv the node's
fsarchiver would receive, after the shell has parsed the command.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from kadeploy.errors import KadeployError
from kadeploy.steps import commands, fsarchiver
from kadeploy.steps.plan import DeployPlan
from kadeploy.steps.pruning import prune

FSA = DeployPlan(cluster="c1", block_device="/dev/sda", deploy_part_num=3, swap_part_num=1, prod_part_num=2,
                 tmp_part_num=5, env_name="debian12-min-fsa", image_kind="fsa", image_compression="3",
                 image_file="server:///var/cache/images/debian12-min.fsa", filesystem="ext4")
MULTIPART = replace(FSA, multipart=True, image_partitions=((0, "/dev/sda3"), (1, "/dev/sda5")))

UNTRUSTED = ["switch_pxe", "set_vlan", "reboot", "wait_reboot", "send_key_in_deploy_env",
             "create_partition_table", "format_deploy_part", "mount_deploy_part",
             "format_tmp_part", "format_swap_part"]
KASCADE = ["send_environment", "decompress_environment", "mount_deploy_part", "manage_admin_post_install",
           "manage_user_post_install", "check_kernel_files", "send_key", "install_bootloader", "sync"]

RECORDER = """#!/bin/sh
python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "$@" >> "$RECORD"
exit "${EXIT_STATUS:-0}"
"""


def run_on_fake_node(command: str, tmp_path: Path, exit_status: int = 0) -> tuple[int, list[list[str]]]:
    """Run `command` with sh; fsarchiver and umount only record their arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("fsarchiver", "umount"):
        (bin_dir / tool).write_text(RECORDER.replace("$RECORD", f"$RECORD.{tool}"))
        (bin_dir / tool).chmod(0o755)
    record = tmp_path / "record"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "RECORD": str(record),
           "EXIT_STATUS": str(exit_status)}
    status = subprocess.run(["sh", "-c", command], env=env, cwd=tmp_path, check=False).returncode
    calls = []
    for tool in ("umount", "fsarchiver"):
        path = Path(f"{record}.{tool}")
        if path.exists():
            calls += [[tool, *json.loads(line)] for line in path.read_text().splitlines()]
    return status, calls


def test_the_broadcast_stores_an_fsa_image_under_kadeploy3s_name(tmp_path):
    plan = replace(FSA, rambin_dir=str(tmp_path / "rambin"))
    sink = commands.image_sink(plan)
    subprocess.run(["sh", "-c", sink], input=b"FSA0archive", check=True)
    assert (tmp_path / "rambin" / "_KATMP_debian12-min.fsa").read_bytes() == b"FSA0archive"
    assert fsarchiver.stored_image_path(FSA) == "/rambin/_KATMP_debian12-min.fsa"


def test_multipart_restores_every_mapped_filesystem_with_kadeploy3s_options(tmp_path):
    command = commands.decompress_stored_image(MULTIPART)
    status, calls = run_on_fake_node(command, tmp_path)
    assert status == 0
    nproc = str(sum(1 for line in open("/proc/cpuinfo") if line.startswith("processor")))
    assert calls == [
        ["umount", "/dev/sda3"], ["umount", "/dev/sda5"],
        ["fsarchiver", "-j", nproc, "-z", "3", "restfs", "/rambin/_KATMP_debian12-min.fsa",
         "id=0,dest=/dev/sda3", "id=1,dest=/dev/sda5"],
    ]


def test_a_single_filesystem_image_goes_to_the_deploy_partition(tmp_path):
    _, calls = run_on_fake_node(fsarchiver.restore_command(replace(FSA, image_compression="0")), tmp_path)
    assert calls[-1][3:] == ["restfs", "/rambin/_KATMP_debian12-min.fsa", "id=0,dest=/dev/sda3"]  # no -z 0
    listed = replace(FSA, image_partitions=((2, "/dev/sdb1"), (0, "/dev/sdb2")), deploy_part_num=4)
    assert fsarchiver.restore_targets(listed) == [(2, "/dev/sda4")]


def test_the_stored_copy_is_removed_and_fsarchivers_failure_is_the_steps(tmp_path):
    plan = replace(MULTIPART, rambin_dir=str(tmp_path))
    stored = Path(fsarchiver.stored_image_path(plan))
    stored.write_bytes(b"x")
    status, _ = run_on_fake_node(fsarchiver.restore_command(plan), tmp_path, exit_status=1)
    assert status == 1 and not stored.exists()


def test_hostile_file_names_and_devices_stay_single_words(tmp_path):
    hostile = replace(MULTIPART, image_file="http://srv/a b;touch pwned.fsa",
                      image_partitions=((0, "/dev/x;touch pwned"),))
    status, calls = run_on_fake_node(commands.decompress_stored_image(hostile), tmp_path)
    assert status == 0 and not (tmp_path / "pwned").exists()
    assert calls[-1][-2:] == ["/rambin/_KATMP_a b;touch pwned.fsa", "id=0,dest=/dev/x;touch pwned"]


def test_multipart_without_partitions_is_an_error_not_an_empty_restore():
    with pytest.raises(KadeployError, match="has no options/partitions"):
        fsarchiver.restore_command(replace(MULTIPART, image_partitions=()))


def test_a_cluster_that_does_not_decompress_on_the_fly_stores_then_unpacks_tar_and_dd(tmp_path):
    tar_plan = DeployPlan(cluster="c1", block_device="/dev/sda", deploy_part_num=3, image_file="/e/x.tgz",
                          decompress_on_the_fly=False, rambin_dir=str(tmp_path / "rambin"),
                          extraction_dir=str(tmp_path / "dest"))
    source = tmp_path / "src"
    source.mkdir()
    (source / "hello").write_text("world")
    archive = subprocess.run(["tar", "-C", str(source), "-czf", "-", "."], capture_output=True, check=True).stdout
    (tmp_path / "dest").mkdir()
    subprocess.run(["sh", "-c", commands.image_sink(tar_plan)], input=archive, check=True)
    assert (tmp_path / "rambin" / "_KATMP_x.tgz").exists()
    subprocess.run(["sh", "-c", commands.decompress_stored_image(tar_plan)], check=True)
    assert (tmp_path / "dest" / "hello").read_text() == "world"
    assert not (tmp_path / "rambin" / "_KATMP_x.tgz").exists()
    dd_plan = replace(tar_plan, image_kind="dd", image_compression="xz", image_file="/e/x.ddxz")
    assert commands.decompress_stored_image(dd_plan) == (
        f"xz -cd < {tmp_path}/rambin/_KATMP_x.ddxz > /dev/sda3; status=$?; "
        f"rm -f {tmp_path}/rambin/_KATMP_x.ddxz; exit $status")


def test_fsa_keeps_decompress_environment_and_mounts_only_after_it():
    assert prune("SetDeploymentEnvUntrusted", UNTRUSTED, FSA) == [
        "switch_pxe", "reboot", "wait_reboot", "create_partition_table", "format_swap_part"]
    assert prune("BroadcastEnvKascade", KASCADE, FSA) == [
        "send_environment", "decompress_environment", "mount_deploy_part", "check_kernel_files",
        "install_bootloader", "sync"]


def test_multipart_leaves_swap_and_tmp_alone():
    plan = replace(MULTIPART, reformat_tmp="ext4")
    steps = prune("SetDeploymentEnvUntrusted", UNTRUSTED, plan)
    assert "format_tmp_part" not in steps and "format_swap_part" not in steps
    assert "format_tmp_part" in prune("SetDeploymentEnvUntrusted", UNTRUSTED, replace(FSA, reformat_tmp="ext4"))


def test_stream_decompressed_images_do_not_run_decompress_environment():
    tar = DeployPlan(cluster="c1", block_device="/dev/sda", deploy_part_num=3)
    assert "decompress_environment" not in prune("BroadcastEnvKascade", KASCADE, tar)
    assert "decompress_environment" in prune("BroadcastEnvKascade", KASCADE, replace(tar, decompress_on_the_fly=False))
