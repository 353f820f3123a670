"""X.509 authentication proves the private key: the certificate comes from the TLS handshake.

Against the real kadeploy3d over HTTPS, with a CA, client and server
certificates made here: a certificate pasted into the `X-Kadeploy-Certificate`
header (Kadeploy3's way, which anyone holding a copy of it could use) is
refused unless `authentication/certificate/unsafe_header` is on; a
certificate presented in the handshake and signed by the configured CA
authenticates its CN; one from another CA, or expired, does not get through
the handshake. The clients present the user's certificate and key from
client.conf or the environment.
"""

from __future__ import annotations

import base64
import ssl
from pathlib import Path

import httpx
import pytest
from tlslab import Authority, Kadeploy3d

from kadeploy.client.config import ServerEntry, parse_client_config
from kadeploy.client.errors import ClientError
from kadeploy.client.http import Connection

pytestmark = pytest.mark.slow

NODES = "/nodes"


def tls_client(cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


def header_of(cert: Path) -> str:
    return base64.b64encode(cert.read_bytes()).decode()


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> dict:
    directory = tmp_path_factory.mktemp("x509")
    ca = Authority(directory / "pki", "site-ca")
    other = Authority(directory / "pki", "other-ca")
    material = {
        "ca": ca,
        "alice": ca.issue("alice"),
        "root": ca.issue("root"),
        "expired": ca.issue("alice-expired", days=-1),
        "foreign": other.issue("alice"),
    }
    server = Kadeploy3d(directory / "server", secure=True, server_extra={
        "authentication": {"certificate": {"ca_cert": str(ca.path)},
                           "acl": {"whitelist": ["10.9.9.9"]}}}).start()
    try:
        yield {**material, "server": server}
    finally:
        server.stop()


def test_a_certificate_in_a_header_is_refused_by_default(lab):
    cert, _key = lab["alice"]
    answer = httpx.get(f"{lab['server'].url}{NODES}", verify=tls_client(), timeout=10,
                       headers={"X-Kadeploy-User": "alice", "X-Kadeploy-Certificate": header_of(cert)})
    assert answer.status_code == 401
    assert "TLS handshake" in answer.text


def test_a_handshake_certificate_signed_by_the_ca_authenticates_its_common_name(lab):
    url = lab["server"].url
    with httpx.Client(verify=tls_client(*lab["alice"]), timeout=10) as alice:
        assert alice.get(f"{url}{NODES}").status_code == 200
        assert alice.get(f"{url}/rights").status_code == 403            # alice, not an administrator
        assert alice.get(f"{url}{NODES}", headers={"X-Kadeploy-User": "root"}).status_code == 401  # CN is alice
    with httpx.Client(verify=tls_client(*lab["root"]), timeout=10) as root:
        # root is almighty: past authorization, and no rights recorded (karights.rb `error_not_found!`)
        assert root.get(f"{url}/rights").status_code == 404


def test_no_certificate_and_no_other_method_is_unauthenticated(lab):
    answer = httpx.get(f"{lab['server'].url}{NODES}", verify=tls_client(), timeout=10,
                       headers={"X-Kadeploy-User": "alice"})   # 127.0.0.1 is not in the ACL whitelist
    assert answer.status_code == 401


@pytest.mark.parametrize("which", ["foreign", "expired"])
def test_a_certificate_the_ca_did_not_sign_or_that_expired_fails_the_handshake(lab, which):
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{lab['server'].url}{NODES}", verify=tls_client(*lab[which]), timeout=10)


def test_the_client_presents_the_certificate_named_in_client_conf(lab, tmp_path, monkeypatch):
    monkeypatch.delenv("KADEPLOY3_CERTIFICATE", raising=False)
    cert, key = lab["root"]
    config = parse_client_config({"default": "site", "servers": [
        {"name": "site", "hostname": "127.0.0.1", "port": lab["server"].port, "secure": True,
         "certificate": str(cert), "private_key": str(key)}]}, tmp_path / "client.conf")
    with Connection(config.server(), user="root") as connection:
        assert isinstance(connection.get("/deployment"), list)


def test_the_certificate_in_the_environment_wins_and_must_exist(lab, monkeypatch, tmp_path):
    entry = ServerEntry(name="site", hostname="127.0.0.1", port=lab["server"].port, secure=True)
    cert, key = lab["alice"]
    monkeypatch.setenv("KADEPLOY3_CERTIFICATE", str(cert))
    monkeypatch.setenv("KADEPLOY3_PRIVATE_KEY", str(key))
    with Connection(entry, user="alice") as connection:
        assert connection.get(NODES) is not None
        with pytest.raises(ClientError, match=r"\[HTTP Error #403 on GET /rights\]$"):  # common/http.rb
            connection.get("/rights")
    monkeypatch.setenv("KADEPLOY3_CERTIFICATE", str(tmp_path / "missing.crt"))
    with pytest.raises(ClientError, match=r"missing\.crt.*KADEPLOY3_CERTIFICATE"):
        Connection(entry, user="alice")


def test_a_user_without_the_client_conf_file_presents_no_certificate(lab, tmp_path, monkeypatch):
    monkeypatch.delenv("KADEPLOY3_CERTIFICATE", raising=False)
    entry = ServerEntry(name="site", hostname="127.0.0.1", port=lab["server"].port, secure=True,
                        certificate=str(tmp_path / "nobody.crt"))
    with Connection(entry, user="alice") as connection, pytest.raises(ClientError, match="Authentication failed"):
        connection.get(NODES)


@pytest.fixture(scope="module")
def compatible(lab, tmp_path_factory) -> Kadeploy3d:
    server = Kadeploy3d(tmp_path_factory.mktemp("x509-compat"), secure=False, server_extra={
        "authentication": {"certificate": {"ca_cert": str(lab["ca"].path), "unsafe_header": True}}}).start()
    try:
        yield server
    finally:
        server.stop()


def test_the_header_is_accepted_only_behind_the_unsafe_compatibility_key(lab, compatible):
    cert, _key = lab["alice"]
    good = httpx.get(f"{compatible.url}{NODES}", timeout=10,
                     headers={"X-Kadeploy-User": "alice", "X-Kadeploy-Certificate": header_of(cert)})
    assert good.status_code == 200, good.text
    foreign, _key = lab["foreign"]
    forged = httpx.get(f"{compatible.url}{NODES}", timeout=10,
                       headers={"X-Kadeploy-Certificate": header_of(foreign)})
    assert forged.status_code == 401
