"""The server fetches user URLs only where security/fetch allows, pinned to the checked address, over verified TLS.

Real HTTP(S) servers on loopback: loopback is refused by default, then
allowed by the test's policy as an administrator would allow a network.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from kadeploy.catalog import fetchpolicy
from kadeploy.catalog.fetchpolicy import FetchPolicy, check_client_callback
from kadeploy.catalog.files import FileFetcher
from kadeploy.config.fetch import FetchConfig
from kadeploy.errors import ErrorCode, KadeployError
from kadeploy.server.http import read_params

BODY = b"image bytes"


class _Handler(BaseHTTPRequestHandler):
    hosts: list[str] = []

    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        pass

    def do_HEAD(self):  # noqa: N802 - stdlib naming
        self._answer(False)

    def do_GET(self):  # noqa: N802 - stdlib naming
        self._answer(True)

    def _answer(self, body: bool) -> None:
        type(self).hosts.append(self.headers.get("Host", ""))
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        if body:
            self.wfile.write(BODY)


@pytest.fixture
def http_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    _Handler.hosts = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _self_signed(directory):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                         x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
def https_server(tmp_path):
    cert, key = _self_signed(tmp_path)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    _Handler.hosts = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], cert
    server.shutdown()
    server.server_close()


def _fetcher(tmp_path, policy=None, **kwargs):
    return FileFetcher(tmp_path / "cache", [], policy=policy, **kwargs)


ALLOW_LOOPBACK = FetchPolicy.from_lists(allow=["127.0.0.0/8"])


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]"])
async def test_loopback_is_refused_by_default_under_any_name(tmp_path, http_server, host):
    with pytest.raises(KadeployError) as caught:
        await _fetcher(tmp_path).fetch(f"http://{host}:{http_server}/env.tgz", what="image")
    assert caught.value.code == ErrorCode.INVALID_FILE
    assert "loopback" in caught.value.message
    assert _Handler.hosts == []  # no request reached the server


async def test_a_dry_run_check_is_refused_as_the_fetch_is(tmp_path, http_server):
    with pytest.raises(KadeployError, match="loopback"):
        await _fetcher(tmp_path).check(f"http://127.0.0.1:{http_server}/env.tgz")
    assert _Handler.hosts == []


async def test_an_allowed_network_is_fetched(tmp_path, http_server):
    fetched = await _fetcher(tmp_path, ALLOW_LOOPBACK).fetch(f"http://127.0.0.1:{http_server}/env.tgz")
    assert fetched.path.read_bytes() == BODY


async def test_a_more_specific_deny_and_the_bmc_addresses_win_over_an_allow(tmp_path, http_server):
    url = f"http://127.0.0.1:{http_server}/env.tgz"
    denied = FetchPolicy.from_lists(allow=["127.0.0.0/8"], deny=["127.0.0.1/32"])
    with pytest.raises(KadeployError, match=r"security/fetch/deny \(127.0.0.1/32\)"):
        await _fetcher(tmp_path, denied).fetch(url)
    bmc = FetchPolicy.from_lists(allow=["127.0.0.0/8"], bmc_hosts=["localhost"])
    with pytest.raises(KadeployError, match="BMC"):
        await _fetcher(tmp_path, bmc).fetch(url)
    assert _Handler.hosts == []


async def test_an_allow_list_refuses_what_it_does_not_name(tmp_path, http_server):
    only = FetchPolicy.from_lists(allow=["192.0.2.0/24"])
    with pytest.raises(KadeployError, match="loopback"):
        await _fetcher(tmp_path, only).fetch(f"http://127.0.0.1:{http_server}/env.tgz")
    assert only.decide(ipaddress.ip_address("192.0.2.9")) is None
    assert only.decide(ipaddress.ip_address("203.0.113.5")) == "not in security/fetch/allow"
    assert FetchPolicy().decide(ipaddress.ip_address("169.254.169.254")) == "a link-local address"
    assert FetchPolicy().decide(ipaddress.ip_address("203.0.113.5")) is None


async def test_the_name_is_resolved_once_and_the_checked_address_is_connected_to(tmp_path, http_server,
                                                                                 monkeypatch):
    answers = [[ipaddress.ip_address("127.0.0.1")], [ipaddress.ip_address("192.0.2.1")]]
    calls = []

    async def rebinding(host, what, uri):
        calls.append(host)
        return answers[len(calls) - 1]

    monkeypatch.setattr(fetchpolicy, "resolve_host", rebinding)
    fetched = await _fetcher(tmp_path, ALLOW_LOOPBACK).fetch(f"http://files.example:{http_server}/env.tgz")
    assert fetched.path.read_bytes() == BODY
    assert calls == ["files.example"]
    assert _Handler.hosts == [f"files.example:{http_server}"]  # the Host header names the URL's host


async def test_tls_is_verified_against_the_configured_ca_bundle(tmp_path, https_server):
    port, cert = https_server
    url = f"https://localhost:{port}/env.tgz"
    with pytest.raises(KadeployError, match="Unable to grab"):
        await _fetcher(tmp_path, ALLOW_LOOPBACK).fetch(url)
    fetched = await _fetcher(tmp_path, ALLOW_LOOPBACK, ca_bundle=str(cert)).fetch(url)
    assert fetched.path.read_bytes() == BODY
    assert _Handler.hosts == [f"localhost:{port}"]


async def test_a_size_cap_refuses_a_bigger_file(tmp_path, http_server):
    with pytest.raises(KadeployError, match="too big"):
        await _fetcher(tmp_path, ALLOW_LOOPBACK, max_size=4).fetch(f"http://127.0.0.1:{http_server}/env.tgz")


async def test_the_client_file_server_is_reached_at_the_request_source_whatever_the_lists(tmp_path,
                                                                                          http_server):
    client = await check_client_callback(f"http://localhost:{http_server}", "127.0.0.1")
    assert client == f"http://127.0.0.1:{http_server}"
    fetched = await _fetcher(tmp_path).fetch("/home/alice/env.tgz", client=client, what="image")
    assert fetched.path.read_bytes() == BODY


@pytest.mark.parametrize("client", ["http://192.0.2.7:4000", "http://127.0.0.2:4000", "ftp://127.0.0.1:21",
                                    "http://user:pw@127.0.0.1:4000", "http://127.0.0.1:4000/?x=1", 42])
async def test_a_client_file_server_elsewhere_than_the_source_is_refused(client):
    with pytest.raises(KadeployError) as caught:
        await check_client_callback(client, "127.0.0.1")
    assert caught.value.code == ErrorCode.INVALID_CLIENT


async def test_the_api_edge_ties_the_client_url_to_the_source_address():
    async def echo(request):
        try:
            return JSONResponse(await read_params(request))
        except KadeployError as exc:
            return JSONResponse({"code": int(exc.code), "message": exc.message}, status_code=400)

    app = Starlette(routes=[Route("/deployment", echo, methods=["POST"])])
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://kadeploy") as http:
        good = await http.post("/deployment", json={"client": "http://localhost:4000"})
        elsewhere = await http.post("/deployment", json={"client": "http://192.0.2.7:4000"})
        in_query = await http.post("/deployment?client=http://192.0.2.7:4000")
    assert good.json() == {"client": "http://127.0.0.1:4000"}
    assert elsewhere.status_code == 400 and elsewhere.json()["code"] == ErrorCode.INVALID_CLIENT
    assert in_query.status_code == 400


def test_the_configuration_refuses_a_bad_network_and_counts_max_size_in_megabytes():
    with pytest.raises(ValidationError, match="invalid network 'intranet'"):
        FetchConfig.model_validate({"allow": ["intranet"]})
    config = FetchConfig.model_validate({"allow": ["10.0.0.0/8"], "deny": ["10.1.0.0/16"], "max_size": 3})
    assert config.max_bytes == 3 * 1024 * 1024
