"""Each authentication method of kadeploy3d (reference 1.7, Kadeploy3's test_auth.rb): ACL,
HTTP Basic (`--password`), X.509 certificate and ident, on a server restarted with all four;
the ACL no longer trusts the testbed address, so every accepted request below was accepted
by the method under test.
"""

from __future__ import annotations

import base64
import datetime
import shutil
import socket
import threading

import bcrypt
import httpx
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

pytestmark = [pytest.mark.e2e, pytest.mark.root, pytest.mark.testbed]

URL = "http://10.200.0.1:25300"
IDENT_USER = "carol"


def _certificate(name: str, key, issuer_name: str, issuer_key) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1)))
    if name == issuer_name:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    return builder.sign(issuer_key, hashes.SHA256())


class IdentServer:
    """RFC 1413 on the testbed address: whoever asks, the connection belongs to `carol`."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("10.200.0.1", 113))
        self.sock.listen(8)
        self.sock.settimeout(0.5)
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            with conn:
                conn.settimeout(5)
                try:
                    query = conn.recv(1024).decode().strip()
                    conn.sendall(f"{query} : USERID : UNIX : {IDENT_USER}\r\n".encode())
                except OSError:
                    pass

    def close(self) -> None:
        self.running = False
        self.thread.join(timeout=5)
        self.sock.close()


@pytest.fixture(scope="module")
def all_methods(site, tmp_path_factory):
    directory = tmp_path_factory.mktemp("auth")
    saved = directory / "server.conf.saved"
    shutil.copyfile(site.etc / "server.conf", saved)
    (directory / "htpasswd").write_text(f"alice:{bcrypt.hashpw(b'secret', bcrypt.gensalt()).decode()}\n")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("e2e-ca", ca_key, "e2e-ca", ca_key)
    (directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    user_key = ec.generate_private_key(ec.SECP256R1())
    certificates = {
        "dave": _certificate("dave", user_key, "e2e-ca", ca_key),
        "forged": _certificate("dave", user_key, "someone-else", ec.generate_private_key(ec.SECP256R1())),
    }
    conf = yaml.safe_load(saved.read_text())
    conf["authentication"] = {
        "acl": {"whitelist": ["127.0.0.1"]},
        "http_basic": {"dbfile": str(directory / "htpasswd"), "realm": "e2e"},
        # the testbed's server speaks plain HTTP: Kadeploy3's header certificates, behind the unsafe key
        # (certificates in the TLS handshake: tests/security/test_tls_client_certificates.py)
        "certificate": {"ca_cert": str(directory / "ca.pem"), "unsafe_header": True},
        "ident": {"whitelist": ["10.200.0.1"]},
    }
    (site.etc / "server.conf").write_text(yaml.safe_dump(conf, sort_keys=False))
    ident = IdentServer()
    site.stop_server()
    try:
        site.start_server()
        yield {name: base64.b64encode(cert.public_bytes(serialization.Encoding.PEM)).decode()
               for name, cert in certificates.items()}
    finally:
        ident.close()
        site.stop_server()
        shutil.copyfile(saved, site.etc / "server.conf")
        site.start_server()


def test_acl_no_longer_trusts_the_testbed_address(site, all_methods) -> None:
    # mallory is not who ident says (carol), and no other method vouches for her
    response = httpx.get(f"{URL}/environments", headers={"X-Kadeploy-User": "mallory"}, timeout=15)
    assert response.status_code == 401, response.text
    refused = site.tool("kaenv3", "-l", user="mallory", check=False)
    assert refused.returncode != 0


def test_http_basic_with_password_option(site, all_methods) -> None:
    assert site.tool("kaenv3", "-l", "--password", "secret", user="alice").returncode == 0
    wrong = site.tool("kaenv3", "-l", "--password", "wrong", user="alice", check=False)
    assert wrong.returncode != 0
    # authenticated as alice (not an administrator): rights are forbidden (403), not unauthenticated (401)
    assert httpx.get(f"{URL}/rights", auth=("alice", "secret"), timeout=15).status_code == 403
    assert httpx.get(f"{URL}/rights", auth=("alice", "wrong"), timeout=15).status_code == 401


def test_certificate_signed_by_the_ca(site, all_methods) -> None:
    good = httpx.get(f"{URL}/environments", timeout=15,
                     headers={"X-Kadeploy-User": "dave", "X-Kadeploy-Certificate": all_methods["dave"]})
    assert good.status_code == 200, good.text
    mismatch = httpx.get(f"{URL}/environments", timeout=15,
                         headers={"X-Kadeploy-User": "erin", "X-Kadeploy-Certificate": all_methods["dave"]})
    assert mismatch.status_code == 401
    forged = httpx.get(f"{URL}/environments", timeout=15,
                       headers={"X-Kadeploy-User": "dave", "X-Kadeploy-Certificate": all_methods["forged"]})
    assert forged.status_code == 401


def test_ident_confirms_the_user(site, all_methods) -> None:
    assert site.tool("kaenv3", "-l", user=IDENT_USER).returncode == 0
    nodes = site.tool("kanodes3", "-s", user=IDENT_USER)
    assert nodes.returncode == 0
