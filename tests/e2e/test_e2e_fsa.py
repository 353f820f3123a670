"""FSArchiver images: a multipart fsa environment deployed for real (Kadeploy3's `fsa` kind).

The testbed's `debian12-min-fsa` is one fsarchiver archive of two filesystems
made from the debian12-min rootfs: id 0, the root filesystem (with a marker
file), restored on sda3, the deploy partition; id 1, a small data filesystem
holding /MARKER, restored on sda5. The scenario registers it with `kaenv3 -a`,
deploys it with `kadeploy3 -e`, then checks over SSH that the node booted
the restored root filesystem and that each partition holds its own files.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from scenario import workflow_id

pytestmark = [pytest.mark.e2e, pytest.mark.root, pytest.mark.testbed]


@pytest.fixture(scope="module")
def fsa_images(site):
    from kadeploy_testbed.images import FSA_ENV_NAME, ensure_fsa_images

    images = ensure_fsa_images()
    if FSA_ENV_NAME not in site.tool("kaenv3", "-l").stdout.split():
        site.tool("kaenv3", "-a", str(images.description))
    return images


@pytest.fixture(scope="module")
def fsa_deployment(site, fsa_images, tmp_path_factory) -> tuple[str, subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("fsa")
    node = site.nodes[0]
    result = site.tool("kadeploy3", "-e", "debian12-min-fsa", "-m", node, "-k", f"{site.user_key}.pub",
                       "-o", str(out / "ok"), "-n", str(out / "ko"), "-d", "-V", "5", check=False)
    return node, result, out


def test_kaenv3_prints_the_multipart_description_back(site, fsa_images) -> None:
    shown = yaml.safe_load(site.tool("kaenv3", "-p", "debian12-min-fsa").stdout)
    assert shown["multipart"] is True
    assert shown["image"]["kind"] == "fsa" and shown["image"]["compression"] == 3
    assert shown["options"]["partitions"] == [{"id": 0, "device": "/dev/sda3"}, {"id": 1, "device": "/dev/sda5"}]


def test_the_multipart_environment_is_deployed_and_boots(site, fsa_deployment) -> None:
    node, result, out = fsa_deployment
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert (out / "ok").read_text().split() == [node]
    assert (out / "ko").read_text().strip() == ""
    site.assert_debian_on_partition(node, 3)


def test_each_partition_holds_its_own_filesystem(site, fsa_images, fsa_deployment) -> None:
    node, result, _ = fsa_deployment
    assert result.returncode == 0, result.stdout
    assert site.ssh(node, "cat /etc/kadeploy-testbed-fsa").stdout == fsa_images.root_marker
    data = site.ssh(node, "mkdir -p /mnt/fsa-data && mount -o ro /dev/sda5 /mnt/fsa-data && "
                          "cat /mnt/fsa-data/MARKER; status=$?; umount /mnt/fsa-data; exit $status").stdout
    assert data == fsa_images.data_marker
    # fsarchiver recreated each filesystem with its archived label
    assert (site.blkid(node, 3, "LABEL"), site.blkid(node, 3, "TYPE")) == ("root", "ext4")
    assert (site.blkid(node, 5, "LABEL"), site.blkid(node, 5, "TYPE")) == ("fsa-data", "ext4")


def test_the_archive_was_stored_then_restored_by_decompress_environment(site, fsa_deployment) -> None:
    node, result, _ = fsa_deployment
    bypassed = [line for line in result.stdout.splitlines() if "Bypassing" in line]
    assert bypassed, "-V 5 prints the bypassed micro-steps"
    assert not [line for line in bypassed if "decompress_environment" in line or "send_environment" in line]
    assert any("format_deploy_part" in line for line in bypassed)  # fsarchiver makes the filesystems
    # the debug output (-d) shows each node command: fsarchiver restores the stored copy on both partitions
    assert "restfs /rambin/_KATMP_debian12-min.fsa id=0,dest=/dev/sda3 id=1,dest=/dev/sda5" in result.stdout
    stats = site.tool("kastat3", "-w", workflow_id(result), "-F", "hostname,env,success").stdout.split()
    assert stats == [f"{node},debian12-min-fsa:1,true"]


def test_a_description_kadeploy3_refuses_is_refused_at_kaenv3_a(site, fsa_images, tmp_path: Path) -> None:
    description = yaml.safe_load(fsa_images.description.read_text())
    description["name"] = "fsa-string-level"
    description["image"]["compression"] = "3"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(description))
    result = site.tool("kaenv3", "-a", str(bad), check=False)
    assert result.returncode != 0
    assert 'image/compression: must be an integer from 0 to 9 for an fsa image (got "3")' in \
        result.stdout + result.stderr
    assert "fsa-string-level" not in site.tool("kaenv3", "-l").stdout
