"""X-Forwarded-For is believed only from `security/trusted_proxies`, never from loopback by default.

uvicorn's default trusts the header from 127.0.0.1, which let any local
account on the server host claim a whitelisted address and pass the ACL (and
the HTTP Basic whitelist). Against the real kadeploy3d on 127.0.0.1.
"""

from __future__ import annotations

import httpx
import pytest
from tlslab import Kadeploy3d

from kadeploy.config.server import SecurityConfig

pytestmark = pytest.mark.slow

SPOOF = {"X-Kadeploy-User": "root", "X-Forwarded-For": "10.9.9.9"}
AUTH = {"acl": {"whitelist": ["10.9.9.9"]}}


def test_x_forwarded_for_from_loopback_is_ignored_by_default(tmp_path):
    server = Kadeploy3d(tmp_path, secure=False, server_extra={"authentication": AUTH}).start()
    try:
        answer = httpx.get(f"{server.url}/deployment", headers=SPOOF, timeout=10)
        assert answer.status_code == 401, answer.text
        assert "127.0.0.1" in answer.text      # the peer, not the forwarded address
    finally:
        server.stop()


def test_x_forwarded_for_from_a_configured_proxy_names_the_client(tmp_path):
    server = Kadeploy3d(tmp_path, secure=False, server_extra={
        "authentication": AUTH, "security": {"secure_server": False, "trusted_proxies": ["127.0.0.0/8"]}}).start()
    try:
        assert httpx.get(f"{server.url}/deployment", headers=SPOOF, timeout=10).status_code == 200
        other = httpx.get(f"{server.url}/deployment", headers={**SPOOF, "X-Forwarded-For": "10.9.9.10"}, timeout=10)
        assert other.status_code == 401
    finally:
        server.stop()


@pytest.mark.parametrize("entry", ["proxy.example.org", "/^proxy/", "10.0.0.0/99"])
def test_trusted_proxies_are_addresses_or_networks(entry):
    with pytest.raises(ValueError, match="expected an address or an address/prefix"):
        SecurityConfig.model_validate({"trusted_proxies": [entry]})
