"""Step pruning (reference 5.3) decided from the deployment plan alone."""

from dataclasses import replace

from kadeploy.steps.plan import Archive, DeployPlan
from kadeploy.steps.pruning import prune

UNTRUSTED = ["switch_pxe", "set_vlan", "reboot", "wait_reboot", "send_key_in_deploy_env",
             "create_partition_table", "format_deploy_part", "mount_deploy_part",
             "format_tmp_part", "format_swap_part"]
KASCADE = ["send_environment", "decompress_environment", "mount_deploy_part", "manage_admin_post_install",
           "manage_user_post_install", "check_kernel_files", "send_key", "install_bootloader", "sync"]

BASE = DeployPlan(cluster="c1", block_device="/dev/sda", deploy_part_num=3, swap_part_num=1,
                  prod_part_num=2, tmp_part_num=5)


def test_plain_tar_deployment_keeps_partitioning_and_drops_optional_steps():
    assert prune("SetDeploymentEnvUntrusted", UNTRUSTED, BASE) == [
        "switch_pxe", "reboot", "wait_reboot", "create_partition_table", "format_deploy_part",
        "mount_deploy_part", "format_swap_part"]
    assert prune("BroadcastEnvKascade", KASCADE, BASE) == [
        "send_environment", "check_kernel_files", "install_bootloader", "sync"]


def test_key_reformat_and_postinstalls_bring_their_steps_back():
    plan = replace(BASE, ssh_key=True, reformat_tmp="ext4", user_postinstalls=(Archive("p.tgz"),))
    assert "send_key_in_deploy_env" in prune("SetDeploymentEnvUntrusted", UNTRUSTED, plan)
    assert "format_tmp_part" in prune("SetDeploymentEnvUntrusted", UNTRUSTED, plan)
    steps = prune("BroadcastEnvKascade", KASCADE, plan, has_admin_postinstall=True)
    assert steps.index("manage_admin_post_install") < steps.index("manage_user_post_install") < steps.index("send_key")


def test_dd_image_mounts_only_after_the_broadcast():
    plan = replace(BASE, image_kind="dd")
    assert "mount_deploy_part" not in prune("SetDeploymentEnvUntrusted", UNTRUSTED, plan)
    assert "format_deploy_part" not in prune("SetDeploymentEnvUntrusted", UNTRUSTED, plan)
    assert prune("BroadcastEnvKascade", KASCADE, plan)[:2] == ["send_environment", "mount_deploy_part"]


def test_whole_disk_and_unsupported_filesystem_drop_everything_that_needs_a_partition():
    plan = replace(BASE, image_kind="dd", whole_disk=True, filesystem="")
    assert prune("SetDeploymentEnvUntrusted", UNTRUSTED, plan) == ["switch_pxe", "reboot", "wait_reboot"]
    assert prune("BroadcastEnvKascade", KASCADE, plan) == ["send_environment", "sync"]


def test_request_flags_and_grubpxe_localboot():
    plan = replace(BASE, disable_disk_partitioning=True, disable_bootloader_install=True, vlan="4")
    untrusted = prune("SetDeploymentEnvUntrusted", UNTRUSTED, plan)
    assert "create_partition_table" not in untrusted and "set_vlan" in untrusted
    assert "install_bootloader" not in prune("BroadcastEnvKascade", KASCADE, plan)
    assert "install_bootloader" not in prune("BroadcastEnvKascade", KASCADE, replace(BASE, localboot_method="GrubPXE"))


def test_deploying_on_the_swap_partition_does_not_mkswap_it():
    plan = replace(BASE, deploy_part_num=1)
    assert "format_swap_part" not in prune("SetDeploymentEnvUntrusted", UNTRUSTED, plan)
