"""HTTP access to one kadeploy3d: auth headers, answer decoding, error mapping.

Client room. Synchronous httpx (the tools are short-lived processes; the
multi-server mode uses one thread per server). Kadeploy3 clients never verify
the server certificate (reference 1.7); ours do when client.conf gives the
server a `ca_cert` (or `verify: true`: the system's CAs), and
`$KADEPLOY3_VERIFY_SERVER=1` makes verification required: a server without
TLS, or whose certificate does not verify, is then refused. When the user has an
X.509 certificate (`$KADEPLOY3_CERTIFICATE` and `$KADEPLOY3_PRIVATE_KEY`, else
client.conf's `certificate` and `private_key`), it is presented in the TLS
handshake, which is how the server's certificate authentication checks it;
client.conf's files are optional per user (absent: no certificate), the
variables' must exist. Every request has a
timeout; every failure becomes a `ClientError` carrying the exit status of
reference 1.3, so that no tool ever shows a traceback.
"""

from __future__ import annotations

import base64
import binascii
import getpass
import json
import os
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import httpx
import yaml

from kadeploy.client.config import ServerEntry
from kadeploy.client.errors import (
    EXIT_GENERIC,
    EXIT_HTTP_ERROR,
    EXIT_SERVER_ERROR,
    ClientError,
    ServerApplicationError,
)

DEFAULT_HEADERS_PREFIX = "X-Kadeploy-"
REQUEST_TIMEOUT = 120.0
REACH_TIMEOUT = 5.0


def current_user() -> str:
    """The user name sent in the `<prefix>User` header ($USER, $USERNAME, then the login)."""
    return os.environ.get("USER") or os.environ.get("USERNAME") or getpass.getuser()


CERTIFICATE_VARIABLE = "KADEPLOY3_CERTIFICATE"
PRIVATE_KEY_VARIABLE = "KADEPLOY3_PRIVATE_KEY"


def client_certificate(server: ServerEntry) -> tuple[Path, Path, str] | None:
    """(certificate, key, where they were named) the user presents to `server`, if any."""
    variable = os.environ.get(CERTIFICATE_VARIABLE)
    if variable:
        key = os.environ.get(PRIVATE_KEY_VARIABLE) or variable
        return Path(variable).expanduser(), Path(key).expanduser(), f"${CERTIFICATE_VARIABLE}"
    if not server.certificate:
        return None
    certificate = Path(server.certificate).expanduser()
    if not certificate.exists():
        return None  # this user has no certificate: the server's other methods apply
    key = Path(server.private_key or server.certificate).expanduser()
    return certificate, key, f"client.conf (server {server.name})"


VERIFY_VARIABLE = "KADEPLOY3_VERIFY_SERVER"


def verification_required() -> bool:
    """$KADEPLOY3_VERIFY_SERVER: the user (or the site's profile) refuses unverified servers."""
    return os.environ.get(VERIFY_VARIABLE, "").strip().lower() in ("1", "true", "yes")


def tls_context(server: ServerEntry) -> ssl.SSLContext:
    """TLS with the user's certificate if configured; the server verified when client.conf or the
    environment asks (else not, as Kadeploy3)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if server.ca_cert:
        ca_cert = Path(server.ca_cert).expanduser()
        try:
            context.load_verify_locations(cafile=str(ca_cert))
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
            raise ClientError(f"Cannot read the CA certificate {ca_cert} (client.conf ca_cert of server "
                              f"{server.name}): {reason}") from None
    elif server.verify or verification_required():
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    chosen = client_certificate(server)
    if chosen is not None:
        certificate, key, where = chosen
        try:
            context.load_cert_chain(certificate, key)
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
            raise ClientError(f"Cannot use the certificate {certificate} with the key {key} (named by {where}): "
                              f"{reason}") from None
    return context


def encode_params(params: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """Query-string pairs as Kadeploy3 expects them: lists repeat the key, booleans are `true`."""
    pairs: list[tuple[str, str]] = []
    for key, value in (params or {}).items():
        if value is None:
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        for item in values:
            if isinstance(item, bool):
                item = "true" if item else "false"
            pairs.append((key, str(item)))
    return pairs


class Connection:
    """A session with one server; `get/post/put/delete` return the decoded answer."""

    def __init__(
        self,
        server: ServerEntry,
        *,
        user: str | None = None,
        password: str | None = None,
        debug_stream: TextIO | None = None,
        timeout: float = REQUEST_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.server = server
        self.user = user or current_user()
        self.headers_prefix = server.auth_headers_prefix
        self.debug_stream = debug_stream
        hooks: dict[str, list[Any]] = {}
        if debug_stream is not None:
            hooks = {"request": [self._dump_request], "response": [self._dump_response]}
        if not server.secure and verification_required():
            raise ClientError(f"${VERIFY_VARIABLE} requires a verified server, but the {server.name} server is "
                              "configured without TLS (client.conf secure: false)")
        self._client = httpx.Client(
            base_url=server.base_url,
            verify=tls_context(server) if server.secure else False,
            timeout=timeout,
            auth=(self.user, password) if password is not None else None,
            event_hooks=hooks,
            transport=transport,
            headers={"Accept": "application/json"},
        )

    # -- life cycle ---------------------------------------------------------

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check_reachable(self, timeout: float = REACH_TIMEOUT) -> str:
        """GET /version within `timeout` s; the server version text. Unreachable → ClientError."""
        version = self.request("GET", "/version", timeout=timeout, auth=False)
        if self.headers_prefix is None:
            prefix = self.request("GET", "/auth_headers_prefix", timeout=timeout, auth=False)
            self.headers_prefix = str(prefix).strip() or DEFAULT_HEADERS_PREFIX
        return str(version).strip()

    # -- verbs ----------------------------------------------------------------

    def get(self, path: str, params: Mapping[str, Any] | None = None, **kw: Any) -> Any:
        return self.request("GET", path, params=params, **kw)

    def post(self, path: str, body: Mapping[str, Any], **kw: Any) -> Any:
        return self.request("POST", path, body=body, **kw)

    def put(self, path: str, body: Mapping[str, Any], **kw: Any) -> Any:
        return self.request("PUT", path, body=body, **kw)

    def delete(self, path: str, params: Mapping[str, Any] | None = None, **kw: Any) -> Any:
        return self.request("DELETE", path, params=params, **kw)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        auth: bool = True,
    ) -> Any:
        """Send one request; decode JSON/YAML/text answers; map errors to ClientError."""
        headers: dict[str, str] = {}
        if auth:
            headers[f"{self.headers_prefix or DEFAULT_HEADERS_PREFIX}User"] = self.user
        content = None
        if body is not None:
            content = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        extra: dict[str, Any] = {}
        if timeout is not None:
            extra["timeout"] = timeout
        try:
            response = self._client.request(
                method, path, params=encode_params(params), content=content, headers=headers, **extra
            )
        except httpx.TimeoutException:
            raise ClientError(
                f"Request timeout: cannot {method} {path} on the {self.server.name} server ({self.server.base_url})"
            ) from None
        except httpx.TransportError as exc:
            reason = _reason(exc)
            if "CERTIFICATE_VERIFY_FAILED" in reason:
                against = f"ca_cert {self.server.ca_cert}" if self.server.ca_cert else "the system's CAs"
                reason = f"its certificate does not verify against {against} ({reason})"
            raise ClientError(
                f"Unable to reach the server {self.server.name} ({self.server.base_url}): {reason}"
            ) from None
        return self._decode(method, path, response)

    # -- answers ----------------------------------------------------------------

    def _decode(self, method: str, path: str, response: httpx.Response) -> Any:
        if response.status_code == 200:
            kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
            if kind == "application/json":
                try:
                    return response.json()
                except ValueError:
                    raise ClientError(f"Invalid JSON answer from the server to {method} {path}") from None
            if kind in ("application/x-yaml", "application/yaml", "text/yaml"):
                return yaml.safe_load(response.text)
            return response.text
        raise http_error(method, path, response)

    def _dump_request(self, request: httpx.Request) -> None:
        assert self.debug_stream is not None
        lines = [f"-> {request.method} {request.url}"]
        lines += [f"-> {key}: {value}" for key, value in request.headers.items() if key.lower() != "authorization"]
        if request.content:
            lines.append("-> " + request.content.decode(errors="replace"))
        self.debug_stream.write("\n".join(lines) + "\n")
        self.debug_stream.flush()

    def _dump_response(self, response: httpx.Response) -> None:
        assert self.debug_stream is not None
        response.read()
        lines = [f"<- {response.status_code} {response.reason_phrase}"]
        lines += [f"<- {key}: {value}" for key, value in response.headers.items()]
        if response.content:
            lines.append("<- " + response.text)
        self.debug_stream.write("\n".join(lines) + "\n")
        self.debug_stream.flush()


def http_error(method: str, path: str, response: httpx.Response) -> ClientError:
    """The ClientError for a non-200 answer, with Kadeploy3's wording and exit status."""
    body = response.text.strip()
    code_header = response.headers.get("x-application-error-code")
    if response.status_code == 400 and code_header is not None:
        try:
            code = int(code_header)
        except ValueError:
            code = EXIT_GENERIC
        info = response.headers.get("x-application-error-info")
        message = _decode_info(info) if info else body
        return ServerApplicationError(code, message or body)
    if response.status_code == 404:  # common/http.rb: `error("Resource not found #{path without query}")`
        return ClientError(f"Resource not found {path.split('?')[0]}", EXIT_GENERIC)
    if response.status_code == 500:
        return ClientError(f"[Internal Server Error]\n{body}".rstrip(), EXIT_SERVER_ERROR)  # common/http.rb
    # Net::HTTPRequest#path, which http.rb prints here, keeps the query string (the 404 above drops it)
    return ClientError(f"{body}\n[HTTP Error #{response.status_code} on {method} {_path_and_query(path, response)}]"
                       .lstrip(), EXIT_HTTP_ERROR)


def _path_and_query(path: str, response: httpx.Response) -> str:
    """The request's path with its query string, as the server received it."""
    try:
        query = response.request.url.query
    except RuntimeError:  # a response built without its request
        return path
    return f"{path.split('?')[0]}?{query.decode()}" if query else path


def _decode_info(info: str) -> str:
    try:
        return base64.b64decode(info, validate=False).decode("utf-8", errors="replace").strip()
    except (binascii.Error, ValueError):
        return info


def _reason(exc: Exception) -> str:
    text = str(exc).strip()
    return text or type(exc).__name__


def open_debug_stream(fd: int = 4) -> TextIO | None:
    """Kadeploy3 writes HTTP dumps to fd 4 when the caller opened it, else to stdout."""
    try:
        os.fstat(fd)
    except OSError:
        return None
    return os.fdopen(fd, "w", closefd=False)
