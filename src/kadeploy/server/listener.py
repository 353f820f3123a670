"""How kadeploy3d listens: uvicorn's options for TLS, client certificates and proxies (room `server`).

Client certificates. When `authentication/certificate` is configured and TLS
is on, the handshake asks every client for a certificate (optional, so that
the other methods keep working) and OpenSSL verifies it against `ca_cert`: a
certificate from another CA, expired or not yet valid aborts the handshake,
and a client that presents one has proved it holds its private key. The
verified certificate reaches the application through the ASGI TLS extension
(`scope["extensions"]["tls"]["client_cert_chain"]`), which the protocol below
fills from the connection itself, never from anything sent over HTTP.

Proxies. uvicorn believes `X-Forwarded-For` from 127.0.0.1 by default, which
lets any local account on the server host pose as a whitelisted host; here the
header is read only from `security/trusted_proxies` (none by default). A
client certificate seen on a connection from a trusted proxy is the proxy's,
not a user's: it is not passed on.

May import: uvicorn, the server settings and TLS helpers.
"""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from kadeploy.server.settings import ServerSettings
from kadeploy.server.tls import self_signed_certificate

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ClientCertificateScope:
    """ASGI wrapper of one connection: its requests carry the peer's verified certificate."""

    def __init__(self, app: Any, certificate_pem: str) -> None:
        self.app = app
        self.certificate_pem = certificate_pem

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") in ("http", "websocket"):
            extensions = dict(scope.get("extensions") or {})
            extensions["tls"] = {**(extensions.get("tls") or {}), "client_cert_chain": [self.certificate_pem]}
            scope = {**scope, "extensions": extensions}
        await self.app(scope, receive, send)


def peer_certificate_pem(transport: Any) -> str | None:
    """The certificate the peer presented in the TLS handshake (verified by OpenSSL), as PEM."""
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return ssl.DER_cert_to_PEM_cert(der) if der else None


def _from_networks(address: str | None, networks: list[Network]) -> bool:
    if not address or not networks:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks)


def protocol_class(trusted_proxies: list[str]) -> type[H11Protocol]:
    """uvicorn's h11 protocol, passing each connection's client certificate to the application."""
    proxies = [ipaddress.ip_network(entry, strict=False) for entry in trusted_proxies]

    class ClientCertificateProtocol(H11Protocol):
        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            pem = peer_certificate_pem(transport)
            peer = self.client[0] if self.client else None
            if pem is not None and not _from_networks(peer, proxies):
                self.app = ClientCertificateScope(self.app, pem)

    return ClientCertificateProtocol


#: Largest request line and headers read (h11 stops at 16 KiB by default). Kadeploy3's
#: clients put node lists in GET query strings (kanodes3, kastat3): thousands of nodes
#: need more, and the server answers an oversized list with its own bounded error 2
#: rather than a dropped connection; bounded like request bodies (1 MiB).
MAX_REQUEST_HEAD = 1024 * 1024


def listen_options(settings: ServerSettings, run_dir: Path) -> dict[str, Any]:
    """Keyword arguments of `uvicorn.Config` for this configuration (address, TLS, proxies)."""
    options: dict[str, Any] = {
        "host": "127.0.0.1" if settings.local_only else settings.hostname,
        "port": settings.port,
        "http": protocol_class(settings.trusted_proxies),
        "proxy_headers": bool(settings.trusted_proxies),
        "forwarded_allow_ips": list(settings.trusted_proxies),
        "h11_max_incomplete_event_size": MAX_REQUEST_HEAD,
    }
    if settings.secure:
        if settings.certificate and settings.private_key:
            cert, key = settings.certificate, settings.private_key
        else:
            cert, key = self_signed_certificate(run_dir, settings.hostname)
        options.update(ssl_certfile=str(cert), ssl_keyfile=str(key))
        if settings.auth.certificate_ca is not None:
            options.update(ssl_ca_certs=str(settings.auth.certificate_ca), ssl_cert_reqs=ssl.CERT_OPTIONAL)
    return options
