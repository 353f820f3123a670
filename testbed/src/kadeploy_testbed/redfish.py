"""Testbed Redfish service: sushy-tools' emulator serving every node's system, over the nodes' power.

Room: testbed. Imports sushy-tools (the OpenStack Redfish emulator), werkzeug,
cryptography and `bmc` (for the `PowerControl` protocol).

Why: Kadeploy's `redfish` power driver must be shown against a real Redfish
implementation, not a stub written next to its test. sushy-tools is what
OpenStack Ironic tests its Redfish driver against; its emulator (a Flask
application) takes a pluggable "systems driver" for the machines behind it
(libvirt, Nova, a fake in-memory one). `TestbedSystems` is such a driver whose
systems are the testbed's nodes and whose power actions call the same
`PowerControl` objects (the node supervisors) as the IPMI BMCs of `bmc.py`:
a Redfish `ForceRestart` really reboots the node, and `ipmitool chassis power
status` sees what Redfish did, and the other way round.

One emulator serves every node (`/redfish/v1/Systems/<node short name>`),
inside the testbed daemon, on `SERVER_IP:REDFISH_PORT` (layout) over HTTPS with a
certificate of its own (`<dir>/etc/keys/redfish.crt`, configdir's
`redfish_tls_paths`, which clients pass as their CA) and HTTP basic authentication (sushy-tools' bcrypt user file, the
BMCs' user and password). werkzeug serves it in one thread, each request in a
thread of its own; the `PowerControl` methods are thread-safe, as for the
IPMI BMCs.

Reset types are mapped to what the node can really do: `On`/`ForceOn` power
on, `ForceOff` off, `ForceRestart` a reset, `PowerCycle` a cycle. A testbed
node has no ACPI to ask for a graceful shutdown or restart and no NMI, so
`GracefulShutdown`, `GracefulRestart`, `Nmi` and `PushPowerButton` are refused
with HTTP 400 naming them: nothing is reported done that was not done.

Public API::

    class TestbedSystems(AbstractSystemsDriver)    # the sushy-tools systems driver
    @dataclass RedfishSpec(address, port, systems: dict[name, PowerControl], user, password,
                           cert: Path | None, key: Path | None, auth_dir: Path)
    start_redfish(spec) -> RedfishService          # serving in a thread when it returns
    class RedfishService: url, system_url(name), stop()
    ensure_certificate(cert, key, address, names) -> None   # self-signed, kept if present
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import ssl
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
from sushy_tools import error as sushy_error
from sushy_tools.emulator import main as sushy_main
from sushy_tools.emulator.resources.systems.base import AbstractSystemsDriver
from werkzeug.serving import BaseWSGIServer, make_server

from kadeploy.errors import ErrorCode, KadeployError
from kadeploy_testbed.bmc import PowerControl
from kadeploy_testbed.layout import REDFISH_PORT

log = logging.getLogger("kadeploy_testbed.redfish")

JOIN_TIMEOUT_SECONDS = 5.0
# namespace of the systems' UUIDs: stable across daemon restarts, distinct per node name
_UUID_NAMESPACE = uuid.UUID("5b0e3c52-43a4-4cf0-9f0e-6c1f4e0d7a11")

#: Redfish ResetType -> the PowerControl method that really does it
RESET_ACTIONS: dict[str, str] = {
    "On": "power_on",
    "ForceOn": "power_on",
    "ForceOff": "power_off",
    "ForceRestart": "power_reset",
    "PowerCycle": "power_cycle",
}
#: ResetTypes of the Redfish schema a testbed node cannot perform, and why
REFUSED_RESETS: dict[str, str] = {
    "GracefulShutdown": "a testbed node has no ACPI power button to ask its system to shut down",
    "GracefulRestart": "a testbed node has no ACPI power button to ask its system to restart",
    "Nmi": "a testbed node has no NMI",
    "PushPowerButton": "a testbed node has no power button",
}


class TestbedSystems(AbstractSystemsDriver):
    """sushy-tools systems driver: the testbed's nodes, powered through their `PowerControl`."""

    __test__ = False  # not a pytest test class despite the name
    _controls: dict[str, PowerControl] = {}

    @classmethod
    def initialize(cls, config: Any, logger: Any, *args: Any, **kwargs: Any) -> type[TestbedSystems]:
        """sushy-tools' driver protocol: a class configured for one application."""
        controls: Mapping[str, PowerControl] = args[0] if args else kwargs["controls"]
        cls._config = config
        cls._logger = logger
        cls._controls = dict(controls)
        return cls

    def _name(self, identity: str) -> str:
        if identity in self._controls:
            return identity
        for name in self._controls:  # a system may also be addressed by its UUID
            if str(uuid.uuid5(_UUID_NAMESPACE, name)) == identity:
                raise sushy_error.AliasAccessError(name)
        raise sushy_error.NotFound(f"no testbed system {identity!r}")

    @property
    def driver(self) -> str:
        return "<kadeploy-testbed>"

    @property
    def systems(self) -> list[str]:
        return list(self._controls)

    def uuid(self, identity: str) -> str:
        return str(uuid.uuid5(_UUID_NAMESPACE, self._name(identity)))

    def name(self, identity: str) -> str:
        return self._name(identity)

    def get_power_state(self, identity: str) -> str:
        return "On" if self._controls[self._name(identity)].power_state() else "Off"

    def set_power_state(self, identity: str, state: str) -> None:
        control = self._controls[self._name(identity)]
        if state in REFUSED_RESETS:
            raise sushy_error.BadRequest(f"ResetType {state} is not performed here: {REFUSED_RESETS[state]}")
        method = RESET_ACTIONS.get(state)
        if method is None:
            raise sushy_error.BadRequest(f"unknown ResetType {state!r}; this system takes "
                                         f"{', '.join(RESET_ACTIONS)}")
        try:
            getattr(control, method)()
        except Exception as exc:  # the supervisor failed: the client must see an error, not a 204
            log.warning("Redfish %s on %s failed: %s", state, identity, exc)
            raise sushy_error.FishyError(f"{state} failed on {identity}: {exc}") from None

    def get_boot_device(self, identity: str) -> str:
        # the nodes always boot from the network first (PXE), the profile decides the rest
        self._name(identity)
        return "Pxe"

    def set_boot_device(self, identity: str, boot_source: str) -> None:
        raise sushy_error.NotSupportedError("the testbed nodes' boot order is fixed (PXE first)")


class _TestbedApplication(sushy_main.Application):
    """sushy-tools' application whose systems are the testbed's (its other resources as shipped)."""

    @property
    def systems(self) -> TestbedSystems:
        return self.config["KADEPLOY_TESTBED_SYSTEMS"]


@dataclass
class RedfishSpec:
    """Where the emulator listens, who may use it, and the nodes it powers."""

    address: str
    systems: Mapping[str, PowerControl]
    auth_dir: Path
    port: int = REDFISH_PORT
    user: str = "admin"
    password: str = "testbed"
    cert: Path | None = None
    key: Path | None = None


class RedfishService:
    """A running emulator: its werkzeug server and the thread serving it."""

    def __init__(self, server: BaseWSGIServer, thread: threading.Thread, scheme: str) -> None:
        self._server = server
        self._thread = thread
        self.url = f"{scheme}://{server.host}:{server.port}"

    def system_url(self, name: str) -> str:
        return f"{self.url}/redfish/v1/Systems/{name}"

    def stop(self) -> None:
        """Stop serving and close the socket; idempotent."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(JOIN_TIMEOUT_SECONDS)
        self._server.server_close()


def write_auth_file(directory: Path, user: str, password: str) -> Path:
    """sushy-tools' user file (htpasswd lines, bcrypt only), readable by root alone."""
    if ":" in user or "\n" in user or not user:
        raise KadeployError(ErrorCode.INVALID_OPTION, f"Redfish user {user!r}: must be non-empty, without ':'")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "redfish.htpasswd"
    digest = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(f"{user}:{digest}\n")
    return path


def ensure_certificate(cert: Path, key: Path, address: str, names: Sequence[str] = ()) -> None:
    """A self-signed certificate for `address` (and DNS `names`), kept if both files exist.

    Self-signed on purpose: clients trust it by naming the file as their CA,
    as a site does with its BMCs' certificates.
    """
    if cert.exists() and key.exists():
        return
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"kadeploy-testbed redfish {address}")])
    now = datetime.datetime.now(datetime.timezone.utc)
    alt: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(address))]
    alt += [x509.DNSName(name) for name in names]
    certificate = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(private.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    cert.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def start_redfish(spec: RedfishSpec) -> RedfishService:
    """Configure sushy-tools' application for `spec` and serve it in a thread.

    sushy-tools keeps one application per process (a module global), so one
    service per process: a second call reconfigures the same application.
    """
    app = sushy_main.app
    app.__class__ = _TestbedApplication
    auth_file = write_auth_file(spec.auth_dir, spec.user, spec.password)
    app.configure(extra_config={
        "SUSHY_EMULATOR_AUTH_FILE": str(auth_file),
        "KADEPLOY_TESTBED_SYSTEMS": TestbedSystems.initialize(app.config, app.logger, spec.systems)(),
        # no boot-image or virtual-media emulation behind these systems
        "SUSHY_EMULATOR_FEATURE_SET": "minimum",
    })
    if isinstance(app.wsgi_app, sushy_main.RedfishAuthMiddleware):  # configured before in this process
        app.wsgi_app.auth_file = str(auth_file)
    context = None
    if spec.cert is not None and spec.key is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(spec.cert), str(spec.key))
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    try:
        server = make_server(spec.address, spec.port, app, threaded=True, ssl_context=context)
    except OSError as exc:
        raise KadeployError(ErrorCode.EXECUTE_ERROR,
                            f"Redfish service on {spec.address}:{spec.port}: {exc.strerror or exc}") from None
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5},
                              name="testbed-redfish", daemon=True)
    thread.start()
    return RedfishService(server, thread, "https" if context is not None else "http")
