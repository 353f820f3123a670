"""Server end hooks (reference 5.10): run when the client asked `--hook`, with WORKFLOW_ID substituted."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from kadeploy.db import rights as db_rights
from kadeploy.server.app import create_app
from kadeploy_testbed.dummy import DummyRunner
from server_fixtures import NODES_C1, make_settings
from test_api_contract import deploy, wait_done


@pytest.fixture
def hook_file(tmp_path):
    return tmp_path / "hook.out"


@pytest.fixture
def app(database, hook_file):
    database.transaction(lambda s: db_rights.add_rights(s, "alice", NODES_C1, ["*"]))
    settings = make_settings(hooks={"end_of_deployment": f"echo WORKFLOW_ID >> {hook_file}"})
    return create_app(settings, database, DummyRunner(delay=0.01))


async def _hook_output(path, timeout=5.0) -> str:
    for _ in range(int(timeout / 0.05)):
        if path.exists() and path.read_text():
            return path.read_text()
        await asyncio.sleep(0.05)
    return ""


async def test_end_of_deployment_hook_runs_only_when_asked(client: httpx.AsyncClient, hook_file):
    quiet = (await deploy(client, NODES_C1[:1])).json()["wid"]
    await wait_done(client, f"/deployment/{quiet}")
    await asyncio.sleep(0.3)
    assert not hook_file.exists()
    asked = (await deploy(client, NODES_C1[:1], hook=True)).json()["wid"]
    await wait_done(client, f"/deployment/{asked}")
    assert (await _hook_output(hook_file)).split() == [asked]
