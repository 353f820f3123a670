"""Clients verify the server's certificate when client.conf gives a `ca_cert` (our extension).

Kadeploy3's clients never verify (VERIFY_NONE), so anyone on the path could
pose as the server and read the users' passwords (HTTP Basic) or feed them
answers. Against the real kadeploy3d over TLS with a certificate for
`localhost` signed by the lab's CA: the right CA passes, another CA, a
wrong host name and an unverifiable server under $KADEPLOY3_VERIFY_SERVER are
refused with a clear error, and without either the clients still connect as
Kadeploy3's do.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tlslab import Authority, Kadeploy3d

from kadeploy.client.config import parse_client_config
from kadeploy.client.errors import ClientError
from kadeploy.client.http import Connection

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> dict:
    directory = tmp_path_factory.mktemp("server-verification")
    ca, other = Authority(directory / "pki", "site-ca"), Authority(directory / "pki", "other-ca")
    certificate, key = ca.issue("localhost", server=True)
    server = Kadeploy3d(directory / "server", secure=True, server_extra={"security": {
        "secure_server": True, "certificate": str(certificate),
        "private_key": {"algorithm": "EC", "file": str(key)}}}).start()
    try:
        yield {"directory": directory, "ca": ca.path, "other": other.path, "port": server.port}
    finally:
        server.stop()


def entry(lab: dict, **fields):
    server = {"name": "site", "hostname": "localhost", "port": lab["port"], "secure": True, **fields}
    return parse_client_config({"default": "site", "servers": [server]}, lab["directory"] / "client.conf").server()


def reach(server) -> str:
    with Connection(server, user="alice") as connection:
        return connection.check_reachable()


def test_the_server_certificate_is_verified_against_client_conf_ca_cert(lab, monkeypatch):
    monkeypatch.delenv("KADEPLOY3_VERIFY_SERVER", raising=False)
    assert reach(entry(lab, ca_cert=str(lab["ca"]))) == "3.3.11.test"
    with pytest.raises(ClientError, match="does not verify against ca_cert .*other-ca.pem"):
        reach(entry(lab, ca_cert=str(lab["other"])))
    with pytest.raises(ClientError, match="does not verify"):                      # named 127.0.0.1, not localhost
        reach(entry(lab, ca_cert=str(lab["ca"]), hostname="127.0.0.1"))
    with pytest.raises(ClientError, match="Cannot read the CA certificate .*missing.pem"):
        reach(entry(lab, ca_cert=str(lab["directory"] / "missing.pem")))
    assert reach(entry(lab)) == "3.3.11.test"              # no ca_cert: not verified, as Kadeploy3's clients


def test_verification_can_be_required(lab, monkeypatch):
    monkeypatch.setenv("KADEPLOY3_VERIFY_SERVER", "1")
    with pytest.raises(ClientError, match="does not verify against the system's CAs"):
        reach(entry(lab))                                    # the lab's CA is not a system CA
    assert reach(entry(lab, ca_cert=str(lab["ca"]))) == "3.3.11.test"
    with pytest.raises(ClientError, match="requires a verified server.*without TLS"):
        reach(entry(lab, secure=False))
    monkeypatch.delenv("KADEPLOY3_VERIFY_SERVER")
    with pytest.raises(ClientError, match="does not verify against the system's CAs"):
        reach(entry(lab, verify=True))


def test_a_client_tool_refuses_a_server_signed_by_another_ca(lab, tmp_path):
    def kanodes3(ca: Path) -> subprocess.CompletedProcess:
        (tmp_path / "client.conf").write_text(yaml.safe_dump({"default": "site", "servers": [
            {"name": "site", "hostname": "localhost", "port": lab["port"], "secure": True, "ca_cert": str(ca)}]}))
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("KADEPLOY")},
               "KADEPLOY3_CONFIG_DIR": str(tmp_path), "USER": "alice"}
        return subprocess.run([sys.executable, "-m", "kadeploy.cli.kanodes3", "-d"], env=env, capture_output=True,
                              text=True, timeout=60, check=False)

    refused = kanodes3(lab["other"])
    assert refused.returncode != 0 and "does not verify against ca_cert" in refused.stderr + refused.stdout, refused
    assert "Traceback" not in refused.stderr
    accepted = kanodes3(lab["ca"])
    assert accepted.returncode == 0, accepted
