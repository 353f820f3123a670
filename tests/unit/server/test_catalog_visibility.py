"""The environment catalogue over the API: the visibility matrix and the checksum rules (reference section 4)."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from kadeploy.catalog.cache import FileCache
from kadeploy.catalog.files import FileFetcher
from kadeploy.catalog.fetchpolicy import FetchPolicy
from kadeploy.db import environments as db_envs
from kadeploy.db import rights as db_rights
from kadeploy.server.app import create_app
from kadeploy_testbed.dummy import DummyRunner
from server_fixtures import NODES_C1, NODES_C2, database_at, make_settings, wait_done

# the test's HTTP servers listen on loopback, which the default policy refuses
LOOPBACK_ALLOWED = FetchPolicy.from_lists(allow=["127.0.0.0/8"])

USERS = ("alice", "bob", "root")  # owner, another user, an almighty user
VISIBILITIES = ("private", "shared", "public")


def env_description(name: str, image: Path, visibility: str = "private") -> dict:
    return {"name": name, "version": 1, "os": "linux", "visibility": visibility, "description": f"{name} env",
            "image": {"file": f"server://{image}", "kind": "tar", "compression": "gzip"},
            "boot": {"kernel": "/vmlinuz"}, "filesystem": "ext4"}


def error_of(response: httpx.Response) -> tuple[int, str]:
    assert response.status_code == 400, response.text
    return int(response.headers["X-Application-Error-Code"]), \
        base64.b64decode(response.headers["X-Application-Error-Info"]).decode()


class Site:
    """An app with a fetcher confined to `<tmp>/envs`, a Dummy runner that grabs files, and one client per user."""

    def __init__(self, tmp_path: Path) -> None:
        self.envs = tmp_path / "envs"
        self.envs.mkdir()
        self.database = database_at(tmp_path / "kadeploy.db")
        self.database.transaction(lambda s: db_rights.add_rights(s, "alice", NODES_C1, ["*"]))
        self.database.transaction(lambda s: db_rights.add_rights(s, "bob", NODES_C2, ["*"]))
        cache = FileCache(tmp_path / "cache", None)
        cache.load()
        self.fetcher = FileFetcher(cache.directory, [self.envs], cache=cache, policy=LOOPBACK_ALLOWED)
        self.runner = DummyRunner(delay=0.0, fetcher=self.fetcher)
        self.app = create_app(make_settings(), self.database, self.runner, fetcher=self.fetcher)
        self.clients: dict[str, httpx.AsyncClient] = {}

    def client(self, user: str) -> httpx.AsyncClient:
        if user not in self.clients:
            transport = httpx.ASGITransport(app=self.app, client=("127.0.0.1", 40000))
            self.clients[user] = httpx.AsyncClient(transport=transport, base_url="http://testserver",
                                                   headers={"X-Kadeploy-User": user})
        return self.clients[user]

    def image(self, name: str, content: bytes = b"image") -> Path:
        path = self.envs / f"{name}.tgz"
        path.write_bytes(content)
        return path

    async def close(self) -> None:
        for client in self.clients.values():
            await client.aclose()
        self.database.dispose()


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    site = Site(tmp_path)
    yield site
    await site.close()


# who owns each environment of the matrix: Kadeploy3 lets only an administrator own a public one
OWNER = {"private": "alice", "shared": "alice", "public": "root"}


async def add_envs(site: Site) -> None:
    """alice owns a private and a shared environment; root owns the public one (kaenvs.rb envs_rights?)."""
    alice, root = site.client("alice"), site.client("root")
    for visibility in VISIBILITIES:
        description = env_description(f"env-{visibility}", site.image(visibility),
                                       "private" if visibility == "public" else visibility)
        response = await alice.post("/environments", json={"environment": description})
        assert response.status_code == 200, response.text
    public = await alice.put("/environments/alice/env-public", json={"visibility": "public"})
    assert (public.status_code, public.text) == (403, 'Only administrators can use the "public" tag')  # as Kadeploy3
    # nor can an administrator publish alice's environment: the owner must be one (envs_rights? :modify)
    published = await root.put("/environments/alice/env-public", json={"visibility": "public"})
    assert (published.status_code, published.text) == (403, 'Only administrators can use the "public" tag')
    assert (await alice.delete("/environments/alice/env-public")).status_code == 200
    description = env_description("env-public", site.image("public"), "private")
    assert (await root.post("/environments", json={"environment": description})).status_code == 200
    assert (await root.put("/environments/root/env-public", json={"visibility": "public"})).status_code == 200


def _path(launched: httpx.Response) -> str:
    return f"/deployment/{launched.json()['wid']}"


async def deploy(site: Site, user: str, env: dict) -> httpx.Response:
    node = NODES_C2[0] if user == "bob" else NODES_C1[0]
    return await site.client(user).post("/deployment", json={"nodes": [node], "environment": env})


# expected outcome of each (user, visibility): True = allowed
LIST = {("alice", v): True for v in VISIBILITIES} | {("root", v): True for v in VISIBILITIES} | \
       {("bob", "private"): False, ("bob", "shared"): False, ("bob", "public"): True}
PRINT = LIST | {("bob", "shared"): True}   # printing names the owner: shared becomes visible
DEPLOY = PRINT                             # deploying with -u alice: same rule as print
DELETE = {(u, v): u in (OWNER[v], "root") for u in USERS for v in VISIBILITIES}


@pytest.mark.parametrize("user", USERS)
@pytest.mark.parametrize("visibility", VISIBILITIES)
async def test_visibility_matrix(site, user, visibility):
    await add_envs(site)
    client = site.client(user)
    name = f"env-{visibility}"

    listed = [e["name"] for e in (await client.get("/environments", params={"last": "true"})).json()]
    assert (name in listed) == LIST[(user, visibility)]

    owner = OWNER[visibility]
    printed = (await client.get("/environments", params={"username": owner, "name": name, "last": "true"})).json()
    assert ([e["name"] for e in printed] == [name]) == PRINT[(user, visibility)]
    if printed:
        assert "md5" not in printed[0]["image"]  # the stored checksum is not part of the description

    launched = await deploy(site, user, {"kind": "database", "name": name, "user": owner})
    if DEPLOY[(user, visibility)]:
        info = await wait_done(client, f"/deployment/{launched.json()['wid']}")
        assert info["error"] is False and info["environment"]["name"] == name
    else:
        assert error_of(launched)[0] == 7

    deleted = await client.delete(f"/environments/{owner}/{name}")
    if DELETE[(user, visibility)]:
        assert [e["name"] for e in deleted.json()] == [name]
        assert (await site.client(owner).get("/environments", params={"name": name})).json() == []
    else:
        assert deleted.status_code == 403, deleted.text


async def test_lookup_without_owner_takes_own_then_public_and_the_last_version(site):
    alice, bob, root = site.client("alice"), site.client("bob"), site.client("root")
    image = site.image("common")
    for version in (1, 2):
        description = {**env_description("common", image, "public"), "version": version, "user": "root"}
        assert (await root.post("/environments", json={"environment": description})).json()["user"] == "root"
    await alice.post("/environments", json={"environment": env_description("common", image)})
    own = await wait_done(alice, _path(await deploy(site, "alice", {"kind": "database", "name": "common"})))
    assert (own["environment"]["user"], own["environment"]["version"]) == ("alice", 1)
    other = await wait_done(bob, _path(await deploy(site, "bob", {"kind": "database", "name": "common"})))
    assert (other["environment"]["user"], other["environment"]["version"]) == ("root", 2)
    pinned = await deploy(site, "bob", {"kind": "database", "name": "common", "version": 1})
    assert (await wait_done(bob, _path(pinned)))["environment"]["version"] == 1


async def test_a_changed_image_is_refused_until_its_checksum_is_updated(site):
    alice = site.client("alice")
    image = site.image("debian", b"first build")
    await alice.post("/environments", json={"environment": env_description("debian", image)})
    ok = await wait_done(alice, _path(await deploy(site, "alice", {"kind": "database", "name": "debian"})))
    assert ok["error"] is False

    image.write_bytes(b"second build, rebuilt by its author")
    wid = (await deploy(site, "alice", {"kind": "database", "name": "debian"})).json()["wid"]
    assert (await wait_done(alice, f"/deployment/{wid}"))["error"] is True
    code, message = error_of(await alice.get(f"/deployment/{wid}/error"))
    assert code == 5 and message == f"Checksum of the file 'server://{image}' does not match (an update is necessary)"

    updated = await alice.put("/environments/alice/debian", json={"update_image_checksum": True, "last": True})
    assert updated.status_code == 200, updated.text
    again = await wait_done(alice, _path(await deploy(site, "alice", {"kind": "database", "name": "debian"})))
    assert again["error"] is False
    stored = site.database.transaction(lambda s: db_envs.find_environments(s, name="debian")[0].image["md5"])
    assert stored == hashlib.md5(image.read_bytes()).hexdigest()


async def test_anonymous_environments_are_not_checked_against_a_stored_checksum(site):
    alice = site.client("alice")
    image = site.image("anon", b"whatever")
    env = {"kind": "anonymous", **env_description("anon", image), "image": {
        "file": f"server://{image}", "kind": "tar", "compression": "gzip", "md5": "0" * 32}}
    info = await wait_done(alice, _path(await deploy(site, "alice", env)))
    assert info["error"] is False


@pytest.mark.parametrize("path", ["/etc/shadow", "{envs}/../kadeploy.db", "{envs}/link"])
async def test_server_files_outside_the_allowed_directories_are_refused_at_add(site, path):
    (site.envs / "link").symlink_to("/etc/shadow")
    description = env_description("evil", Path("/x"))
    description["image"]["file"] = "server://" + path.format(envs=site.envs)
    code, message = error_of(await site.client("alice").post("/environments", json={"environment": description}))
    assert code == 5 and ("outside the server directories" in message or "'..'" in message)


async def test_only_administrators_add_public_environments(site):
    description = env_description("pub", site.image("pub"), "public")
    assert (await site.client("alice").post("/environments", json={"environment": description})).status_code == 403
    # an administrator may add for alice, but not a public one: the owner must be an administrator (as Kadeploy3)
    for_alice = await site.client("root").post("/environments", json={"environment": {**description, "user": "alice"}})
    assert (for_alice.status_code, for_alice.text) == (403, 'Only administrators can use the "public" tag')
    added = await site.client("root").post("/environments", json={"environment": description})
    assert added.json()["user"] == "root" and added.json()["visibility"] == "public"
