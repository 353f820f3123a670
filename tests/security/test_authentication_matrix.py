"""The authorization matrix: every API route × every authentication mode × every kind of caller.

For each authentication mode (ACL, HTTP Basic, X.509 in the TLS handshake,
ident) the server's real app answers, on every operation of its
`/openapi.json` (plus the variants that tell rules apart: a power status
through `GET /power?nodes=`, a public environment), five callers:

* the stranger: a host outside the ACL whitelist claiming `root`, a wrong
  password for `root`, `root`'s certificate pasted in a header with no
  handshake, an identd that does not vouch;
* `bob`: authenticated, no rights, owns nothing;
* `carol`: rights on every node, owns nothing;
* `alice`: rights on every node, owner of a deployment, a reboot, a power
  operation, a console and the environment `matrix-env`;
* `root`: an almighty user (administrator).

`EXPECTED` gives the answer of each (route, caller), by Kadeploy3's rules
(server.rb `launch`: a `<kind>_rights?` refusal is HTTP 403; a launch on nodes
without rights is error 6, `work_prepare`): the status (and the error code of
a 400) is asserted, and a refused request must leave the database, the
workflows and the consoles as they were. `EXPECTED` must name every operation
of `/openapi.json`: a new route without an expectation fails the test.
An allowed request that changes the fixture (a deletion, a new right) is
undone before the next one.

The handshake mode wraps the app as `kadeploy.server.listener` does for a
connection whose certificate OpenSSL verified (the handshake itself is
checked over real TLS in test_tls_client_certificates.py).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
from tlslab import Authority

from kadeploy.db import environments as db_envs
from kadeploy.db import rights as db_rights
from kadeploy.operations import ConsoleRequest
from kadeploy.server.app import create_app
from kadeploy.server.listener import ClientCertificateScope
from kadeploy.server.settings import AuthSettings, Whitelist
from kadeploy.server.throttle import FailureThrottle
from kadeploy.server.workflows import new_wid
from kadeploy_testbed.dummy import DummyRunner


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "server"))
from server_fixtures import NODES_C1, NODES_C2, database_at, make_settings, wait_done  # noqa: E402

MODES = ("acl", "http_basic", "certificate", "ident")
CALLERS = ("stranger", "bob", "carol", "alice", "root")
USERS = CALLERS[1:]
IDENT_PORTS = {40001: "bob", 40002: "carol", 40003: "alice", 40004: "root"}
NODE = NODES_C1[0]
CONSOLE_NODE = NODES_C1[3]
FAMILIES = {"deployment": "D", "reboot": "R", "power": "P"}
ENV = {"kind": "anonymous", "name": "e", "os": "linux", "filesystem": "ext4", "boot": {"kernel": "/vmlinuz"},
       "image": {"file": "http://files/e.tgz", "kind": "tar", "compression": "gzip"}}
RECORD = {"name": "matrix-env", "version": 1, "os": "linux", "filesystem": "ext4", "boot": {"kernel": "/vmlinuz"},
          "visibility": "private", "image": {"file": "http://files/e.tgz", "kind": "tar", "compression": "gzip"}}
LAUNCHES = {"deployment": ("post", {"nodes": [NODE], "environment": ENV}),
            "reboot": ("post", {"nodes": [NODE], "kind": "simple"}),
            "power": ("put", {"nodes": [NODE], "status": "off"})}
_names = itertools.count()

OK, FORBIDDEN, NO_RIGHTS = 200, 403, (400, "6")
Answer = int | tuple[int, str]


def everyone(status: Answer) -> dict[str, Answer]:
    return {user: status for user in USERS}


def owner_and_admin() -> dict[str, Answer]:
    return {"bob": FORBIDDEN, "carol": FORBIDDEN, "alice": OK, "root": OK}


def admin_only() -> dict[str, Answer]:
    return {"bob": FORBIDDEN, "carol": FORBIDDEN, "alice": FORBIDDEN, "root": OK}


def with_rights() -> dict[str, Answer]:
    return {"bob": NO_RIGHTS, "carol": OK, "alice": OK, "root": OK}


#: routes anyone reaching the port may read, as in Kadeploy3 (server.rb binds them without `launch`)
PUBLIC = {("get", "/version"), ("get", "/auth_headers_prefix"), ("get", "/info"), ("get", "/clusters")}


@dataclass(frozen=True)
class Case:
    """One request of the matrix: `path` with `{wid}`... placeholders, the answers by caller."""

    method: str
    path: str
    answers: dict[str, Answer]
    body: Callable[[], dict[str, Any] | None] = lambda: None
    query: dict[str, str] = field(default_factory=dict)
    launches: str | None = None      # the family of the workflow (or "console") an allowed request starts


def family_cases(family: str) -> list[Case]:
    method, body = LAUNCHES[family]
    base = f"/{family}"
    cases = [Case(method, base, with_rights(), lambda: body, launches=family),
             Case("get", base, everyone(OK)),
             Case("get", base + "/{wid}", everyone(OK)),       # Kadeploy3: anyone, details for owner and admins
             Case("delete", base + "/{wid}", owner_and_admin())]
    cases += [Case("get", base + "/{wid}" + sub, owner_and_admin())
              for sub in ("/logs", "/logs/{cluster}", "/debugs", "/debugs/{node}", "/state", "/status", "/error")]
    return cases


def fresh_environment(visibility: str = "private") -> dict[str, Any]:
    return {"environment": {**RECORD, "name": f"added-{next(_names)}", "visibility": visibility}}


EXPECTED: list[Case] = [
    *(Case(method, path, everyone(OK)) for method, path in sorted(PUBLIC)),
    Case("get", "/metrics", admin_only()),
    *family_cases("deployment"), *family_cases("reboot"), *family_cases("power"),
    Case("get", "/power", with_rights(), query={"nodes": NODE}, launches="power"),   # a power status
    Case("post", "/console", with_rights(), lambda: {"node": NODE}, launches="console"),
    Case("get", "/console", everyone(OK)),
    Case("get", "/console/{wid}", owner_and_admin()),     # stricter than Kadeploy3 (which hides only the uri)
    Case("get", "/console/{wid}/error", owner_and_admin()),
    Case("delete", "/console/{wid}", owner_and_admin()),
    Case("get", "/environments", everyone(OK)),
    Case("post", "/environments", everyone(OK), fresh_environment),
    Case("post", "/environments", admin_only(), lambda: fresh_environment("public")),
    Case("put", "/environments", admin_only(), lambda: {"update_files": {"http://files/": "http://moved/"}}),
    Case("put", "/environments/{user}", admin_only(), lambda: {"update_files": {"http://files/": "http://moved/"}}),
    Case("put", "/environments/{user}/{name}", owner_and_admin(), lambda: {"visibility": "shared"}),
    # alice's environment cannot be made public, not even by root: its owner must be an administrator (kaenvs.rb)
    Case("put", "/environments/{user}/{name}", everyone(FORBIDDEN), lambda: {"visibility": "public"}),
    Case("put", "/environments/{user}/{name}/{version}", owner_and_admin(), lambda: {"toggle_destructive": True}),
    Case("delete", "/environments/{user}/{name}", owner_and_admin()),
    Case("delete", "/environments/{user}/{name}/{version}", owner_and_admin()),
    Case("get", "/nodes", everyone(OK)),
    Case("get", "/nodes/{node}", everyone(OK)),
    Case("get", "/rights", admin_only()),
    Case("get", "/rights/{user}", admin_only()),
    Case("get", "/rights/{user}/{node}", admin_only()),
    Case("post", "/rights", admin_only(), lambda: {"username": "dave", "nodes": [NODE], "partitions": ["*"],
                                                        "overwrite": True}),
    Case("delete", "/rights/{user}", admin_only()),
    Case("delete", "/rights/{user}/{node}", admin_only()),
    Case("delete", "/rights/{user}/{node}/{partition}", admin_only()),
    Case("get", "/stats", everyone(OK)),
    Case("get", "/stats/{operation}", everyone(OK)),
]


def database_snapshot(path: Path) -> dict[str, list[str]]:
    """Every row of every table, in a stable order."""
    with sqlite3.connect(path) as connection:
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {table: sorted(map(repr, connection.execute(f'SELECT * FROM "{table}"').fetchall()))  # noqa: S608
                for table in tables}


class OpenedConsole:
    """A console session that is only recorded: the matrix checks who may open, see and close it."""

    def __init__(self, request: ConsoleRequest) -> None:
        self.uri = f"tcp://127.0.0.1:1/{request.wid}"
        self.attached = False
        self.error: str | None = None
        self.closed = False

    async def close(self) -> None:
        self.closed = True


class RecordingConsoles:
    def check(self, node: str) -> None:
        return None

    async def open(self, request: ConsoleRequest) -> OpenedConsole:
        return OpenedConsole(request)


async def identd(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    line = (await reader.readline()).decode().strip()
    user = IDENT_PORTS.get(int(line.split(",")[0]))
    answer = f"{line} : USERID : UNIX : {user}" if user else f"{line} : ERROR : NO-USER"
    writer.write(f"{answer}\r\n".encode())
    await writer.drain()
    writer.close()


class Site:
    """One authentication mode's app over its own database, with alice's workflows, console and environment."""

    def __init__(self, app: Any, db_path: Path, client: Callable[[str], httpx.AsyncClient]) -> None:
        self.app, self.db_path, self.client = app, db_path, client
        self.ctx = app.state.ctx
        self.wids: dict[str, str] = {}
        self.baseline_env: dict[str, Any] | None = None

    async def restore(self) -> None:
        """Put back what an allowed request took away: rights, alice's environment, workflows and console."""
        env_row = self.ctx.database.transaction(self._restore_rows)
        if self.baseline_env is None:
            self.baseline_env = env_row
        for family, (method, body) in LAUNCHES.items():
            if self.wids.get(family) not in self.ctx.registry.workflows:
                async with self.client("alice") as alice:
                    answer = await alice.request(method.upper(), f"/{family}", json=body)
                    assert answer.status_code == 200, answer.text
                    self.wids[family] = answer.json()["wid"]
                    await wait_done(alice, f"/{family}/{self.wids[family]}")
        if self.wids.get("console") not in self.ctx.consoles.consoles:
            self.wids["console"] = new_wid("console")
            await self.ctx.consoles.open(self.wids["console"], CONSOLE_NODE, "alice")

    def _restore_rows(self, session: Any) -> dict[str, Any]:
        for user in ("alice", "carol"):
            db_rights.add_rights(session, user, NODES_C1 + NODES_C2, ["*"])
        db_rights.delete_rights(session, "dave")
        rows = db_envs.find_environments(session, name="matrix-env", users=["alice"])
        current = [db_envs.to_api(row) for row in rows]
        if self.baseline_env is None or current != [self.baseline_env]:
            for row in rows:
                session.delete(row)
            session.flush()
            return db_envs.to_api(db_envs.add_environment(session, dict(RECORD), "alice"))
        return current[0]

    def state(self) -> tuple[Any, ...]:
        """What a refused request must not change."""
        workflows = {wid: (wf.done, wf.aborted) for wid, wf in self.ctx.registry.workflows.items()}
        return database_snapshot(self.db_path), workflows, sorted(self.ctx.consoles.consoles)

    def concrete(self, case: Case) -> str:
        family = case.path.split("/")[1]
        user = "carol" if family == "rights" else "alice"
        values = {"wid": self.wids.get(family, ""), "user": user, "node": NODE, "cluster": "c1",
                  "name": "matrix-env", "version": "1", "partition": "*", "operation": "deploy"}
        path = case.path
        for key, value in values.items():
            path = path.replace("{" + key + "}", value)
        return path


@pytest.fixture(params=MODES)
async def site(request, tmp_path: Path) -> AsyncIterator[Site]:
    mode = request.param
    db_path = tmp_path / "kadeploy.db"
    database = database_at(db_path)
    ident_server = await asyncio.start_server(identd, "127.0.0.1", 0)
    auth = {
        "acl": lambda: AuthSettings(acl=Whitelist(["127.0.0.1"])),
        "http_basic": lambda: AuthSettings(http_basic_dbfile=htpasswd),
        "certificate": lambda: AuthSettings(certificate_ca=ca.path),
        "ident": lambda: AuthSettings(ident=Whitelist(["127.0.0.1"]),
                                      ident_port=ident_server.sockets[0].getsockname()[1], ident_timeout=2),
    }
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("".join(f"{user}:{bcrypt.hashpw(f'pw-{user}'.encode(), bcrypt.gensalt(4)).decode()}\n"
                                for user in USERS))
    ca = Authority(tmp_path / "pki", "matrix-ca")
    certificates = {user: ca.issue(user)[0].read_text() for user in USERS} if mode == "certificate" else {}
    app = create_app(make_settings(auth=auth[mode]()), database, DummyRunner(delay=0.0),
                     console_factory=RecordingConsoles())
    app.state.ctx.authenticator.throttle = FailureThrottle(free=10**6)   # throttling: its own test

    def asgi(target: Any, host: str = "127.0.0.1", port: int = 40000, **headers: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=target, client=(host, port)),
                                 base_url="http://t", headers=headers)

    def basic(user: str, password: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}

    clients = {
        "acl": lambda user: asgi(app, host="10.1.1.1", **{"X-Kadeploy-User": "root"}) if user == "stranger"
        else asgi(app, **{"X-Kadeploy-User": user}),
        "http_basic": lambda user: asgi(app, **basic("root", "guess")) if user == "stranger"
        else asgi(app, **basic(user, f"pw-{user}")),
        "certificate": lambda user: asgi(app, **{"X-Kadeploy-User": "root", "X-Kadeploy-Certificate":
                                                 base64.b64encode(certificates["root"].encode()).decode()})
        if user == "stranger" else asgi(ClientCertificateScope(app, certificates[user])),
        "ident": lambda user: asgi(app, port=40009, **{"X-Kadeploy-User": "root"}) if user == "stranger"
        else asgi(app, port={v: k for k, v in IDENT_PORTS.items()}[user]),
    }
    site = Site(app, db_path, clients[mode])
    await site.restore()
    try:
        yield site
    finally:
        await app.state.ctx.registry.shutdown()
        ident_server.close()
        await ident_server.wait_closed()
        database.dispose()


def test_the_matrix_names_every_operation_of_the_api(tmp_path):
    app = create_app(make_settings(), database_at(tmp_path / "k.db"), DummyRunner(delay=0.0))
    operations = {(method, path) for path, ops in app.openapi()["paths"].items() for method in ops}
    assert len(operations) > 55, operations
    assert {(case.method, case.path) for case in EXPECTED} == operations


async def send(client: httpx.AsyncClient, case: Case, path: str) -> httpx.Response:
    body = case.body()
    if body is not None or case.method in ("post", "put"):
        return await client.request(case.method.upper(), path, json=body or {}, params=case.query)
    return await client.request(case.method.upper(), path, params=case.query)


def answer_of(response: httpx.Response) -> Answer:
    code = response.headers.get("X-Application-Error-Code")
    return (response.status_code, code) if response.status_code == 400 and code else response.status_code


async def test_every_route_answers_each_caller_by_its_rights_and_refusals_change_nothing(site):
    checked = refused = 0
    for case in EXPECTED:
        for caller in CALLERS:
            if caller == "stranger":
                expected: Answer = 200 if (case.method, case.path) in PUBLIC else 401
            else:
                expected = case.answers[caller]
            path = site.concrete(case)
            before = site.state() if expected != OK else None
            async with site.client(caller) as client:
                response = await send(client, case, path)
                where = (caller, case.method.upper(), path, case.query, response.text[:300])
                assert answer_of(response) == expected, where
                if before is not None:
                    assert site.state() == before, where          # a refused request changed nothing
                    refused += 1
                elif case.launches == "console":
                    await site.ctx.consoles.close(response.json()["wid"])
                elif case.launches:
                    await wait_done(client, f"/{case.launches}/{response.json()['wid']}")
            if expected == OK and case.method != "get":
                await site.restore()
            checked += 1
    assert checked == len(EXPECTED) * len(CALLERS) and refused > 150, (checked, refused)


async def test_workflow_details_are_for_the_owner_and_the_administrators(site):
    """GET /<family>/<wid> answers anyone (Kadeploy3's work_get): others see the node list, not the outcome."""
    for family in FAMILIES:
        for caller in USERS:
            async with site.client(caller) as client:
                info = (await client.get(f"/{family}/{site.wids[family]}")).json()
            assert info["user"] == "alice" and info["done"] is True
            details = caller in ("alice", "root")
            assert isinstance(info["nodes"], dict) == details and ("logs" in info) == details, (family, caller, info)
            assert details or info["nodes"] == [NODES_C1[0]]
    for caller in USERS:
        async with site.client(caller) as client:
            consoles = (await client.get("/console")).json()
        assert bool(consoles) == (caller in ("alice", "root")), (caller, consoles)
