"""Every API route × every authentication mode: strangers are refused and change nothing; users are who they prove.

For each mode (ACL, HTTP Basic, X.509 in the TLS handshake, ident), a
stranger (a host outside the ACL whitelist claiming `root`, a wrong password
for `root`, no certificate but `root`'s certificate pasted in the header, an
identd that does not vouch) sends a valid request to every operation of
`/openapi.json` except the public ones: each is answered 401 and neither the
database nor the workflows change. Then, in each mode, `bob` (no rights),
`alice` (rights on every node, owner of a deployment) and `root`
(administrator) get what their identity allows on the routes that tell them
apart: rights management, another user's workflow, a deployment on nodes.

The handshake mode wraps the app as `kadeploy.server.listener` does for a
connection whose certificate OpenSSL verified (the handshake itself is
checked over real TLS in test_tls_client_certificates.py).
"""

from __future__ import annotations

import asyncio
import base64
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
from tlslab import Authority

from kadeploy.db import rights as db_rights
from kadeploy.server.app import create_app
from kadeploy.server.listener import ClientCertificateScope
from kadeploy.server.settings import AuthSettings, Whitelist
from kadeploy.server.throttle import FailureThrottle
from kadeploy_testbed.dummy import DummyRunner


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "server"))
from server_fixtures import NODES_C1, NODES_C2, database_at, make_settings, wait_done  # noqa: E402

PUBLIC = {"/version", "/auth_headers_prefix", "/info", "/clusters", "/metrics"}
USERS = ("bob", "alice", "root")
IDENT_PORTS = {40001: "bob", 40002: "alice", 40003: "root"}
NODE = NODES_C1[0]
ENV = {"kind": "anonymous", "name": "e", "os": "linux", "filesystem": "ext4", "boot": {"kernel": "/vmlinuz"},
       "image": {"file": "http://files/e.tgz", "kind": "tar", "compression": "gzip"}}
RECORD = {"name": "matrix-env", "version": 1, "os": "linux", "filesystem": "ext4", "boot": {"kernel": "/vmlinuz"},
          "image": {"file": "http://files/e.tgz", "kind": "tar", "compression": "gzip"}}
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("post", "/deployment"): {"nodes": [NODE], "environment": ENV},
    ("post", "/reboot"): {"nodes": [NODE], "kind": "simple"},
    ("put", "/power"): {"nodes": [NODE], "status": "off"},
    ("post", "/console"): {"node": NODE},
    ("post", "/environments"): {"environment": RECORD},
    ("put", "/environments"): {"update_image_checksum": True},
    ("put", "/environments/{user}"): {"update_image_checksum": True},
    ("put", "/environments/{user}/{name}"): {"visibility": "public"},
    ("put", "/environments/{user}/{name}/{version}"): {"visibility": "public"},
    ("post", "/rights"): {"username": "bob", "nodes": [NODE], "partitions": ["*"]},
}


def database_snapshot(path: Path) -> dict[str, list[tuple]]:
    """Every row of every table, in a stable order."""
    with sqlite3.connect(path) as connection:
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {table: sorted(map(repr, connection.execute(f'SELECT * FROM "{table}"').fetchall()))  # noqa: S608
                for table in tables}


class Mode:
    """One authentication mode: the app and a client for each identity or for the stranger."""

    def __init__(self, name: str, app: Any, client: Callable[[str | None], httpx.AsyncClient]) -> None:
        self.name, self.app, self.client = name, app, client


async def identd(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    line = (await reader.readline()).decode().strip()
    client_port = int(line.split(",")[0])
    user = IDENT_PORTS.get(client_port)
    answer = f"{line} : USERID : UNIX : {user}" if user else f"{line} : ERROR : NO-USER"
    writer.write(f"{answer}\r\n".encode())
    await writer.drain()
    writer.close()


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[dict]:
    db_path = tmp_path / "kadeploy.db"
    database = database_at(db_path)
    database.transaction(lambda s: db_rights.add_rights(s, "alice", NODES_C1 + NODES_C2, ["*"]))
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("".join(f"{user}:{bcrypt.hashpw(f'pw-{user}'.encode(), bcrypt.gensalt(4)).decode()}\n"
                                for user in USERS))
    ca = Authority(tmp_path / "pki", "matrix-ca")
    certificates = {user: ca.issue(user)[0].read_text() for user in USERS}
    ident_server = await asyncio.start_server(identd, "127.0.0.1", 0)
    ident_port = ident_server.sockets[0].getsockname()[1]
    runner = DummyRunner(delay=0.0)

    def app_for(auth: AuthSettings) -> Any:
        app = create_app(make_settings(auth=auth), database, runner)
        app.state.ctx.authenticator.throttle = FailureThrottle(free=10**6)   # throttling: its own test
        return app

    def asgi(app: Any, host: str = "127.0.0.1", port: int = 40000, **headers: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(host, port)),
                                 base_url="http://t", headers=headers)

    acl = app_for(AuthSettings(acl=Whitelist(["127.0.0.1"])))
    basic = app_for(AuthSettings(http_basic_dbfile=htpasswd))
    cert = app_for(AuthSettings(certificate_ca=ca.path))
    ident = app_for(AuthSettings(ident=Whitelist(["127.0.0.1"]), ident_port=ident_port, ident_timeout=2))

    def basic_headers(user: str, password: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}

    modes = [
        Mode("acl", acl, lambda user: asgi(acl, **{"X-Kadeploy-User": user}) if user
             else asgi(acl, host="10.1.1.1", **{"X-Kadeploy-User": "root"})),
        Mode("http_basic", basic, lambda user: asgi(basic, **basic_headers(user, f"pw-{user}")) if user
             else asgi(basic, **basic_headers("root", "guess"))),
        Mode("certificate", cert, lambda user: asgi(ClientCertificateScope(cert, certificates[user])) if user
             else asgi(cert, **{"X-Kadeploy-User": "root", "X-Kadeploy-Certificate":
                                base64.b64encode(certificates["root"].encode()).decode()})),
        Mode("ident", ident, lambda user: asgi(ident, port={v: k for k, v in IDENT_PORTS.items()}[user]) if user
             else asgi(ident, port=40009, **{"X-Kadeploy-User": "root"})),
    ]
    wids = {}
    for mode in modes:     # each app has its own workflows: alice owns a finished deployment in each
        async with mode.client("alice") as alice:
            answer = await alice.post("/deployment", json={"nodes": [NODES_C1[1]], "environment": ENV})
            assert answer.status_code == 200, (mode.name, answer.text)
            wids[mode.name] = answer.json()["wid"]
            await wait_done(alice, f"/deployment/{wids[mode.name]}")
    try:
        yield {"db": db_path, "modes": modes, "wids": wids}
    finally:
        ident_server.close()
        await ident_server.wait_closed()
        database.dispose()


def operations(app: Any) -> list[tuple[str, str]]:
    return [(method, path) for path, ops in app.openapi()["paths"].items() if path not in PUBLIC
            for method in ops]


def concrete(path: str, wid: str) -> str:
    values = {"wid": wid, "user": "alice", "node": NODE, "cluster": "c1", "name": "matrix-env", "version": "1",
              "partition": "*", "operation": "deploy"}
    for key, value in values.items():
        path = path.replace("{" + key + "}", value)
    return path


async def send(client: httpx.AsyncClient, method: str, path: str, body: dict | None) -> httpx.Response:
    if method in ("post", "put"):
        return await client.request(method.upper(), path, json=body or {})
    return await client.request(method.upper(), path)


async def test_strangers_are_refused_on_every_route_in_every_mode_and_change_nothing(site):
    workflows_before = {}
    for mode in site["modes"]:
        async with mode.client("root") as root:
            workflows_before[mode.name] = (await root.get("/deployment")).json()
    before = database_snapshot(site["db"])
    refused = 0
    for mode in site["modes"]:
        ops = operations(mode.app)
        assert len(ops) > 40, ops                      # the whole API, not a few routes
        async with mode.client(None) as stranger:
            for method, path in ops:
                answer = await send(stranger, method, concrete(path, site["wids"][mode.name]),
                                    BODIES.get((method, path)))
                assert answer.status_code == 401, (mode.name, method, path, answer.status_code, answer.text)
                refused += 1
    assert database_snapshot(site["db"]) == before
    for mode in site["modes"]:
        async with mode.client("root") as root:
            assert (await root.get("/deployment")).json() == workflows_before[mode.name]
    assert refused == sum(len(operations(mode.app)) for mode in site["modes"])


@pytest.mark.parametrize("mode_index", range(4), ids=["acl", "http_basic", "certificate", "ident"])
async def test_each_mode_gives_each_user_what_their_identity_allows(site, mode_index):
    mode = site["modes"][mode_index]
    wid = site["wids"][mode.name]
    expected = {
        # route: {user: status}
        ("get", "/rights"): {"bob": 403, "alice": 403, "root": 200},
        ("get", f"/deployment/{wid}/status"): {"bob": 403, "alice": 200, "root": 200},
        ("get", f"/deployment/{wid}/logs"): {"bob": 403, "alice": 200, "root": 200},
        ("get", f"/deployment/{wid}/state"): {"bob": 403, "alice": 200, "root": 200},
        ("get", "/nodes"): {"bob": 200, "alice": 200, "root": 200},
    }
    for (method, path), statuses in expected.items():
        for user, status in statuses.items():
            async with mode.client(user) as client:
                answer = await send(client, method, path, None)
            assert answer.status_code == status, (mode.name, user, method, path, answer.text)
    before = database_snapshot(site["db"])
    async with mode.client("bob") as bob:
        refused = await bob.post("/deployment", json={"nodes": [NODE], "environment": ENV})
        assert refused.status_code == 400 and refused.headers["X-Application-Error-Code"] == "6", refused.text
        refused = await bob.post("/rights", json=BODIES[("post", "/rights")])
        assert refused.status_code == 403
    assert database_snapshot(site["db"]) == before
    async with mode.client("alice") as alice:
        started = await alice.post("/deployment", json={"nodes": [NODES_C1[2 + mode_index % 2]],
                                                         "environment": ENV})
        assert started.status_code == 200, started.text
        await wait_done(alice, f"/deployment/{started.json()['wid']}")
