"""Helpers: a server app on a temporary SQLite file, with two clusters and ACL authentication."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from kadeploy.db import Database
from kadeploy.server.app import prepare_database
from kadeploy.server.settings import AuthSettings, ClusterSettings, ServerSettings, Whitelist

NODES_C1 = [f"node-{i}.c1.testbed" for i in range(1, 5)]
NODES_C2 = [f"node-{i}.c2.testbed" for i in range(5, 7)]


def make_settings(**overrides) -> ServerSettings:
    settings = ServerSettings(
        version="3.3.11.stable", hostname="127.0.0.1", port=25300, secure=False,
        auth=AuthSettings(acl=Whitelist(["127.0.0.1"])), almighty_users=["root"],
        clusters={"c1": ClusterSettings("c1", list(NODES_C1)), "c2": ClusterSettings("c2", list(NODES_C2))})
    for key, value in overrides.items():
        setattr(settings, key, value)
    return settings


def database_at(path: Path) -> Database:
    database = Database(f"sqlite:///{path}")
    prepare_database(database)
    return database




async def wait_done(client: httpx.AsyncClient, path: str, timeout: float = 10.0) -> dict:
    """Poll a workflow resource until it says done; fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = (await client.get(path)).json()
        if info["done"]:
            return info
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path} did not finish")
