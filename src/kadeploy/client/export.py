"""Export of the user's local files to the server (reference 1.6).

Client room. Files named by a plain path or `local://` (environment image,
pre/post-install archives, authorized_keys, custom-operation files, PXE
files) are served by an embedded HTTP(S) server on a random port; the server
fetches `<client>/<urlsafe-base64(absolute path)>`. Only the registered files
are served (anything else is 404), with `ETag: "ino-size-mtime"` in hex as
Kadeploy3's WEBrick does, so the server cache can tell a changed file.
`--secure` serves over HTTPS with a throw-away self-signed certificate.
"""

from __future__ import annotations

import base64
import datetime
import email.utils
import ipaddress
import os
import socket
import ssl
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from kadeploy.errors import ErrorCode, KadeployError

CHUNK = 1 << 20


def is_local_file(reference: str) -> bool:
    """True for plain paths and local:// URLs (what the client must export)."""
    scheme = urlsplit(reference).scheme.lower()
    return scheme in ("", "local")


def local_path(reference: str) -> Path:
    """Absolute path of a plain path or `local://` reference."""
    if reference.lower().startswith("local://"):
        reference = urlsplit(reference).path
    return Path(os.path.abspath(os.path.expanduser(reference)))


def encode_path(path: Path | str) -> str:
    """URL path under which a file is exported: `/` + urlsafe base64 of its absolute path."""
    return "/" + base64.urlsafe_b64encode(str(path).encode()).decode()


def etag_of(path: Path) -> str:
    """WEBrick's ETag: `"<inode>-<size>-<mtime>"` in hexadecimal."""
    st = path.stat()
    return f'"{st.st_ino:x}-{st.st_size:x}-{int(st.st_mtime):x}"'


class FileExporter:
    """A tiny HTTP(S) server offering exactly the registered files, in a daemon thread."""

    def __init__(self, *, secure: bool = False, bind: str = "0.0.0.0") -> None:
        self.secure = secure
        self._files: dict[str, Path] = {}
        self._bind = bind
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def files(self) -> list[Path]:
        return list(self._files.values())

    def add(self, reference: str) -> str:
        """Register a local file (or every file of a directory); returns its absolute path."""
        path = local_path(reference)
        if path.is_dir():
            for child in sorted(path.iterdir()):
                if child.is_file():
                    self._register(child)
            return str(path)
        if not path.is_file() or not os.access(path, os.R_OK):
            raise KadeployError(ErrorCode.INVALID_FILE, f"Cannot read file '{path}'")
        self._register(path)
        return str(path)

    def _register(self, path: Path) -> None:
        self._files[encode_path(path)] = path

    def lookup(self, url_path: str) -> Path | None:
        return self._files.get(url_path.split("?", 1)[0])

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Bind a random port and serve in a daemon thread."""
        exporter = self

        class Handler(_ExportHandler):
            owner = exporter

        self._server = ThreadingHTTPServer((self._bind, 0), Handler)
        self._server.daemon_threads = True
        if self.secure:
            self._server.socket = self._tls_context().wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, name="kadeploy-export", daemon=True)
        self._thread.start()

    def url(self, server_host: str) -> str:
        """Base URL the server must use: our address on the route towards `server_host`."""
        scheme = "https" if self.secure else "http"
        host = route_address(server_host)
        if ":" in host:
            host = f"[{host}]"
        return f"{scheme}://{host}:{self.port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def _tls_context(self) -> ssl.SSLContext:
        self._tmpdir = tempfile.TemporaryDirectory(prefix="kadeploy-export-")
        cert, key = _self_signed(Path(self._tmpdir.name))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        return context


class _ExportHandler(BaseHTTPRequestHandler):
    owner: FileExporter
    server_version = "kadeploy-client"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        """Silent: the tool's output must stay Kadeploy3's text."""

    def do_HEAD(self) -> None:  # noqa: N802 - stdlib naming
        self._serve(body=False)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        path = self.owner.lookup(self.path)
        if path is None:
            self.send_error(404, "Not exported")
            return
        try:
            st = path.stat()
            etag = etag_of(path)
        except OSError:
            self.send_error(404, "File vanished")
            return
        if self.headers.get("If-None-Match") == etag:
            self.send_response(304)
            self.send_header("ETag", etag)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(st.st_size))
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True))
        self.end_headers()
        if not body:
            return
        try:
            with path.open("rb") as stream:
                while chunk := stream.read(CHUNK):
                    self.wfile.write(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass


def route_address(server_host: str) -> str:
    """Local address of the interface that reaches `server_host` (no packet is sent)."""
    try:
        infos = socket.getaddrinfo(server_host, 25300, type=socket.SOCK_DGRAM)
    except socket.gaierror:
        return socket.gethostname()
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(address)
            local = probe.getsockname()[0]
        except OSError:
            return socket.gethostname()
    return str(local)


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A one-off certificate for `--secure` (the server does not verify it, as in Kadeploy3)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, socket.gethostname())])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(socket.gethostname()), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / "cert.pem"
    key_path = directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path
