"""Each authentication method: good credentials accepted, bad ones and non-whitelisted hosts refused."""

from __future__ import annotations

import asyncio
import base64
import datetime
from pathlib import Path

import bcrypt
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kadeploy.errors import ConfigError
from kadeploy.server.app import create_app
from kadeploy.server.htpasswd import apr1_hash, verify_hash
from kadeploy.server.settings import AuthSettings, Whitelist
from kadeploy.server.whitelist import HostMatcher
from kadeploy_testbed.dummy import DummyRunner
from server_fixtures import make_settings


def client_for(app, host: str, headers: dict[str, str] | None = None, port: int = 40000) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(host, port))
    return httpx.AsyncClient(transport=transport, base_url="http://t", headers=headers or {})


async def status_of(app, host: str, headers: dict[str, str] | None = None, port: int = 40000) -> int:
    async with client_for(app, host, headers, port) as client:
        return (await client.get("/nodes", params={"list": "true"})).status_code


async def test_acl_trusts_the_user_header_from_whitelisted_hosts(database):
    app = create_app(make_settings(auth=AuthSettings(acl=Whitelist(["10.0.0.0/24", "/^192\\.168\\.1\\.\\d+$/"]))),
                     database, DummyRunner())
    assert await status_of(app, "10.0.0.7", {"X-Kadeploy-User": "alice"}) == 200
    assert await status_of(app, "192.168.1.9", {"X-Kadeploy-User": "alice"}) == 200
    assert await status_of(app, "10.0.1.7", {"X-Kadeploy-User": "alice"}) == 401
    assert await status_of(app, "10.0.0.7") == 401  # no user header


async def test_http_basic_against_htpasswd(database, tmp_path: Path):
    dbfile = tmp_path / "htpasswd"
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode().replace("$2b$", "$2y$")
    dbfile.write_text(f"alice:{hashed}\nbob:{apr1_hash('hunter2', 'abcdefgh')}\n")
    auth = AuthSettings(http_basic_dbfile=dbfile, http_basic_whitelist=Whitelist(["127.0.0.1"]))
    app = create_app(make_settings(auth=auth), database, DummyRunner())

    def basic(user: str, password: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}

    assert await status_of(app, "127.0.0.1", basic("alice", "s3cret")) == 200
    assert await status_of(app, "127.0.0.1", basic("bob", "hunter2")) == 200
    assert await status_of(app, "127.0.0.1", basic("alice", "wrong")) == 401
    assert await status_of(app, "127.0.0.1", basic("mallory", "s3cret")) == 401
    assert await status_of(app, "10.1.1.1", basic("alice", "s3cret")) == 401  # not whitelisted
    async with client_for(app, "127.0.0.1") as client:
        assert "Basic" in (await client.get("/nodes")).headers["WWW-Authenticate"]


def test_htpasswd_hash_formats():
    assert verify_hash("password", "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=")
    assert not verify_hash("password", "{SHA}AAAAMm5Pz8GgiULbPgzG37mj9g=")
    # reference value produced by `openssl passwd -apr1 -salt abcdefgh password`
    assert apr1_hash("password", "abcdefgh") == "$apr1$abcdefgh$FBwExRW4dCc8aL.OvjpIE1"
    assert not verify_hash("password", "plaintext")


def _certificate(subject_cn: str, issuer_key, issuer_name: x509.Name, key, days: int = 1) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
            .issuer_name(issuer_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=2)).not_valid_after(now + datetime.timedelta(days=days))
            .sign(issuer_key, hashes.SHA256()))


async def test_x509_certificate_in_a_header_only_in_the_unsafe_compatibility_mode(database, tmp_path: Path):
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Kadeploy CA")])
    ca = _certificate("Kadeploy CA", ca_key, ca_name, ca_key, days=10)
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    strict = create_app(make_settings(auth=AuthSettings(certificate_ca=tmp_path / "ca.pem")), database,
                        DummyRunner())
    app = create_app(make_settings(auth=AuthSettings(certificate_ca=tmp_path / "ca.pem",
                                                     certificate_unsafe_header=True)), database, DummyRunner())
    user_key = ec.generate_private_key(ec.SECP256R1())

    def header(cert: x509.Certificate, user: str | None = None) -> dict[str, str]:
        headers = {"X-Kadeploy-Certificate": base64.b64encode(cert.public_bytes(serialization.Encoding.PEM)).decode()}
        if user:
            headers["X-Kadeploy-User"] = user
        return headers

    good = _certificate("alice", ca_key, ca_name, user_key)
    assert await status_of(strict, "10.3.3.3", header(good)) == 401  # no proof of the private key
    assert await status_of(app, "10.3.3.3", header(good)) == 200
    assert await status_of(app, "10.3.3.3", header(good, "alice")) == 200
    assert await status_of(app, "10.3.3.3", header(good, "root")) == 401  # CN is not the claimed user
    rogue_key = ec.generate_private_key(ec.SECP256R1())
    rogue = _certificate("alice", rogue_key, ca_name, user_key)
    assert await status_of(app, "10.3.3.3", header(rogue)) == 401
    expired = _certificate("alice", ca_key, ca_name, user_key, days=-1)
    assert await status_of(app, "10.3.3.3", header(expired)) == 401


async def test_ident_rfc1413(database):
    queries: list[str] = []

    async def identd(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = (await reader.readline()).decode().strip()
        queries.append(line)
        client_port = line.split(",")[0].strip()
        user = "alice" if client_port == "40000" else "UNKNOWN-ERROR"
        kind = "USERID : UNIX" if client_port == "40000" else "ERROR"
        writer.write(f"{line} : {kind} : {user}\r\n".encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(identd, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        auth = AuthSettings(ident=Whitelist(["127.0.0.1"]), ident_port=port, ident_timeout=2)
        app = create_app(make_settings(auth=auth), database, DummyRunner())
        assert await status_of(app, "127.0.0.1", port=40000) == 200
        assert queries[-1].startswith("40000,")
        assert await status_of(app, "127.0.0.1", {"X-Kadeploy-User": "root"}, port=40000) == 401
        assert await status_of(app, "127.0.0.1", port=40001) == 401   # identd reports an error
        assert await status_of(app, "10.9.9.9", port=40000) == 401    # not whitelisted: identd not asked
    finally:
        server.close()
        await server.wait_closed()


def test_whitelist_entries():
    matcher = HostMatcher.build(["127.0.0.1", "10.1.0.0/16", "localhost", "/^node-\\d+$/"])
    assert matcher.match_address("10.1.200.3") and matcher.match_address("127.0.0.1")
    assert matcher.match_address("::ffff:10.1.0.1")
    assert not matcher.match_address("10.2.0.1")
    with pytest.raises(ConfigError, match="whitelist"):
        HostMatcher.build(["no-such-host.invalid"])
    with pytest.raises(ConfigError, match="regexp"):
        HostMatcher.build(["/([/"])
