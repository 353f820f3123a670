"""Deploying fsa and multipart environments: what the server refuses before any node is rebooted.

Kadeploy3 (`kadeploy.rb`) checks the rights on the multipart boot device and
on every device of `options/partitions`; `check_config` refuses a whole-disk
deployment of anything but a dd image. Beyond it, a multipart environment
whose boot partition is not the deployment partition (the one the workflow
mounts, gives a bootloader and boots), or that restores nothing there, is
refused instead of booting a partition the deployment did not write.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from kadeploy.catalog.environment import environment_from_dict
from kadeploy.catalog.multipart import multipart_target_problem
from kadeploy.db import rights as db_rights
from kadeploy.server.app import create_app
from kadeploy_testbed.dummy import DummyRunner
from server_fixtures import NODES_C1, database_at, make_settings, wait_done

MULTIPART = {"kind": "anonymous", "name": "debian12-min-fsa", "os": "linux", "multipart": True,
             "image": {"file": "http://files/debian12-min.fsa", "kind": "fsa", "compression": 3},
             "boot": {"kernel": "/vmlinuz", "initrd": "/initrd.img", "block_device": "/dev/sda", "partition": 3},
             "filesystem": "ext4",
             "options": {"partitions": [{"id": 0, "device": "/dev/sda3"}, {"id": 1, "device": "/dev/sda5"}]}}


def refusal(response: httpx.Response) -> tuple[int, str]:
    assert response.status_code == 400, response.text
    info = base64.b64decode(response.headers["X-Application-Error-Info"]).decode()
    return int(response.headers["X-Application-Error-Code"]), info


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[tuple]:
    database = database_at(tmp_path / "kadeploy.db")
    app = create_app(make_settings(), database, DummyRunner(delay=0.0))
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://t",
                                 headers={"X-Kadeploy-User": "bob"}) as bob:
        yield database, bob
    database.dispose()


def grant(database, parts: list[str]) -> None:
    database.transaction(lambda s: db_rights.add_rights(s, "bob", NODES_C1[:1], parts))


async def test_multipart_needs_rights_on_every_device_it_writes(site):
    database, bob = site
    grant(database, ["/dev/sda3"])
    code, info = refusal(await bob.post("/deployment", json={"nodes": NODES_C1[:1], "environment": MULTIPART}))
    assert code == 6 and "/dev/sda5" in info
    grant(database, ["/dev/sda5"])
    accepted = await bob.post("/deployment", json={"nodes": NODES_C1[:1], "environment": MULTIPART})
    assert (await wait_done(bob, f"/deployment/{accepted.json()['wid']}"))["error"] is False


async def test_a_boot_partition_other_than_the_deployment_partition_is_refused_with_the_fix(site):
    database, bob = site
    grant(database, ["*"])
    elsewhere = {**MULTIPART, "boot": {**MULTIPART["boot"], "partition": 5}}
    code, info = refusal(await bob.post("/deployment", json={"nodes": NODES_C1[:1], "environment": elsewhere}))
    assert code == 13
    assert info == ("The multipart environment debian12-min-fsa boots /dev/sda5 (boot/block_device, "
                    "boot/partition) but the deployment partition is /dev/sda3: deploy it with -p 5")
    accepted = await bob.post("/deployment", json={"nodes": NODES_C1[:1], "environment": elsewhere,
                                                   "deploy_partition": 5})
    assert accepted.status_code == 200, accepted.text


async def test_a_boot_partition_the_archive_does_not_restore_is_refused(site):
    database, bob = site
    grant(database, ["*"])
    unmapped = {**MULTIPART, "boot": {**MULTIPART["boot"], "partition": 2}}
    code, info = refusal(await bob.post("/deployment", json={"nodes": NODES_C1[:1], "environment": unmapped,
                                                              "deploy_partition": 2}))
    assert code == 13 and "boots /dev/sda2" in info and "none of its options/partitions restores" in info


async def test_only_dd_images_go_on_a_whole_disk(site):
    database, bob = site
    grant(database, ["*"])
    code, info = refusal(await bob.post("/deployment", json={"nodes": NODES_C1[:1], "environment": MULTIPART,
                                                              "block_device": "/dev/sdb", "boot_partition": 1}))
    assert code == 4 and info.startswith("You can only deploy directly on block device when using a dd image")


def test_other_disks_are_named_in_the_fix():
    other_disk = {**MULTIPART, "boot": {**MULTIPART["boot"], "block_device": "/dev/sdb", "partition": 1},
                  "options": {"partitions": [{"id": 0, "device": "/dev/sdb1"}]}}
    def description(env: dict) -> object:
        return environment_from_dict({k: v for k, v in env.items() if k != "kind"}, "test")

    assert multipart_target_problem(description(other_disk), "/dev/sda3").endswith("deploy it with -b /dev/sdb -p 1")
    assert multipart_target_problem(description({**MULTIPART, "multipart": False}), "/dev/sda5") is None
