"""Authentication of HTTP requests (room `server`, reference 1.7).

Four methods, each optionally limited to whitelisted source hosts:

* X.509: the client certificate of the TLS handshake, verified there against
  the configured CA (see `kadeploy.server.listener`), whose CN is the user
  (and must equal `<prefix>User` if given). Kadeploy3's base64 certificate in
  a `<prefix>Certificate` header proves nothing (no proof of the private
  key): it is refused unless `authentication/certificate/unsafe_header` is on;
* HTTP Basic against an htpasswd file, checked in a small thread pool (bcrypt
  is slow and would stall every request), as slowly for unknown users as for
  known ones, and slowed down per source after repeated failures
  (`kadeploy.server.throttle`);
* ACL: a `<prefix>User` header from a whitelisted host is trusted as is;
* ident (RFC 1413): the client host's identd names the user of the connection.

The source host is the TCP peer; `X-Forwarded-For` only counts from
`security/trusted_proxies` (applied before this module sees the request).
Credentials that are presented but wrong are rejected at once (HTTP 401)
instead of falling through to a weaker method. Almighty users are admins.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID
from starlette.requests import Request

from kadeploy.errors import KadeployError
from kadeploy.identifiers import check_user_name
from kadeploy.server.htpasswd import HtpasswdFile
from kadeploy.server.ident import ident_user
from kadeploy.server.settings import AuthSettings
from kadeploy.server.throttle import FailureThrottle
from kadeploy.server.whitelist import HostMatcher

#: threads verifying HTTP Basic passwords (bcrypt releases the GIL; the host has few cores to spare)
BASIC_WORKERS = 2
#: password checks queued or running at once; more are refused rather than queued without end
BASIC_MAX_PENDING = 64


class AuthenticationError(Exception):
    """The request is not authenticated (HTTP 401); the message says why."""


@dataclass(frozen=True)
class Identity:
    """Who sent the request, and how we know."""

    user: str
    method: str
    admin: bool


def _load_certificate(data: bytes) -> x509.Certificate:
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except Exception:  # noqa: BLE001 - InvalidSignature, ValueError, TypeError have no common base
        return False
    return True


def handshake_certificate(request: Request) -> x509.Certificate | None:
    """The client certificate the TLS handshake verified (ASGI TLS extension), if any."""
    tls = (request.scope.get("extensions") or {}).get("tls") or {}
    chain = tls.get("client_cert_chain") or []
    if not chain:
        return None
    try:
        return x509.load_pem_x509_certificate(str(chain[0]).encode())
    except ValueError:
        return None


class Authenticator:
    """Checks requests against the configured methods."""

    def __init__(self, settings: AuthSettings, almighty_users: list[str]) -> None:
        self.settings = settings
        self.almighty_users = set(almighty_users)
        self.prefix = settings.headers_prefix
        self.acl = HostMatcher.build(settings.acl.entries, "authentication/acl/whitelist") if settings.acl else None
        self.basic = HtpasswdFile(settings.http_basic_dbfile) if settings.http_basic_dbfile else None
        self.basic_whitelist = (HostMatcher.build(settings.http_basic_whitelist.entries,
                                                  "authentication/http_basic/whitelist")
                                if settings.http_basic_whitelist else None)
        self.basic_pool = ThreadPoolExecutor(max_workers=BASIC_WORKERS, thread_name_prefix="kadeploy-http-basic")
        self.basic_pending = 0
        self.throttle = FailureThrottle()
        self.ca: x509.Certificate | None = None
        #: every certificate of the ca_cert file (a CA and its intermediates), as OpenSSL reads it
        self.cas: list[x509.Certificate] = []
        if settings.certificate_ca is not None:
            from kadeploy.errors import ConfigError
            try:
                data = settings.certificate_ca.read_bytes()
                self.cas = x509.load_pem_x509_certificates(data) if b"-----BEGIN" in data \
                    else [x509.load_der_x509_certificate(data)]
            except (OSError, ValueError) as exc:
                raise ConfigError(f"server.conf: authentication/certificate/ca_cert: cannot load "
                                  f"{settings.certificate_ca}: {exc}") from None
            self.ca = self.cas[0]
        self.cert_whitelist = (HostMatcher.build(settings.certificate_whitelist.entries,
                                                 "authentication/certificate/whitelist")
                               if settings.certificate_whitelist else None)
        self.ident = HostMatcher.build(settings.ident.entries, "authentication/ident/whitelist") \
            if settings.ident is not None else None

    def identity(self, user: str, method: str) -> Identity:
        """The identity of `user`; a name that could not be a user (a path, an option, control
        characters) is refused here, before it reaches a template, a file name or the database."""
        try:
            check_user_name(user)
        except KadeployError as exc:
            raise AuthenticationError(str(exc)) from None
        return Identity(user=user, method=method, admin=user in self.almighty_users)

    async def authenticate(self, request: Request) -> Identity:
        """The identity of the request's sender, or AuthenticationError."""
        host = request.client.host if request.client else ""
        claimed_user = request.headers.get(f"{self.prefix}User")
        authorization = request.headers.get("Authorization", "")
        if self.ca is not None:
            peer_certificate = handshake_certificate(request)
            if peer_certificate is not None:
                await self._check_certificate_host(host)
                return self.identity(self._check_certificate(peer_certificate, claimed_user), "certificate")
        if self.basic is not None and authorization.lower().startswith("basic "):
            if self.basic_whitelist is not None and not await self.basic_whitelist.match(host):
                raise AuthenticationError(f"HTTP Basic authentication is not allowed from {host}")
            return self.identity(await self._check_basic(authorization[6:], host), "http_basic")
        header_certificate = request.headers.get(f"{self.prefix}Certificate")
        if self.ca is not None and header_certificate:
            if not self.settings.certificate_unsafe_header:
                raise AuthenticationError(
                    f"A certificate in the {self.prefix}Certificate header proves nothing and is refused: "
                    "present it in the TLS handshake (client.conf: certificate and private_key)")
            await self._check_certificate_host(host)
            return self.identity(self._check_certificate(self._header_certificate(header_certificate),
                                                         claimed_user), "certificate")
        if self.acl is not None and claimed_user and await self.acl.match(host):
            return self.identity(claimed_user, "acl")
        if self.ident is not None and request.client is not None and (
                not self.ident.networks and not self.ident.patterns or await self.ident.match(host)):
            server_port = (request.scope.get("server") or ("", 0))[1] or 0
            user = await ident_user(host, request.client.port, server_port, ident_port=self.settings.ident_port,
                                    timeout=self.settings.ident_timeout)
            if user is not None and (not claimed_user or claimed_user == user):
                return self.identity(user, "ident")
            if user is not None:
                raise AuthenticationError(f"ident reports user {user!r}, not {claimed_user!r}")
        raise AuthenticationError(f"Authentication failed: no valid credentials from {host or 'unknown host'}")

    async def _check_certificate_host(self, host: str) -> None:
        if self.cert_whitelist is not None and not await self.cert_whitelist.match(host):
            raise AuthenticationError(f"Certificate authentication is not allowed from {host}")

    async def _check_basic(self, encoded: str, host: str) -> str:
        """The user, if the password is right; waits its turn when `host` keeps failing."""
        assert self.basic is not None
        wait = self.throttle.reserve(host)
        if wait is None:
            raise AuthenticationError(f"Too many failed HTTP Basic authentications from {host}: try again later")
        if wait > 0:
            await asyncio.sleep(wait)
        try:
            user, _, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise AuthenticationError("Malformed HTTP Basic credentials") from None
        if self.basic_pending >= BASIC_MAX_PENDING:
            raise AuthenticationError("Too many HTTP Basic authentications in progress: try again later")
        self.basic_pending += 1
        try:
            right = await asyncio.get_running_loop().run_in_executor(self.basic_pool, self.basic.check, user,
                                                                      password)
        finally:
            self.basic_pending -= 1
        if not user or not right:
            raise AuthenticationError("HTTP Basic authentication failed: wrong user or password")
        self.throttle.succeeded(host)
        return user

    @staticmethod
    def _header_certificate(encoded: str) -> x509.Certificate:
        try:
            return _load_certificate(base64.b64decode(encoded.strip(), validate=False))
        except (binascii.Error, ValueError):
            raise AuthenticationError("Invalid certificate in the request headers") from None

    def _check_certificate(self, cert: x509.Certificate, claimed_user: str | None) -> str:
        """The CN of `cert`, once checked against the CA (again, for the handshake's) and its dates."""
        if not any(_issued_by(cert, ca) for ca in self.cas):
            raise AuthenticationError("The certificate is not signed by the server's CA")
        now = datetime.datetime.now(datetime.timezone.utc)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise AuthenticationError("The certificate has expired or is not yet valid")
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if not names:
            raise AuthenticationError("The certificate has no CN")
        common_name = str(names[0].value)
        if claimed_user and claimed_user != common_name:
            raise AuthenticationError(f"The certificate's CN {common_name!r} does not match user {claimed_user!r}")
        return common_name
