"""What users add to a deployment: a preinstall, custom operations, their own PXE profile
(`-w -x --set-pxe-pattern`), and the BootNewEnvKexec implementation. One batch, one node each.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml
from scenario import assert_batch_ok, user_script_archive, workflow_id

from kadeploy_testbed.configdir import PARTITIONING_SCRIPT

pytestmark = [pytest.mark.e2e, pytest.mark.root, pytest.mark.testbed]

# SetDeploymentEnvUntrustedCustomPreInstall does no partitioning nor formatting: the
# preinstall partitions the disk (here as the cluster script does), then formats and
# mounts the deploy partition itself (reference 5.2).
PREINSTALL_SCRIPT = PARTITIONING_SCRIPT + """
mkfs.ext4 -q -F -L preinst "$KADEPLOY_DEPLOY_PART"
mkdir -p "$KADEPLOY_ENV_EXTRACTION_DIR"
mount "$KADEPLOY_DEPLOY_PART" "$KADEPLOY_ENV_EXTRACTION_DIR"
mkdir -p "$KADEPLOY_ENV_EXTRACTION_DIR/root"
echo "$KADEPLOY_ENV" > "$KADEPLOY_ENV_EXTRACTION_DIR/root/preinstall-done"
"""


def _preinstall_env(site, directory: Path) -> Path:
    description = yaml.safe_load(site.environments["debian12-min"].read_text())
    description["name"] = "debian12-min-pre"
    description["preinstall"] = user_script_archive(directory, "pre.sh", PREINSTALL_SCRIPT)
    path = directory / "pre-env.yaml"
    path.write_text(yaml.safe_dump(description))
    return path


def _custom_operations(directory: Path) -> Path:
    sent = directory / "motd.custom"
    sent.write_text("sent by a custom operation\n")
    operations = {
        "BroadcastEnvKascade": {
            "send_environment": {
                "post-ops": [
                    {"action": "exec", "name": "mark",
                     "command": "echo \"custom $KADEPLOY_DEPLOY_PART\" > $KADEPLOY_ENV_EXTRACTION_DIR/root/custom-op"},
                    {"action": "send", "name": "motd", "file": str(sent),
                     "destination": "$KADEPLOY_ENV_EXTRACTION_DIR/root", "scattering": "tree"},
                ],
            },
        },
    }
    path = directory / "custom.yaml"
    path.write_text(yaml.safe_dump(operations))
    return path


@pytest.fixture(scope="module")
def custom_batch(site, tmp_path_factory):
    out = tmp_path_factory.mktemp("custom")
    n1, n2, n3, n4 = site.nodes[:4]
    extra = out / "notes.txt"
    extra.write_text("uploaded by kadeploy3 -x\n")
    profile = out / "profile"
    profile.write_text("# FILES_PREFIX--notes.txt\nDEFAULT mine\nLABEL mine\n\tCOM32 /chain.c32\n"
                       "\tAPPEND hd0 NODE_SINGULARITY\n")
    pattern = out / "pattern"
    pattern.write_text(f"{n3},3\n")

    def deploy(node: str, *args: str) -> list[str]:
        return ["kadeploy3", "-m", node, "-k", f"{site.user_key}.pub", "-o", str(out / f"{node}.ok"),
                "-n", str(out / f"{node}.ko"), *args]

    # SetDeploymentEnvKexec needs a running system with kexec that accepts the deploy key:
    # the deployment environment is one (debian12-min has no kexec-tools)
    site.tool("kareboot3", "-r", "deploy_env", "-m", n4)
    results = site.tools({
        n1: deploy(n1, "-a", str(_preinstall_env(site, out))),
        n2: deploy(n2, "-e", "debian12-min", "--custom-steps", str(_custom_operations(out)), "-V", "4"),
        n3: deploy(n3, "-e", "debian12-min", "-w", str(profile), "-x", str(extra), "--set-pxe-pattern", str(pattern)),
        n4: deploy(n4, "-e", "debian12-min", "--force-steps",
                   "SetDeploymentEnv|SetDeploymentEnvKexec:0:200&BroadcastEnv|BroadcastEnvKascade:0:200"
                   "&BootNewEnv|BootNewEnvKexec:0:100"),
    })
    assert_batch_ok(results, out)
    return results


def _steps(site, result) -> list[str]:
    return site.tool("kastat3", "-w", workflow_id(result), "-F", "step1,step2,step3").stdout.split()


def test_preinstall_prepares_the_partition_itself(site, custom_batch) -> None:
    node = site.nodes[0]
    site.assert_debian_on_partition(node)
    assert site.blkid(node, 3, "LABEL") == "preinst"
    assert site.ssh(node, "cat /root/preinstall-done").stdout.strip() == "debian12-min-pre"
    assert _steps(site, custom_batch[node])[0].startswith("SetDeploymentEnvUntrustedCustomPreInstall,")


def test_custom_operations_write_into_the_deployed_system(site, custom_batch) -> None:
    node = site.nodes[1]
    site.assert_debian_on_partition(node)
    assert site.ssh(node, "cat /root/custom-op").stdout.strip() == "custom /dev/sda3"
    assert site.ssh(node, "cat /root/motd.custom").stdout == "sent by a custom operation\n"
    assert "custom_post_send_environment-mark" in custom_batch[node].stdout


def test_user_pxe_profile_boots_the_node(site, custom_batch) -> None:
    node = site.nodes[2]
    site.assert_debian_on_partition(node)
    ip_hex = "".join(f"{int(part):02X}" for part in socket.gethostbyname(node).split("."))
    written = (site.directory / "tftpboot" / "pxelinux.cfg" / ip_hex).read_text()
    assert "APPEND hd0 3" in written and "userfiles/pxe-root--notes.txt" in written, written
    assert (site.directory / "tftpboot" / "userfiles" / "pxe-root--notes.txt").read_text() == \
        "uploaded by kadeploy3 -x\n"


def test_kexec_kascade_kexec(site, custom_batch) -> None:
    node = site.nodes[3]
    site.assert_debian_on_partition(node)
    assert _steps(site, custom_batch[node]) == ["SetDeploymentEnvKexec,BroadcastEnvKascade,BootNewEnvKexec"]
    console = (site.directory / "run" / node.split(".")[0] / "console.log").read_text(errors="replace")
    tail = console[console.rindex("kexec: booting the deployment kernel"):]
    assert "kexec: booting partition 3" in tail  # no firmware (PXE) boot in between
    assert "BIOS:" not in tail
