"""Node commands built from the plan: exact shapes and quoting of user values."""

import shlex
import subprocess
from dataclasses import replace

import pytest

from kadeploy.errors import KadeployError
from kadeploy.steps import commands
from kadeploy.steps.plan import DeployPlan, partition_device

PLAN = DeployPlan(cluster="c1", block_device="/dev/sda", deploy_part_num=3, swap_part_num=1,
                  tmp_part_num=5, env_name="debian12-min", env_kernel="/vmlinuz", env_initrd="/initrd.img")


def test_partition_device_names():
    assert partition_device("/dev/sda", 3) == "/dev/sda3"
    assert partition_device("/dev/nvme0n1", 2) == "/dev/nvme0n1p2"
    assert replace(PLAN, block_device="/dev/sdb").disk_index == 1


def test_image_sinks_per_kind_and_compression():
    assert commands.image_sink(PLAN) == "gzip -cd | tar --numeric-owner -C /mnt/dest -xf -"
    assert commands.image_sink(replace(PLAN, image_compression="zstd")).startswith("zstd -cd | tar")
    assert commands.image_sink(replace(PLAN, image_kind="dd", image_compression="xz")) == "xz -cd > /dev/sda3"
    with pytest.raises(KadeployError, match="tar, dd and fsa are"):
        commands.image_sink(replace(PLAN, image_kind="squashfs"))


def test_variables_are_exported_quoted_so_hostile_values_stay_literal(tmp_path):
    hostile = replace(PLAN, env_name="x'; touch " + str(tmp_path / "pwned") + "; '")
    variables = commands.deploy_variables(hostile)
    script = "#!/bin/sh\nprintf '%s' \"$KADEPLOY_ENV\"\n"
    out = subprocess.run(["sh", "-c", commands.run_script(variables)], input=script.encode(),
                         capture_output=True, check=True).stdout.decode()
    assert out == hostile.env_name
    assert not (tmp_path / "pwned").exists()
    assert variables["KADEPLOY_DEPLOY_PART"] == "/dev/sda3"
    assert variables["KADEPLOY_PART_TYPE"] == "83"


def test_check_kernel_files_reports_kadeploy3_message(tmp_path):
    plan = replace(PLAN, extraction_dir=str(tmp_path))
    result = subprocess.run(["sh", "-c", commands.check_kernel_files(plan)], capture_output=True)
    assert result.returncode == 1
    assert b"Environment kernel file /vmlinuz not found in tarball" in result.stderr
    (tmp_path / "boot").mkdir()
    (tmp_path / "boot" / "vmlinuz-6.1").write_text("k")
    (tmp_path / "vmlinuz").symlink_to("boot/vmlinuz-6.1")
    (tmp_path / "initrd.img").write_text("i")
    assert subprocess.run(["sh", "-c", commands.check_kernel_files(plan)]).returncode == 0


def test_custom_send_destination_substitutes_and_refuses_escapes():
    variables = commands.deploy_variables(PLAN)
    assert commands.custom_send_destination("$KADEPLOY_ENV_EXTRACTION_DIR/etc/", variables) == "/mnt/dest/etc/"
    with pytest.raises(KadeployError):
        commands.custom_send_destination("$KADEPLOY_ENV_EXTRACTION_DIR/../etc", variables)


def test_kexec_load_resolves_links_inside_the_image():
    cmd = commands.kexec_load("/vmlinuz", "/initrd.img", "root=/dev/sda3 ro", "/mnt/dest")
    assert "readlink" in cmd and "--append='root=/dev/sda3 ro'" in cmd
    shlex.split(cmd)  # well-formed shell words


@pytest.mark.parametrize("loop", [False, True])
def test_kernel_links_resolve_inside_the_image_and_a_loop_fails_fast(tmp_path, loop):
    """A chain of links resolves inside the image; a loop (the user's image) fails naming the path."""
    (tmp_path / "boot").mkdir()
    (tmp_path / "boot" / "vmlinuz-6.1").write_text("k")
    (tmp_path / "boot" / "current").symlink_to("vmlinuz-6.1")
    (tmp_path / "vmlinuz").symlink_to("/boot/current")  # absolute: inside the image, not the host's /boot
    if loop:
        (tmp_path / "boot" / "current").unlink()
        (tmp_path / "boot" / "current").symlink_to("../vmlinuz")
    script = commands._resolve_in_root("k", str(tmp_path), "/vmlinuz") + 'echo "$k"'
    result = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=10)
    if loop:
        assert result.returncode == 1
        assert result.stderr == "/vmlinuz: too many levels of symbolic links in the image\n"
    else:
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"{tmp_path}/boot/vmlinuz-6.1\n"
