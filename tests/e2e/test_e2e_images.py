"""Image kinds and anonymous environments: txz, tzst, ddgz, and `-a` from a local file,
from http:// and from server:// (Kadeploy3's test_kadeploy.rb anonymous/http/server cases).

The deployments of one batch run side by side, each on its own node; every check is
made on the node itself over SSH.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from scenario import workflow_id

pytestmark = [pytest.mark.e2e, pytest.mark.root, pytest.mark.testbed]

HTTP_PORT = 8071  # on the testbed bridge only (10.200.0.1)


def _deploy(site, node: str, out: Path, *env_args: str) -> list[str]:
    return ["kadeploy3", *env_args, "-m", node, "-k", f"{site.user_key}.pub",
            "-o", str(out / f"{node}.ok"), "-n", str(out / f"{node}.ko")]


def _check_all_ok(site, results: dict[str, subprocess.CompletedProcess[str]], out: Path) -> None:
    for node, result in results.items():
        assert result.returncode == 0, f"{node}: {result.stdout}\n{result.stderr}"
        assert (out / f"{node}.ok").read_text().split() == [node], result.stdout
        assert (out / f"{node}.ko").read_text().strip() == "", result.stdout


@pytest.fixture(scope="module")
def image_kinds(site, tmp_path_factory) -> tuple[dict[str, subprocess.CompletedProcess[str]], Path]:
    out = tmp_path_factory.mktemp("images")
    local = yaml.safe_load(site.environments["debian12-min"].read_text())
    image = local["image"]["file"].removeprefix("server://")
    local["image"]["file"] = image  # a plain path: the client exports it (reference 1.6)
    local["name"] = "debian12-min-local"
    local_file = out / "local-env.yaml"
    local_file.write_text(yaml.safe_dump(local))
    n1, n2, n3, n4 = site.nodes[:4]
    results = site.tools({
        n1: _deploy(site, n1, out, "-e", "debian12-min-txz"),
        n2: _deploy(site, n2, out, "-e", "debian12-min-tzst"),
        n3: _deploy(site, n3, out, "-e", "debian12-min-ddgz"),
        n4: _deploy(site, n4, out, "-a", str(local_file)),
    })
    return results, out


def test_txz_tzst_ddgz_and_local_anonymous_images_boot_debian(site, image_kinds) -> None:
    results, out = image_kinds
    _check_all_ok(site, results, out)
    for node in site.nodes[:4]:
        site.assert_debian_on_partition(node)


def test_ddgz_image_is_the_packed_filesystem_written_raw(site, image_kinds) -> None:
    node = site.nodes[2]
    # the dd image carries the ext4 label given at packing; a tar extraction into a fresh mkfs has none
    assert site.blkid(node, 3, "LABEL") == "root"
    assert site.blkid(site.nodes[0], 3, "LABEL") == ""
    assert site.blkid(site.nodes[0], 3, "TYPE") == "ext4"


def test_local_anonymous_environment_is_recorded_as_anonymous(site, image_kinds) -> None:
    results, _ = image_kinds
    node = site.nodes[3]
    wid = workflow_id(results[node])
    stats = site.tool("kastat3", "-w", wid, "-F", "hostname,env,success").stdout.split()
    assert stats == [f"{node},debian12-min-local:1,true"]


@pytest.fixture
def http_server(site, tmp_path: Path):
    """A tiny HTTP server on the bridge address serving an environment and its image."""
    env_dir = tmp_path / "www"
    env_dir.mkdir()
    image = Path(yaml.safe_load(site.environments["debian12-min"].read_text())["image"]["file"]
                 .removeprefix("server://"))
    (env_dir / image.name).symlink_to(image)
    description = yaml.safe_load(site.environments["debian12-min"].read_text())
    description["name"] = "debian12-min-http"
    description["image"]["file"] = f"http://10.200.0.1:{HTTP_PORT}/{image.name}"
    (env_dir / "env.yaml").write_text(yaml.safe_dump(description))
    process = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "10.200.0.1", str(HTTP_PORT),
                                "--directory", str(env_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                httpx.get(f"http://10.200.0.1:{HTTP_PORT}/env.yaml", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield f"http://10.200.0.1:{HTTP_PORT}/env.yaml"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_anonymous_environment_from_http_and_from_server(site, http_server: str, tmp_path: Path) -> None:
    n1, n2 = site.nodes[:2]
    server_env = f"server://{site.environments['debian12-min']}"
    results = site.tools({
        n1: _deploy(site, n1, tmp_path, "-a", http_server),
        n2: _deploy(site, n2, tmp_path, "-a", server_env),
    })
    _check_all_ok(site, results, tmp_path)
    for node in (n1, n2):
        site.assert_debian_on_partition(node)
    wid = workflow_id(results[n1])
    assert site.tool("kastat3", "-w", wid, "-F", "env").stdout.split() == ["debian12-min-http:1"]
