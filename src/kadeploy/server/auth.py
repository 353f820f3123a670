"""Authentication of HTTP requests (room `server`, reference 1.7).

Four methods, each optionally limited to whitelisted source hosts:

* ACL: a `<prefix>User` header from a whitelisted host is trusted as is;
* HTTP Basic against an htpasswd file;
* X.509: a base64 certificate in `<prefix>Certificate`, signed by the
  configured CA, whose CN is the user (and must equal `<prefix>User` if given);
* ident (RFC 1413): the client host's identd names the user of the connection.

Credentials that are presented but wrong are rejected at once (HTTP 401)
instead of falling through to a weaker method. Almighty users are admins.
"""

from __future__ import annotations

import base64
import binascii
import datetime
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID
from starlette.requests import Request

from kadeploy.errors import KadeployError
from kadeploy.identifiers import check_user_name
from kadeploy.server.htpasswd import HtpasswdFile
from kadeploy.server.ident import ident_user
from kadeploy.server.settings import AuthSettings
from kadeploy.server.whitelist import HostMatcher


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
        self.ca: x509.Certificate | None = None
        if settings.certificate_ca is not None:
            from kadeploy.errors import ConfigError
            try:
                self.ca = _load_certificate(settings.certificate_ca.read_bytes())
            except (OSError, ValueError) as exc:
                raise ConfigError(f"server.conf: authentication/certificate/ca_cert: cannot load "
                                  f"{settings.certificate_ca}: {exc}") from None
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
        if self.basic is not None and authorization.lower().startswith("basic "):
            if self.basic_whitelist is not None and not await self.basic_whitelist.match(host):
                raise AuthenticationError(f"HTTP Basic authentication is not allowed from {host}")
            return self.identity(self._check_basic(authorization[6:]), "http_basic")
        certificate = request.headers.get(f"{self.prefix}Certificate")
        if self.ca is not None and certificate:
            if self.cert_whitelist is not None and not await self.cert_whitelist.match(host):
                raise AuthenticationError(f"Certificate authentication is not allowed from {host}")
            return self.identity(self._check_certificate(certificate, claimed_user), "certificate")
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

    def _check_basic(self, encoded: str) -> str:
        assert self.basic is not None
        try:
            user, _, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise AuthenticationError("Malformed HTTP Basic credentials") from None
        if not user or not self.basic.check(user, password):
            raise AuthenticationError("HTTP Basic authentication failed: wrong user or password")
        return user

    def _check_certificate(self, encoded: str, claimed_user: str | None) -> str:
        assert self.ca is not None
        try:
            data = base64.b64decode(encoded.strip(), validate=False)
            cert = _load_certificate(data)
        except (binascii.Error, ValueError):
            raise AuthenticationError("Invalid certificate in the request headers") from None
        try:
            cert.verify_directly_issued_by(self.ca)
        except (ValueError, TypeError, Exception) as exc:  # InvalidSignature has no common base
            raise AuthenticationError(f"The certificate is not signed by the server's CA ({type(exc).__name__})") \
                from None
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
