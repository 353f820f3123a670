"""Helpers of the authentication tests: X.509 material and servers on real sockets.

* `Authority`: a CA made with `cryptography`, issuing server and client
  certificates, written as PEM files;
* `Kadeploy3d`: the real kadeploy3d (as the testbed's dummy daemon: the
  server's code, a runner that touches no node) on 127.0.0.1 with a
  server.conf of the test's choosing;
* `AppServer`: `create_app` served by uvicorn in a thread with the options
  kadeploy3d uses (`listen_options`), for tests that reach into the app.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kadeploy_testbed.answering import NotAnswering, wait_answering

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration" / "server"))
from configdir import write_config_dir  # noqa: E402

from tests.ports import free_port  # noqa: E402
from tests.processgroups import stop_process  # noqa: E402


class Authority:
    """A certificate authority; `issue` writes a key and a certificate signed by it."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        self.certificate = (
            x509.CertificateBuilder().subject_name(self.name).issuer_name(self.name)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256()))
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{name}.pem"
        self.path.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))

    def issue(self, common_name: str, *, days: int = 1, server: bool = False) -> tuple[Path, Path]:
        """(certificate, key) files for `common_name`; `days` < 0 makes an expired certificate."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        usage = x509.ExtendedKeyUsageOID.SERVER_AUTH if server else x509.ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=2)).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                           critical=False))
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]),
                                            critical=False)
        certificate = builder.sign(self.key, hashes.SHA256())
        stem = f"{common_name}-by-{self.path.stem}"
        cert_path, key_path = self.directory / f"{stem}.crt", self.directory / f"{stem}.key"
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return cert_path, key_path

    def pem_of(self, cert_path: Path) -> str:
        return cert_path.read_text()


class Kadeploy3d:
    """The real server in a subprocess, on 127.0.0.1:<free port>, until `stop`."""

    def __init__(self, directory: Path, *, secure: bool, server_extra: dict[str, Any]) -> None:
        self.directory = directory
        self.port = free_port()
        self.secure = secure
        self.etc = write_config_dir(directory, self.port, directory / "kadeploy.db", secure=secure,
                                    server_extra=server_extra)
        self.process: subprocess.Popen[bytes] | None = None
        self.stderr = directory / "kadeploy3d.stderr"

    @property
    def url(self) -> str:
        return f"{'https' if self.secure else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> Kadeploy3d:
        env = {**os.environ, "KADEPLOY3_CONFIG_DIR": str(self.etc), "KADEPLOY3_LOG_DIR": str(self.directory / "log"),
               "KADEPLOY3_RUN_DIR": str(self.directory / "run")}
        env.pop("FORWARDED_ALLOW_IPS", None)
        with open(self.stderr, "wb") as err:
            self.process = subprocess.Popen([sys.executable, "-m", "kadeploy_testbed.dummy", "-O", "-E"], env=env,
                                            stdout=subprocess.DEVNULL, stderr=err)
        try:
            wait_answering(f"{self.url}/version", self.process, 60, verify=False, printed=self.stderr.read_text)
        except NotAnswering:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
        self.process = None


class AppServer:
    """An ASGI app served by uvicorn in a thread, with `listen_options` of `settings`."""

    def __init__(self, app: Any, settings: Any, run_dir: Path) -> None:
        import uvicorn

        from kadeploy.server.listener import listen_options

        settings.port = free_port()
        options = listen_options(settings, run_dir)
        self.url = f"{'https' if settings.secure else 'http'}://127.0.0.1:{settings.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, **options))
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.run(self.server.serve())

    def __enter__(self) -> AppServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise AssertionError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
