"""server.conf keys of the authentication hardening: refused where unsafe, carried to the listener."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from kadeploy.config import ServerConfig
from kadeploy.config.validation import validate_model
from kadeploy.errors import ConfigError
from kadeploy.server.listener import listen_options
from kadeploy.server.settings import from_config

BASE = {"cache": {"size": 1000}, "pxe": {"dhcp": {"repository": "/srv/tftp"}}}


def load(data: dict) -> ServerConfig:
    return validate_model(ServerConfig, {**BASE, **data}, "server.conf",
                          context={"config_dir": Path("/etc/kadeploy3")})[0]


def test_certificates_without_tls_are_refused():
    with pytest.raises(ConfigError, match="server.conf: .*authentication/certificate: client certificates are "
                                          "checked in the TLS handshake, which needs security/secure_server: true"):
        load({"authentication": {"certificate": {"ca_cert": "ca.pem"}}, "security": {"secure_server": False}})


def test_a_ca_public_key_alone_cannot_verify_handshakes():
    with pytest.raises(ConfigError, match="ca_public_key alone is not enough"):
        load({"authentication": {"certificate": {"ca_public_key": {"algorithm": "EC", "file": "ca.pub"}}}})


def test_the_unsafe_header_is_off_by_default_and_allowed_over_http_when_asked():
    assert load({"authentication": {"certificate": {"ca_cert": "ca.pem"}}}).authentication.certificate \
        .unsafe_header is False
    server = load({"authentication": {"certificate": {"ca_cert": "ca.pem", "unsafe_header": True}},
                   "security": {"secure_server": False}})
    assert server.authentication.certificate.unsafe_header is True


class _Cfg:
    def __init__(self, server: ServerConfig) -> None:
        self.server, self.clusters, self.nodes = server, {}, {}


def test_the_listener_asks_for_client_certificates_and_trusts_no_proxy_by_default(tmp_path):
    settings = from_config(_Cfg(load({"authentication": {"certificate": {"ca_cert": "/etc/kadeploy3/ca.pem"}}})))
    assert settings.auth.certificate_unsafe_header is False
    options = listen_options(settings, tmp_path)
    assert options["ssl_cert_reqs"] == ssl.CERT_OPTIONAL
    assert options["ssl_ca_certs"] == "/etc/kadeploy3/ca.pem"
    assert options["proxy_headers"] is False
    proxied = from_config(_Cfg(load({"authentication": {"acl": {"whitelist": ["10.0.0.1"]}},
                                     "security": {"trusted_proxies": ["192.0.2.7", "2001:db8::/64"]}})))
    options = listen_options(proxied, tmp_path)
    assert "ssl_ca_certs" not in options
    assert options["proxy_headers"] is True
    assert options["forwarded_allow_ips"] == ["192.0.2.7", "2001:db8::/64"]
