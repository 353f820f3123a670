"""A recorded environment whose image, preinstall and postinstall are paths on the frontend
(issue 20, point 1): registered with `kaenv3 -a`, deployed by name with `kadeploy3 -e`, booted
with `kareboot3 -r recorded_env -e`, and refused once one of its files changed until its
checksum is updated, as Kadeploy3 3.3.11 does (bin/kadeploy3 `prepare`: the recorded
description is fetched and its local files served by the client; grabfile.rb: a file whose
checksum, the ETag of the client's file server, differs from the stored one is refused).
"""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path

import pytest
import yaml
from scenario import workflow_id

from kadeploy_testbed.configdir import PARTITIONING_SCRIPT

pytestmark = [pytest.mark.e2e, pytest.mark.root, pytest.mark.testbed]

ENV_NAME = "debian12-frontend"

# SetDeploymentEnvUntrustedCustomPreInstall: the preinstall partitions, formats and mounts itself
PREINSTALL_SCRIPT = PARTITIONING_SCRIPT + """
mkfs.ext4 -q -F -L frontend "$KADEPLOY_DEPLOY_PART"
mkdir -p "$KADEPLOY_ENV_EXTRACTION_DIR"
mount "$KADEPLOY_DEPLOY_PART" "$KADEPLOY_ENV_EXTRACTION_DIR"
mkdir -p "$KADEPLOY_ENV_EXTRACTION_DIR/root"
echo "pre $KADEPLOY_ENV" > "$KADEPLOY_ENV_EXTRACTION_DIR/root/preinstall-done"
"""


def _postinstall_script(mark: str) -> str:
    return f"""#!/bin/sh
set -e
echo "{mark} $KADEPLOY_ENV" > "$KADEPLOY_ENV_EXTRACTION_DIR/root/postinstall-done"
"""


def _archive(directory: Path, name: str, script: str) -> Path:
    """`<name>.tgz` holding `<name>.sh`; rebuilt in place when called again (a new file for the catalogue)."""
    source = directory / f"{name}.sh"
    source.write_text(script)
    source.chmod(0o755)
    archive = directory / f"{name}.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source, arcname=source.name)
    return archive


@pytest.fixture(scope="module")
def frontend_env(site, tmp_path_factory):
    """debian12-min copied into a user's directory on the frontend and recorded from there."""
    home = tmp_path_factory.mktemp("frontend-home")
    description = yaml.safe_load(site.environments["debian12-min"].read_text())
    image = home / "debian12-min.tgz"
    shutil.copyfile(description["image"]["file"].removeprefix("server://"), image)
    description.update(name=ENV_NAME, version=1, visibility="private", description="files on the frontend")
    description["image"]["file"] = str(image)
    description["preinstall"] = {"archive": str(_archive(home, "pre", PREINSTALL_SCRIPT)),
                                 "compression": "gzip", "script": "pre.sh"}
    description["postinstalls"] = [{"archive": str(_archive(home, "post", _postinstall_script("v1"))),
                                    "compression": "gzip", "script": "post.sh"}]
    env_file = home / "env.yaml"
    env_file.write_text(yaml.safe_dump(description))
    site.tool("kaenv3", "-a", str(env_file))
    yield home
    site.tool("kaenv3", "-d", ENV_NAME, check=False)


def _deploy(site, node: str, out: Path, *args: str, check: bool = True):
    return site.tool("kadeploy3", "-e", ENV_NAME, "-m", node, "-k", str(site.admin_keys),
                     "-o", str(out / "ok"), "-n", str(out / "ko"), *args, check=check)


def _marks(site, node: str) -> tuple[str, str]:
    return (site.ssh(node, "cat /root/preinstall-done").stdout.strip(),
            site.ssh(node, "cat /root/postinstall-done").stdout.strip())


def test_kadeploy3_deploys_a_recorded_environment_made_of_frontend_files(site, frontend_env, tmp_path) -> None:
    node = site.nodes[0]
    printed = yaml.safe_load(site.tool("kaenv3", "-p", ENV_NAME).stdout)
    assert printed["image"]["file"] == str(frontend_env / "debian12-min.tgz")  # recorded as a local path
    result = _deploy(site, node, tmp_path)
    assert (tmp_path / "ok").read_text().split() == [node], result.stdout + result.stderr
    site.assert_debian_on_partition(node)
    assert _marks(site, node) == (f"pre {ENV_NAME}", f"v1 {ENV_NAME}")
    assert site.tool("kastat3", "-w", workflow_id(result), "-F", "env").stdout.split() == [f"{ENV_NAME}:1"]

    # kareboot3 -r recorded_env names the same environment: its local files are served as by kadeploy3
    site.tool("kareboot3", "-r", "deploy_env", "-m", node, "-k", f"{site.user_key}.pub")
    assert site.node_status()[node]["state"] == "deploy-env"
    site.tool("kareboot3", "-r", "recorded_env", "-e", ENV_NAME, "-p", "3", "-m", node, "-o", str(tmp_path / "r.ok"))
    assert (tmp_path / "r.ok").read_text().split() == [node]
    site.assert_debian_on_partition(node)
    state = yaml.safe_load(site.tool("kanodes3", "-s", "-m", node).stdout)
    assert state[node]["state"] == "recorded_env" and state[node]["environment"]["name"] == ENV_NAME

    # such files must be served while the operation runs: --no-wait is refused, as in Kadeploy3
    refused = site.tool("kadeploy3", "-e", ENV_NAME, "-m", site.nodes[1], "--no-wait", check=False)
    assert refused.returncode == 1
    assert refused.stderr.startswith("Cannot use --no-wait since some files have to be exported to the server:")


def test_changed_frontend_files_are_refused_until_their_checksums_are_updated(site, frontend_env, tmp_path) -> None:
    node = site.nodes[1]
    image = frontend_env / "debian12-min.tgz"
    post = frontend_env / "post.tgz"
    os.utime(image, (image.stat().st_atime, image.stat().st_mtime + 120))  # touched: its ETag changes
    _archive(frontend_env, "post", _postinstall_script("v2"))            # rebuilt by its author
    before = site.node_status()[node]

    refused = _deploy(site, node, tmp_path, check=False)
    output = refused.stdout + refused.stderr
    assert f"Checksum of the file '{image}' does not match (an update is necessary)" in output, output
    after = site.node_status()[node]
    assert after["state"] == before["state"] and after["boot_count"] == before["boot_count"]  # nothing rebooted

    site.tool("kaenv3", "--update-image-checksum", ENV_NAME)
    refused = _deploy(site, node, tmp_path, check=False)
    output = refused.stdout + refused.stderr
    assert f"Checksum of the file '{post}' does not match (an update is necessary)" in output, output
    assert site.node_status()[node]["boot_count"] == before["boot_count"]

    site.tool("kaenv3", "--update-postinstalls-checksum", ENV_NAME)
    result = _deploy(site, node, tmp_path)
    assert (tmp_path / "ok").read_text().split() == [node], result.stdout + result.stderr
    site.assert_debian_on_partition(node)
    assert _marks(site, node) == (f"pre {ENV_NAME}", f"v2 {ENV_NAME}")  # the new postinstall ran
