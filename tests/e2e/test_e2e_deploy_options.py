"""Deployment options of Kadeploy3's black-box suite: `-r ext4`, `--disable-disk-partitioning`,
`--disable-bootloader-install`, a user postinstall archive, and a breakpoint at
`BroadcastEnvKascade:manage_user_post_install` (ssh lands in the deployment environment
with the image extracted under /mnt/dest). One batch: each scenario on its own node.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from scenario import assert_batch_ok, user_script_archive

pytestmark = [pytest.mark.e2e, pytest.mark.root, pytest.mark.testbed]

POSTINSTALL_SCRIPT = """#!/bin/sh
# user postinstall: leaves a trace of the variables Kadeploy exports (reference 3.7)
set -e
echo "$KADEPLOY_CLUSTER $KADEPLOY_DEPLOY_PART $KADEPLOY_ENV" > "$KADEPLOY_ENV_EXTRACTION_DIR/root/postinstall-done"
# the user's own bootloader configuration: kept only when install_bootloader is skipped
mkdir -p "$KADEPLOY_ENV_EXTRACTION_DIR/boot/grub"
cat > "$KADEPLOY_ENV_EXTRACTION_DIR/boot/grub/grub.cfg" <<END
# user bootloader
menuentry user {
  linux /vmlinuz root=$KADEPLOY_DEPLOY_PART
}
END
"""


def postinstall_env(site, directory: Path) -> Path:
    """An anonymous environment (local files) with one user postinstall archive."""
    description = yaml.safe_load(site.environments["debian12-min"].read_text())
    description["name"] = "debian12-min-post"
    description["postinstalls"] = [user_script_archive(directory, "post.sh", POSTINSTALL_SCRIPT)]
    path = directory / "post-env.yaml"
    path.write_text(yaml.safe_dump(description))
    return path


@pytest.fixture(scope="module")
def options_batch(site, tmp_path_factory):
    out = tmp_path_factory.mktemp("options")
    env = postinstall_env(site, out)
    n1, n2, n3, n4 = site.nodes[:4]
    before = {
        "tmp_uuid": site.blkid(n1, 5, "UUID"),
        "ptuuid": site.blkid(n2, None, "PTUUID"),
        "n1_ptuuid": site.blkid(n1, None, "PTUUID"),
    }

    def deploy(node: str, *args: str) -> list[str]:
        return ["kadeploy3", "-m", node, "-k", f"{site.user_key}.pub", "-o", str(out / f"{node}.ok"),
                "-n", str(out / f"{node}.ko"), *args]

    results = site.tools({
        n1: deploy(n1, "-e", "debian12-min", "-r", "ext4"),
        n2: deploy(n2, "-e", "debian12-min", "--disable-disk-partitioning", "-V", "4"),
        n3: deploy(n3, "-a", str(env), "--disable-bootloader-install", "-V", "4"),
        n4: deploy(n4, "-a", str(env), "--breakpoint", "BroadcastEnvKascade:manage_user_post_install"),
    })
    assert_batch_ok(results, out)
    return results, before


def test_reformat_tmp_makes_a_fresh_ext4_on_the_tmp_partition(site, options_batch) -> None:
    _, before = options_batch
    node = site.nodes[0]
    site.assert_debian_on_partition(node)
    assert site.blkid(node, 5, "TYPE") == "ext4"
    assert site.blkid(node, 5, "UUID") not in ("", before["tmp_uuid"])
    # partitioning did run here: a new disk identifier
    assert site.blkid(node, None, "PTUUID") != before["n1_ptuuid"]


def test_disable_disk_partitioning_keeps_the_partition_table(site, options_batch) -> None:
    results, before = options_batch
    node = site.nodes[1]
    site.assert_debian_on_partition(node)
    assert before["ptuuid"] and site.blkid(node, None, "PTUUID") == before["ptuuid"]
    assert "create_partition_table" not in results[node].stdout
    assert "format_deploy_part" in results[node].stdout


def test_disable_bootloader_install_keeps_the_users_bootloader_and_runs_the_postinstall(site, options_batch) -> None:
    results, _ = options_batch
    node = site.nodes[2]
    site.assert_debian_on_partition(node)
    assert "install_bootloader" not in results[node].stdout
    assert "manage_user_post_install" in results[node].stdout
    assert site.ssh(node, "head -1 /boot/grub/grub.cfg").stdout.strip() == "# user bootloader"
    trace = site.ssh(node, "cat /root/postinstall-done").stdout.split()
    assert trace == ["c1", "/dev/sda3", "debian12-min-post"]


def test_breakpoint_before_user_postinstall_leaves_the_node_in_the_deployment_environment(site, options_batch) -> None:
    node = site.nodes[3]
    status = site.node_status()[node]
    assert status["state"] == "deploy-env", status
    # ssh lands in the deployment environment (the user key was sent there) ...
    assert site.ssh(node, "cat /etc/hostname").stdout.strip() == node
    # ... with the image extracted under /mnt/dest, and the postinstall not run yet
    assert 'VERSION_ID="12"' in site.ssh(node, "cat /mnt/dest/etc/os-release").stdout
    assert site.ssh(node, "test -e /mnt/dest/root/postinstall-done", check=False).returncode == 1
