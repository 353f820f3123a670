"""`server.conf`: the site-wide settings of kadeploy3d (reference §3.1).

Attribute names are the YAML keys; defaults are Kadeploy3's code defaults
(`server/config.rb`), except where our extensions say otherwise:

* `database/kind` is `sqlite` by default (Kadeploy3: `mysql` only); for
  sqlite, `database/name` is the database file, relative to the configuration
  directory, default `kadeploy.db` (so `<config_dir>/kadeploy.db`).
* `pxe/*/profiles/filename` also accepts `mac` (`01-aa-bb-...`, PXELinux style).
* `network/ports/probe_interval`: seconds between reboot-detection probes (5).
* `windows/bmc/{sessions,interval,retries,backoff}`: per-BMC pacing of power
  commands and retries of refused BMC sessions (1, 1.0 s, 4, 1.0 s).

Paths of files the server reads (`ssh_private_key`, certificates, htpasswd)
are resolved against the configuration directory when relative.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import socket
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from kadeploy.config.fetch import FetchConfig
from kadeploy.config.validation import ConfigModel, resolve_path, split_list
from kadeploy.templates import check_template
from kadeploy.vocabulary import REGISTRIES, Kind

DEFAULT_CONNECTOR = (
    "ssh -A -l root -q -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
    "-o PreferredAuthentications=publickey -o BatchMode=yes"
)

ProfileFilename = Literal["ip", "ip_hex", "hostname", "hostname_short", "mac"]


class DatabaseConfig(ConfigModel):
    """`database`: where environments, rights, statistics and node states live."""

    kind: Literal["sqlite", "mysql", "postgresql"] = "sqlite"
    host: str = "localhost"
    port: int | None = None
    name: str | None = None
    login: str | None = None
    passwd: str = ""

    @model_validator(mode="after")
    def _server_databases_need_credentials(self) -> DatabaseConfig:
        if self.kind != "sqlite":
            for key in ("name", "login"):
                if getattr(self, key) is None:
                    raise ValueError(f"{key}: mandatory field is missing (database kind {self.kind})")
        return self

    @model_validator(mode="after")
    def _resolve_sqlite_file(self, info: ValidationInfo) -> DatabaseConfig:
        if self.kind == "sqlite" and self.name != ":memory:":
            self.name = str(resolve_path(self.name or "kadeploy.db", info))
        return self

    def sqlalchemy_url(self) -> str:
        """A SQLAlchemy URL (pymysql for MariaDB/MySQL, psycopg2 for PostgreSQL)."""
        from sqlalchemy.engine import URL

        if self.kind == "sqlite":
            return f"sqlite:///{self.name}"
        driver = "mysql+pymysql" if self.kind == "mysql" else "postgresql+psycopg2"
        url = URL.create(driver, username=self.login, password=self.passwd or None,
                         host=self.host, port=self.port, database=self.name)
        return url.render_as_string(hide_password=False)


class RightsConfig(ConfigModel):
    """`rights`: how user rights on nodes are checked, and who is almighty."""

    kind: Literal["db", "dummy"] = "db"
    almighty_users: list[str] = Field(default_factory=lambda: ["root"])
    purge_deployment_timer: int = Field(default=900, ge=0)

    _split_users = field_validator("almighty_users", mode="before")(split_list)


def _check_whitelist_entry(entry: str) -> str:
    """An IP, a CIDR, a hostname or a `/regexp/`; the auth room interprets them."""
    if len(entry) >= 2 and entry.startswith("/") and entry.endswith("/"):
        try:
            re.compile(entry[1:-1])
        except re.error as exc:
            raise ValueError(f"invalid regexp {entry}: {exc}") from None
    elif "/" in entry:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ValueError(f"invalid network {entry!r} (expected an address/prefix like 10.0.0.0/8)") from None
    elif not entry:
        raise ValueError("empty whitelist entry")
    return entry


class _Whitelisted(ConfigModel):
    whitelist: list[str] = Field(default_factory=list)

    @field_validator("whitelist")
    @classmethod
    def _entries(cls, value: list[str]) -> list[str]:
        return [_check_whitelist_entry(entry) for entry in value]


class ACLAuthConfig(_Whitelisted):
    """`authentication/acl`: trust the user header from whitelisted hosts."""

    whitelist: list[str]  # mandatory, as in Kadeploy3


class KeyFileConfig(ConfigModel):
    """A key file and its algorithm (`private_key`, `ca_public_key`)."""

    algorithm: Literal["RSA", "DSA", "EC"]
    file: str

    @field_validator("file")
    @classmethod
    def _resolve(cls, value: str, info: ValidationInfo) -> str:
        return str(resolve_path(value, info))


class CertificateAuthConfig(_Whitelisted):
    """`authentication/certificate`: X.509 client certificates signed by this CA.

    The certificate is checked in the TLS handshake, where the client proves it
    holds the private key. `unsafe_header: true` also accepts Kadeploy3's
    certificate sent in an HTTP header, which proves nothing (anyone holding a
    copy of the certificate is its owner): for old scripts only.
    """

    ca_cert: str | None = None
    ca_public_key: KeyFileConfig | None = None
    unsafe_header: bool = False

    @field_validator("ca_cert")
    @classmethod
    def _resolve(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else str(resolve_path(value, info))

    @model_validator(mode="after")
    def _needs_a_ca(self) -> CertificateAuthConfig:
        if self.ca_cert is None and self.ca_public_key is None:
            raise ValueError("at least a certificate (ca_cert) or a public key (ca_public_key) has to be specified")
        return self


class HTTPBasicAuthConfig(_Whitelisted):
    """`authentication/http_basic`: users and bcrypt hashes in an htpasswd file."""

    dbfile: str
    realm: str | None = None  # None: the server URL, decided by the server room

    @field_validator("dbfile")
    @classmethod
    def _resolve(cls, value: str, info: ValidationInfo) -> str:
        return str(resolve_path(value, info))


class IdentAuthConfig(_Whitelisted):
    """`authentication/ident`: RFC 1413 lookups on whitelisted hosts."""


class GlobalAuthConfig(ConfigModel):
    headers_prefix: str = "X-Kadeploy-"


class AuthenticationConfig(ConfigModel):
    """`authentication`: at least one method must be configured (as in Kadeploy3)."""

    global_: GlobalAuthConfig = Field(default_factory=GlobalAuthConfig, alias="global")
    acl: ACLAuthConfig | None = None
    certificate: CertificateAuthConfig | None = None
    http_basic: HTTPBasicAuthConfig | None = None
    ident: IdentAuthConfig | None = None

    @property
    def headers_prefix(self) -> str:
        return self.global_.headers_prefix

    @property
    def methods(self) -> list[str]:
        """Names of the configured methods, in the order the server tries them."""
        return [name for name in ("acl", "http_basic", "certificate", "ident") if getattr(self, name) is not None]

    @model_validator(mode="after")
    def _at_least_one_method(self) -> AuthenticationConfig:
        if not self.methods:
            raise ValueError("you must set at least one authentication method (acl, certificate, http_basic, ident)")
        return self


def _check_proxy_entry(entry: str) -> str:
    """A trusted proxy is an address or a network: names and regexps could be spoofed."""
    try:
        ipaddress.ip_network(entry.strip(), strict=False)
    except ValueError:
        raise ValueError(f"invalid proxy {entry!r} (expected an address or an address/prefix)") from None
    return entry.strip()


class SecurityConfig(ConfigModel):
    """`security`: TLS of the API and of the clients' file servers.

    `trusted_proxies` (our extension, empty by default): the reverse proxies
    whose `X-Forwarded-For` names the client; from any other peer the header
    is ignored, so that a local account cannot pose as a whitelisted host.
    `public_metrics` (ours, off): `/metrics` answers without authentication
    (for a Prometheus scraper); off, it is for the administrators only.
    `max_running_workflows_per_user` (ours, 32; 0: no cap): a user's running
    deployments, reboots and power operations together; beyond, a new one is
    refused (error 15, naming the cap) so that a flood of requests cannot start
    unbounded work. `max_running_workflows_per_admin` (ours, 0: no cap) is the
    almighty users' own cap.
    """

    secure_server: bool = True
    local_only: bool = False
    certificate: str | None = None  # None: a self-signed certificate is generated
    private_key: KeyFileConfig | None = None
    fetch: FetchConfig = Field(default_factory=FetchConfig)  # our extension: where user URLs may be fetched from
    trusted_proxies: list[str] = Field(default_factory=list)
    public_metrics: bool = False
    max_running_workflows_per_user: int = Field(default=32, ge=0, le=1_000_000)
    max_running_workflows_per_admin: int = Field(default=0, ge=0, le=1_000_000)

    unsupported_keys = {"force_secure_client": "the clients' file servers are not made to use TLS"}

    @field_validator("certificate")
    @classmethod
    def _resolve(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else str(resolve_path(value, info))

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: list[str]) -> list[str]:
        return [_check_proxy_entry(str(entry)) for entry in value]

    @model_validator(mode="after")
    def _certificate_needs_key(self) -> SecurityConfig:
        if self.certificate is not None and self.private_key is None:
            raise ValueError("private_key: you have to specify the private key associated with the x509 certificate")
        return self


class LogsConfig(ConfigModel):
    logfile: str | None = None
    database: bool = True
    debugfile: str | None = None


class VerbosityConfig(ConfigModel):
    logs: int = Field(default=3, ge=0, le=4)
    clients: int = Field(default=3, ge=0, le=4)


class CacheConfig(ConfigModel):
    """`cache`: the server-side file cache (`size` in MB is mandatory)."""

    directory: str = "/tmp"
    size: int = Field(ge=0)
    disabled: bool = False

    unsupported_keys = {"concurrency_level": "fetches are not limited per cache"}


class PortsConfig(ConfigModel):
    kadeploy_server: int = Field(default=25300, ge=1, le=65535)
    ssh: int = Field(default=22, ge=1, le=65535)
    test_deploy_env: int = Field(default=25300, ge=1, le=65535)
    probe_interval: float = Field(default=5.0, gt=0)  # our extension


class VlanConfig(ConfigModel):
    hostname_suffix: str = ""
    set_cmd: str = ""

    @field_validator("set_cmd")
    @classmethod
    def _quoting_holds(cls, value: str) -> str:
        return check_template(value, "network/vlan/set_cmd")


class NetworkConfig(ConfigModel):
    unsupported_keys = {"tcp_buffer_size": "socket buffers are sized by the broadcast relays themselves"}

    server_hostname: str = Field(default_factory=socket.gethostname)
    ports: PortsConfig = Field(default_factory=PortsConfig)
    vlan: VlanConfig = Field(default_factory=VlanConfig)


class RebootWindowConfig(ConfigModel):
    size: int = Field(default=50, ge=1)
    sleep_time: int = Field(default=10, ge=0)


class CheckWindowConfig(ConfigModel):
    size: int = Field(default=50, ge=1)


class BMCWindowConfig(ConfigModel):
    """`windows/bmc` (our extension): how power commands are paced per BMC.

    `sessions` commands at most run at once against one BMC, `interval` seconds
    apart (end of one to start of the next); a command whose BMC session was
    refused (ipmitool: "Unable to establish IPMI v2 / RMCP+ session",
    "insufficient resources for session") runs again up to `retries` times,
    after `backoff` seconds doubled at each retry (jittered, at most 16 s).
    """

    sessions: int = Field(default=1, ge=1)
    interval: float = Field(default=1.0, ge=0)
    retries: int = Field(default=4, ge=0)
    backoff: float = Field(default=1.0, ge=0)


class WindowsConfig(ConfigModel):
    reboot: RebootWindowConfig = Field(default_factory=RebootWindowConfig)
    check: CheckWindowConfig = Field(default_factory=CheckWindowConfig)
    bmc: BMCWindowConfig = Field(default_factory=BMCWindowConfig)


class DeploymentDirsConfig(ConfigModel):
    extraction_dir: str = "/mnt/dest"
    rambin_dir: str = "/rambin"
    tarball_dir: str = "/tmp"


class EnvironmentsConfig(ConfigModel):
    deployment: DeploymentDirsConfig = Field(default_factory=DeploymentDirsConfig)
    max_preinstall_size: int = Field(default=20, ge=0)  # MB
    max_postinstall_size: int = Field(default=20, ge=0)  # MB
    # Our extension: directories whose files users may name as server:///path
    # (Kadeploy3 let them read anything the daemon could). Relative to the
    # config directory; empty means the config directory's `envs` folder only.
    server_dirs: list[str] = Field(default_factory=list)

    @field_validator("server_dirs")
    @classmethod
    def _resolve_server_dirs(cls, value: list[str], info: ValidationInfo) -> list[str]:
        return [str(resolve_path(path, info)) for path in value]


class PXEExportConfig(ConfigModel):
    kind: Literal["tftp", "http", "ftp"] = "tftp"
    server: str = "LOCAL_IP"  # Kadeploy3's placeholder: the server's address


class PXEProfilesConfig(ConfigModel):
    directory: str = "pxelinux.cfg"
    filename: ProfileFilename = "ip_hex"


class PXEUserfilesConfig(ConfigModel):
    directory: str = "userfiles"
    max_size: int = Field(default=200, ge=0)  # MB

    unsupported_keys = {"concurrency_level": "user PXE files are not fetched with a concurrency limit"}


class PXEConfig(ConfigModel):
    """One NBP setting (`pxe/dhcp`, `pxe/localboot` or `pxe/networkboot`).

    `binary` is the NBP file a chain profile loads (only for localboot and
    networkboot); `userfiles` only matters for `dhcp`.
    """

    method: str = "PXElinux"
    repository: str
    binary: str | None = None
    export: PXEExportConfig = Field(default_factory=PXEExportConfig)
    profiles: PXEProfilesConfig = Field(default_factory=PXEProfilesConfig)
    userfiles: PXEUserfilesConfig = Field(default_factory=PXEUserfilesConfig)

    @field_validator("method")
    @classmethod
    def _provided_method(cls, value: str) -> str:
        return REGISTRIES[Kind.PXE_METHOD].check(value)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep merge of two raw YAML mappings; `override` wins."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class PXESettings(ConfigModel):
    """`pxe`: `localboot` and `networkboot` default to (and inherit keys from) `dhcp`."""

    dhcp: PXEConfig
    localboot: PXEConfig
    networkboot: PXEConfig

    @model_validator(mode="before")
    @classmethod
    def _inherit_from_dhcp(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("dhcp"), dict):
            return data
        # Only known keys are inherited, so that an unknown key is reported once.
        known = set(PXEConfig.model_fields) - {"userfiles"}
        inherited = {key: value for key, value in data["dhcp"].items() if key in known}
        data = dict(data)
        for name in ("localboot", "networkboot"):
            own = data.get(name)
            if own is None:
                data[name] = dict(inherited)
            elif isinstance(own, dict):
                data[name] = _merge(inherited, own)
        return data


class HooksConfig(ConfigModel):
    """`hooks`: a command run at the end of each operation (WORKFLOW_ID replaced), checked at load.

    As Kadeploy3's config.rb (`:type => 'file', :command => true, :readable, :executable`): the
    command's first word, looked up on PATH when it is not absolute (a word PATH does not know is
    left to the shell, unchecked), must be an existing, regular, readable and executable file, so a
    hook that could never run stops the daemon and --check-config instead of failing after each
    operation.
    """

    end_of_deployment: str | None = None
    end_of_reboot: str | None = None
    end_of_power: str | None = None

    @field_validator("end_of_deployment", "end_of_reboot", "end_of_power")
    @classmethod
    def _runnable(cls, value: str | None) -> str | None:
        if value:
            check_template(value, "hooks")
            check_command_file(value)
        return value


def check_command_file(command: str) -> None:
    """configparser.rb `customcheck_file` with `:command`, `:readable`, `:executable` (its words)."""
    words = command.split()
    if not words:
        return
    program = words[0]
    if not os.path.isabs(program):
        found = shutil.which(program)
        if found is None:
            return
        program = found
    if not os.path.exists(program):
        raise ValueError(f"The file '{program}' does not exist")
    if not os.path.isfile(program):
        raise ValueError(f"The file '{program}' is not a regular file")
    if not os.access(program, os.R_OK):
        raise ValueError(f"The file '{program}' is not readable")
    if not os.access(program, os.X_OK):
        raise ValueError(f"The file '{program}' is not executable")


class TaktukConfig(ConfigModel):
    """`external/taktuk`: the connector (BroadcastEnvCustom's `TAKTUK_CONNECTOR`) and the executor's tree.

    Commands run through our own executor (remote/), whose tree mode follows
    TakTuk's design and reads TakTuk's keys with Kadeploy3's meaning and defaults:
    `tree_arity` bounds the server's first-level connections and each relay's
    children (0, Kadeploy3's "dynamic", is our default arity), `auto_propagate`
    sends the relay agent over the SSH channel (false: nothing is sent to the
    nodes, so every command runs flat from the server), `outputs_size` is the
    stdout and the stderr kept per node and command (in both modes).
    """

    connector: str = "DEFAULT_CONNECTOR"
    tree_arity: int = Field(default=0, ge=0, le=1024)
    auto_propagate: bool = True
    outputs_size: int = Field(default=20000, ge=1, le=16 * 1024 * 1024)


class MkfsOptions(ConfigModel):
    fstype: str
    args: str


class ExternalConfig(ConfigModel):
    unsupported_keys = {
        "bittorrent": ("BroadcastEnvBittorrent starts its own tracker and seed on the server's address towards the "
                       "nodes and bounds the download by the macro-step's timeout (tracker_ip, download_timeout unused)"),
        "kascade": "BroadcastEnvKascade runs the built-in relay, not an external kascade binary",
        "kastafior": "BroadcastEnvKastafior runs the built-in relay, not an external kastafior binary",
    }

    default_connector: str = DEFAULT_CONNECTOR
    taktuk: TaktukConfig = Field(default_factory=TaktukConfig)
    mkfs: list[MkfsOptions] = Field(default_factory=list)
    tar: str = ""

    def mkfs_args(self, fstype: str) -> str:
        """Extra mkfs arguments configured for a filesystem type ("" if none)."""
        for options in self.mkfs:
            if options.fstype == fstype:
                return options.args
        return ""

    @property
    def taktuk_connector(self) -> str:
        """The connector with `DEFAULT_CONNECTOR` substituted."""
        return self.taktuk.connector.replace("DEFAULT_CONNECTOR", self.default_connector)


class ServerConfig(ConfigModel):
    """The whole of `server.conf`."""

    # Validated even when absent: the sqlite file is relative to the config dir.
    database: DatabaseConfig = Field(default_factory=dict, validate_default=True)  # type: ignore[arg-type]
    rights: RightsConfig = Field(default_factory=RightsConfig)
    authentication: AuthenticationConfig
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    ssh_private_key: str = Field(default="keys/id_deploy", validate_default=True)
    logs: LogsConfig = Field(default_factory=LogsConfig)
    verbosity: VerbosityConfig = Field(default_factory=VerbosityConfig)
    cache: CacheConfig
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    windows: WindowsConfig = Field(default_factory=WindowsConfig)
    environments: EnvironmentsConfig = Field(default_factory=EnvironmentsConfig)
    pxe: PXESettings
    hooks: HooksConfig = Field(default_factory=HooksConfig)
    autoclean_threshold: int = 360  # minutes
    external: ExternalConfig = Field(default_factory=ExternalConfig)

    @field_validator("ssh_private_key")
    @classmethod
    def _resolve_key(cls, value: str, info: ValidationInfo) -> str:
        # Kadeploy3's default is <config dir>/keys/id_deploy (/etc/kadeploy3/keys/id_deploy).
        return str(resolve_path(value, info))

    @model_validator(mode="after")
    def _certificates_in_the_handshake(self) -> ServerConfig:
        """Client certificates are verified by TLS: they need TLS and the CA's certificate."""
        certificate = self.authentication.certificate
        if certificate is None:
            return self
        if certificate.ca_cert is None:
            raise ValueError("authentication/certificate/ca_cert: client certificates are verified against the "
                             "CA's certificate; ca_public_key alone is not enough")
        if not certificate.unsafe_header and not self.security.secure_server:
            raise ValueError("authentication/certificate: client certificates are checked in the TLS handshake, "
                             "which needs security/secure_server: true")
        return self
