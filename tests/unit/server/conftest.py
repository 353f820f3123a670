"""Fixtures: a server app on a temporary SQLite file, with two clusters and ACL authentication."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from kadeploy.db import Database
from kadeploy.db import rights as db_rights
from kadeploy.server.app import create_app
from kadeploy_testbed.dummy import DummyRunner
from server_fixtures import NODES_C1, NODES_C2, database_at, make_settings


@pytest.fixture
def database(tmp_path: Path):
    database = database_at(tmp_path / "kadeploy.db")
    yield database
    database.dispose()


@pytest.fixture
def runner() -> DummyRunner:
    return DummyRunner(delay=0.05)


@pytest.fixture
def app(database: Database, runner: DummyRunner):
    database.transaction(lambda s: db_rights.add_rights(s, "alice", NODES_C1 + NODES_C2, ["*"]))
    return create_app(make_settings(), database, runner)


@pytest.fixture
async def client(app) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver",
                                 headers={"X-Kadeploy-User": "alice"}) as http:
        yield http
