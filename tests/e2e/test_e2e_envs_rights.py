"""kaenv3 (add, list, print, delete, versions, visibility, destructive, checksums) and
karights3 with two users, then deployments of recorded environments by those users with
`-u` and `--env-version` (Kadeploy3's test_kaenv.rb and the shared/private/env-version
cases of test_kadeploy.rb). Users are told apart by $USER: the testbed server trusts the
user header from its whitelisted address (ACL authentication).
"""

from __future__ import annotations

import shutil

import pytest
import yaml
from scenario import workflow_id

pytestmark = [pytest.mark.e2e, pytest.mark.root, pytest.mark.testbed]

ALICE, BOB = "alice", "bob"


def _description(site, name: str, version: int, image: str | None = None, **extra) -> dict:
    description = yaml.safe_load(site.environments["debian12-min"].read_text())
    description.update(name=name, version=version, visibility="private", description=f"{name} v{version}", **extra)
    if image:
        description["image"]["file"] = image
    return description


@pytest.fixture(scope="module")
def catalog(site, tmp_path_factory):
    """alice owns alice-env versions 1 and 2 (private) and may deploy on node 1; bob on node 2."""
    out = tmp_path_factory.mktemp("catalog")
    for version in (1, 2):
        path = out / f"alice-env-{version}.yaml"
        path.write_text(yaml.safe_dump(_description(site, "alice-env", version)))
        site.tool("kaenv3", "-a", str(path), user=ALICE)
    n1, n2 = site.nodes[:2]
    site.tool("karights3", "-a", "-u", ALICE, "-m", n1, "-p", "*")
    site.tool("karights3", "-a", "-u", BOB, "-m", n2, "-p", "/dev/sda3")
    yield out
    for user in (ALICE, BOB):
        site.tool("karights3", "-d", "-u", user, "-m", "*", check=False)
    site.tool("kaenv3", "-d", "alice-env", "-s", user=ALICE, check=False)


def _listed(site, user: str, *args: str) -> list[tuple[str, str, str]]:
    lines = site.tool("kaenv3", "-l", *args, user=user).stdout.splitlines()
    rows = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 3 and fields[1].isdigit():
            rows.append((fields[0], fields[1], fields[2]))
    return rows


def test_private_environment_versions_and_visibility(site, catalog) -> None:
    assert ("alice-env", "2", ALICE) in _listed(site, ALICE)
    assert ("alice-env", "1", ALICE) not in _listed(site, ALICE)           # the last version only
    assert ("alice-env", "1", ALICE) in _listed(site, ALICE, "-s")
    assert all(name != "alice-env" for name, _, _ in _listed(site, BOB))
    printed = yaml.safe_load(site.tool("kaenv3", "-p", "alice-env", "--env-version", "1", user=ALICE).stdout)
    assert printed["version"] == 1 and printed["description"] == "alice-env v1"
    assert yaml.safe_load(site.tool("kaenv3", "-p", "alice-env", user=ALICE).stdout)["version"] == 2
    # private: bob cannot see it even naming the owner
    hidden = site.tool("kaenv3", "-p", "alice-env", "-u", ALICE, user=BOB, check=False)
    assert "alice-env" not in hidden.stdout and "No environment has been found" in hidden.stdout + hidden.stderr
    # shared: usable by bob naming the owner, still not listed for him
    site.tool("kaenv3", "--set-visibility-tag", "alice-env", "-t", "shared", user=ALICE)
    assert yaml.safe_load(site.tool("kaenv3", "-p", "alice-env", "-u", ALICE, user=BOB).stdout)["name"] == "alice-env"
    assert all(name != "alice-env" for name, _, _ in _listed(site, BOB))
    # public is for administrators only
    refused = site.tool("kaenv3", "--set-visibility-tag", "alice-env", "-t", "public", user=ALICE, check=False)
    assert refused.returncode != 0 and "public" in refused.stdout + refused.stderr
    site.tool("kaenv3", "--toggle-destructive-tag", "alice-env", user=ALICE)
    assert yaml.safe_load(site.tool("kaenv3", "-p", "alice-env", user=ALICE).stdout)["destructive"] is True
    site.tool("kaenv3", "--toggle-destructive-tag", "alice-env", user=ALICE)
    assert yaml.safe_load(site.tool("kaenv3", "-p", "alice-env", user=ALICE).stdout)["destructive"] is False


def test_add_then_delete_last_version_only(site, catalog) -> None:
    path = catalog / "alice-env-3.yaml"
    path.write_text(yaml.safe_dump(_description(site, "alice-env", 3)))
    site.tool("kaenv3", "-a", str(path), user=ALICE)
    again = site.tool("kaenv3", "-a", str(path), user=ALICE, check=False)
    assert again.returncode == 10, again.stdout + again.stderr                # EXISTING_ELEMENT
    site.tool("kaenv3", "-d", "alice-env", user=ALICE)                          # deletes the last version
    versions = sorted(v for name, v, _ in _listed(site, ALICE, "-s") if name == "alice-env")
    assert versions == ["1", "2"]


def test_user_without_rights_gets_error_6_and_nothing_runs(site, catalog) -> None:
    node = site.nodes[2]
    before = site.node_status()[node]
    result = site.tool("kadeploy3", "-e", "debian12-min", "-m", node, user=BOB, check=False)
    assert result.returncode == 6, result.stdout + result.stderr
    assert "rights" in (result.stdout + result.stderr)
    after = site.node_status()[node]
    assert after["state"] == before["state"] and after["boot_count"] == before["boot_count"]
    listing = site.tool("karights3", "-l", "-u", BOB).stdout
    assert site.nodes[1] in listing and node not in listing


def test_two_users_deploy_recorded_envs_with_owner_and_version(site, catalog, tmp_path) -> None:
    n1, n2 = site.nodes[:2]
    site.tool("kaenv3", "--set-visibility-tag", "alice-env", "-t", "shared", user=ALICE)
    results = {
        **site.tools({n1: ["kadeploy3", "-e", "alice-env", "--env-version", "1", "-m", n1, "-k",
                           f"{site.user_key}.pub", "-o", str(tmp_path / "a.ok")]}, user=ALICE),
    }
    results.update(site.tools({n2: ["kadeploy3", "-e", "alice-env", "-u", ALICE, "-m", n2, "-k",
                                    f"{site.user_key}.pub", "-o", str(tmp_path / "b.ok")]}, user=BOB))
    assert (tmp_path / "a.ok").read_text().split() == [n1], results[n1].stdout + results[n1].stderr
    assert (tmp_path / "b.ok").read_text().split() == [n2], results[n2].stdout + results[n2].stderr
    for node in (n1, n2):
        site.assert_debian_on_partition(node)
    assert site.tool("kastat3", "-w", workflow_id(results[n1]), "-F", "user,env").stdout.split() == \
        [f"{ALICE},alice-env:1"]
    assert site.tool("kastat3", "-w", workflow_id(results[n2]), "-F", "user,env").stdout.split() == \
        [f"{BOB},alice-env:2"]
    nodes = yaml.safe_load(site.tool("kanodes3", "-s", "-m", n2).stdout)
    assert nodes[n2]["user"] == BOB and nodes[n2]["environment"]["name"] == "alice-env"


def test_changed_image_is_refused_until_its_checksum_is_updated(site, catalog, tmp_path) -> None:
    image = yaml.safe_load(site.environments["debian12-min"].read_text())["image"]["file"].removeprefix("server://")
    copy = site.directory / "files" / "checksum-test.tgz"
    shutil.copyfile(image, copy)
    description = _description(site, "checksum-env", 1, image=f"server://{copy}")
    path = tmp_path / "checksum-env.yaml"
    path.write_text(yaml.safe_dump(description))
    site.tool("kaenv3", "-a", str(path))
    try:
        with copy.open("ab") as handle:  # the image changes behind the catalogue's back
            handle.write(b"\0" * 512)
        node = site.nodes[2]
        before = site.node_status()[node]
        refused = site.tool("kadeploy3", "-e", "checksum-env", "-m", node, check=False)
        assert refused.returncode == 5 or "hecksum" in refused.stdout + refused.stderr, refused.stdout
        assert "hecksum" in refused.stdout + refused.stderr
        after = site.node_status()[node]
        assert after["state"] == before["state"] and after["boot_count"] == before["boot_count"]  # no reboot happened
        site.tool("kaenv3", "--update-image-checksum", "checksum-env")
        dry = site.tool("kadeploy3", "-e", "checksum-env", "-m", node, "--dry-run", check=False)
        assert dry.returncode == 0, dry.stdout + dry.stderr
    finally:
        site.tool("kaenv3", "-d", "checksum-env", check=False)
        copy.unlink(missing_ok=True)
