"""The fake node recognises exactly the commands the steps, the executor and the broadcast send."""

from __future__ import annotations

import pytest

from kadeploy.broadcast.pipeline import relay_command
from kadeploy.errors import KadeployError
from kadeploy.remote.shell import kill_command, wrap_command
from kadeploy.steps import commands
from kadeploy.steps.plan import DeployPlan
from kadeploy_testbed.fake.model import Distribution, FailureModel, draw
from kadeploy_testbed.fake.shell import classify, parse_sink, partition_number, unwrap

PLAN = DeployPlan(cluster="c1", block_device="/dev/sda", deploy_part_num=3, swap_part_num=1, prod_part_num=2,
                  tmp_part_num=5, env_kernel="/vmlinuz", env_initrd="/initrd.img", reformat_tmp="ext4",
                  env_kernel_params="console=tty0")


def kind_of(command: str) -> str:
    return classify(unwrap(wrap_command(command, {"KADEPLOY_X": "a b"})).command).kind


def test_unwrap_recovers_command_and_environment_of_the_executor_wrapper():
    unwrapped = unwrap(wrap_command("echo 'it''s'; true", {"VAR": "x y"}))
    assert unwrapped.pgid_marker
    assert unwrapped.env == {"VAR": "x y"}
    assert unwrapped.command == "echo 'it''s'; true"


def test_unwrap_leaves_a_raw_command_alone():
    unwrapped = unwrap(kill_command(4242))
    assert not unwrapped.pgid_marker
    assert classify(unwrapped.command).args == {"pgid": 4242}


@pytest.mark.parametrize(("command", "kind"), [
    (commands.run_script(commands.deploy_variables(PLAN)), "script"),
    (commands.append_authorized_keys(), "keys"),
    (commands.append_authorized_keys("/mnt/dest"), "keys"),
    (commands.format_deploy_part(PLAN), "format"),
    (commands.format_tmp_part(PLAN), "format"),
    (commands.format_swap_part(PLAN), "format"),
    (commands.mount_deploy_part(PLAN), "mount"),
    (commands.umount_deploy_part(PLAN), "umount"),
    (commands.reboot_from_deploy_env(), "reboot"),
    (commands.root_device_check("/dev/sda2"), "rootdev"),
    (commands.check_kernel_files(PLAN), "test"),
    (commands.unpack_archive(PLAN, "gzip"), "unpack"),
    (commands.run_archive_script(PLAN, "run.sh", {"A": "b"}), "archive-script"),
    ("sync", "noop"),
    ("mkdir -p /dev/shm/kexec_repository", "noop"),
    ("cat > /dev/shm/kexec_repository/vmlinuz", "put"),
    ("rm -rf / --no-preserve-root", "unknown"),
])
def test_step_commands_are_recognised(command, kind):
    assert kind_of(command) == kind


def test_kexec_of_the_deployed_system_resolves_kernel_and_root_inside_the_image():
    command = commands.kexec_load(PLAN.env_kernel, PLAN.env_initrd, "console=tty0 root=/dev/sda3", "/mnt/dest")
    parsed = classify(unwrap(wrap_command(command)).command)
    assert parsed.kind == "kexec"
    assert parsed.args == {"kernel": "/mnt/dest/vmlinuz", "initrd": "/mnt/dest/initrd.img",
                           "params": "console=tty0 root=/dev/sda3"}


def test_kexec_of_the_deployment_kernel():
    command = commands.kexec_load("/dev/shm/k/deploy-vmlinuz", "/dev/shm/k/deploy-initrd", "rw console=ttyS0")
    parsed = classify(command)
    assert parsed.args["kernel"] == "/dev/shm/k/deploy-vmlinuz"
    assert parsed.args["params"] == "rw console=ttyS0"


def test_check_kernel_files_lists_paths_and_messages():
    parsed = classify(commands.check_kernel_files(PLAN))
    assert parsed.args["checks"] == [
        ("/mnt/dest/vmlinuz", "Environment kernel file /vmlinuz not found in tarball"),
        ("/mnt/dest/initrd.img", "Environment initrd file /initrd.img not found in tarball")]


def test_relay_command_gives_back_its_json_config():
    parsed = classify(unwrap(wrap_command(relay_command({"total": 12, "sink": "cat > /dev/null"}))).command)
    assert parsed.kind == "relay"
    assert parsed.args["config"] == {"total": 12, "sink": "cat > /dev/null"}


@pytest.mark.parametrize(("compression", "kind", "target"), [("gzip", "tar", "/mnt/dest"), ("zstd", "dd", "/dev/sda3"),
                                                             ("none", "tar", "/mnt/dest")])
def test_image_sinks_are_parsed(compression, kind, target):
    plan = DeployPlan(cluster="c1", block_device="/dev/sda", deploy_part_num=3, image_kind=kind,
                      image_compression=compression, tar_options="--xattrs")
    sink = parse_sink(commands.image_sink(plan))
    assert (sink.compression, sink.kind, sink.target) == (compression, kind, target)
    assert partition_number("/dev/sda3") == 3 and partition_number("/dev/nvme0n1p2") == 2


def test_draws_are_reproducible_and_spread():
    values = [draw(7, node, "boot", 0) for node in range(2000)]
    assert values == [draw(7, node, "boot", 0) for node in range(2000)]
    assert values != [draw(8, node, "boot", 0) for node in range(2000)]
    assert 0.45 < sum(values) / len(values) < 0.55
    model = FailureModel(seed=7, rates={"boot": 0.05})
    share = sum(model.fails("boot", node, 0) for node in range(4000)) / 4000
    assert 0.035 < share < 0.065
    assert not any(model.fails("image", node, 0) for node in range(100))


def test_distribution_and_failure_specs_are_validated():
    assert Distribution.parse("60-120").pick(0.5) == 90
    assert Distribution.parse("2").pick(0.9) == 2
    for bad in ("120-60", "a-b", "-5", "1-2-3"):
        with pytest.raises(KadeployError, match="--boot-time"):
            Distribution.parse(bad)
    assert FailureModel.parse(1, 0.03, ["image=0.5"]).rates == {"boot": 0.03, "image": 0.5}
    with pytest.raises(KadeployError, match="unknown failure kind 'disk'"):
        FailureModel.parse(1, 0, ["disk=0.1"])
    with pytest.raises(KadeployError, match="KIND=RATE"):
        FailureModel.parse(1, 0, ["image"])
