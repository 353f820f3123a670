"""What the server needs from the configuration, as one typed object (room `server`).

`kadeploy.config` parses and validates the files; this module picks out what
kadeploy3d itself uses (bind address, TLS, database, authentication, rights,
the clusters' node lists and automata for `/info`) so that the HTTP layer and
the tests depend on one small dataclass instead of the whole configuration
model. `from_config(cfg)` is the only place that knows the config room's
attribute names.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import URL, make_url

DEFAULT_HEADERS_PREFIX = "X-Kadeploy-"
MACROSTEPS = ("SetDeploymentEnv", "BroadcastEnv", "BootNewEnv")
# Variables exported to scripts run on nodes (reference 3.7), shown by `/info`.
EXPORTED_VARS = ("KADEPLOY_CLUSTER", "KADEPLOY_DEPLOY_PART", "KADEPLOY_BLOCK_DEVICE", "KADEPLOY_DEPLOY_PART_NUM",
                 "KADEPLOY_SWAP_PART_NUM", "KADEPLOY_PROD_PART_NUM", "KADEPLOY_TMP_PART_NUM",
                 "KADEPLOY_PREPOST_EXTRACTION_DIR", "KADEPLOY_TMP_DIR", "KADEPLOY_ENV", "KADEPLOY_ENV_KERNEL",
                 "KADEPLOY_ENV_INITRD", "KADEPLOY_ENV_KERNEL_PARAMS", "KADEPLOY_ENV_HYPERVISOR",
                 "KADEPLOY_ENV_HYPERVISOR_PARAMS", "KADEPLOY_OS_KIND", "KADEPLOY_PART_TYPE", "KADEPLOY_FS_TYPE",
                 "KADEPLOY_FS_TYPE_TMP", "KADEPLOY_ENV_EXTRACTION_DIR", "KADEPLOY_VERSION")


@dataclass
class StepImplementation:
    """One implementation of a macro-step as `/info` shows it."""

    name: str
    retries: int
    timeout: int


@dataclass
class ClusterSettings:
    """A cluster: its nodes and what rights checks and `/info` need."""

    name: str
    nodes: list[str]
    prefix: str = ""
    block_device: str = "/dev/sda"
    deploy_partition: int = 3
    prod_partition: int = -1          # partitioning/partitions/prod (-1: none)
    supported_fs: list[str] = field(default_factory=lambda: ["ext2", "ext3", "ext4", "vfat"])
    automata: dict[str, list[StepImplementation]] = field(default_factory=lambda: {
        "SetDeploymentEnv": [StepImplementation("SetDeploymentEnvUntrusted", 2, 200)],
        "BroadcastEnv": [StepImplementation("BroadcastEnvKascade", 2, 300)],
        "BootNewEnv": [StepImplementation("BootNewEnvClassical", 0, 150),
                       StepImplementation("BootNewEnvHardReboot", 1, 120)]})
    console: bool = False
    addresses: dict[str, str] = field(default_factory=dict)


@dataclass
class Whitelist:
    """Source hosts allowed for an authentication method: IPs, CIDRs, hostnames, /regexps/."""

    entries: list[str] = field(default_factory=list)


@dataclass
class AuthSettings:
    """Authentication methods (reference 1.7); a method is enabled when not None."""

    headers_prefix: str = DEFAULT_HEADERS_PREFIX
    acl: Whitelist | None = None
    http_basic_dbfile: Path | None = None
    http_basic_realm: str = "Kadeploy"
    http_basic_whitelist: Whitelist | None = None
    certificate_ca: Path | None = None
    certificate_whitelist: Whitelist | None = None
    #: also accept Kadeploy3's certificate in a header (no proof of the private key): unsafe, off by default
    certificate_unsafe_header: bool = False
    ident: Whitelist | None = None
    ident_port: int = 113
    ident_timeout: float = 10.0

    @property
    def any_method(self) -> bool:
        """Kadeploy3 refuses to start without at least one method."""
        return any(m is not None for m in (self.acl, self.http_basic_dbfile, self.certificate_ca, self.ident))


@dataclass
class ServerSettings:
    """Everything kadeploy3d uses, with Kadeploy3's defaults."""

    version: str = "3.3.11.stable"
    hostname: str = field(default_factory=socket.gethostname)
    port: int = 25300
    secure: bool = True
    local_only: bool = False
    certificate: Path | None = None
    private_key: Path | None = None
    #: server.conf `security/trusted_proxies`: the only peers whose X-Forwarded-For is believed
    trusted_proxies: list[str] = field(default_factory=list)
    #: server.conf `security/public_metrics`: /metrics without authentication (else administrators only)
    public_metrics: bool = False
    #: server.conf `security/max_running_workflows_per_user` / `_per_admin`: running workflows a user
    #: (an almighty user) may have at once; 0 is no cap
    max_running_per_user: int = 32
    max_running_per_admin: int = 0
    database_url: URL | str = "sqlite:////var/lib/kadeploy3/kadeploy.db"
    auth: AuthSettings = field(default_factory=AuthSettings)
    almighty_users: list[str] = field(default_factory=lambda: ["root"])
    rights_kind: str = "db"
    autoclean_threshold: float = 360.0  # minutes
    verbosity_clients: int = 3
    pxe_method: str = "PXElinux"
    clusters: dict[str, ClusterSettings] = field(default_factory=dict)
    hooks: dict[str, str] = field(default_factory=dict)
    #: server.conf `network/vlan`: `--vlan` is refused unless both are set, as in Kadeploy3
    vlan_hostname_suffix: str = ""
    vlan_set_cmd: str = ""
    #: server.conf `logs`: deployment log file, debug file (its level is `verbosity/logs`), stats in the DB
    logfile: Path | None = None
    debugfile: Path | None = None
    debugfile_level: int = 3
    log_to_db: bool = True
    #: seconds a request may take before it is answered 500 (Kadeploy3's SERVLET_TIMEOUT); not a server.conf key
    request_timeout: float = 600.0

    @property
    def node_cluster(self) -> dict[str, str]:
        """{hostname: cluster name} over all clusters."""
        return {node: name for name, cluster in self.clusters.items() for node in cluster.nodes}


def _get(obj: Any, *path: str, default: Any = None) -> Any:
    """Follow attribute (or mapping key) names; `default` when any is missing or None."""
    for name in path:
        if obj is None:
            return default
        obj = obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)
    return default if obj is None else obj


def _whitelist(value: Any) -> Whitelist | None:
    if value is None:
        return None
    entries = _get(value, "whitelist", default=value if isinstance(value, list) else [])
    return Whitelist([str(entry) for entry in entries])


def _database_url(cfg_db: Any) -> URL:
    from kadeploy.db.database import database_url

    kind = str(_get(cfg_db, "kind", default="sqlite"))
    return database_url(kind, str(_get(cfg_db, "name", default="/var/lib/kadeploy3/kadeploy.db")),
                        host=str(_get(cfg_db, "host", default="")), login=str(_get(cfg_db, "login", default="")),
                        passwd=str(_get(cfg_db, "passwd", default="")),
                        port=_get(cfg_db, "port"))


def _automata(cluster: Any) -> dict[str, list[StepImplementation]] | None:
    automata = _get(cluster, "automata")
    if not automata:
        return None
    result: dict[str, list[StepImplementation]] = {}
    for macro in MACROSTEPS:
        impls = automata.get(macro) if isinstance(automata, dict) else getattr(automata, macro, None)
        result[macro] = [StepImplementation(name=_impl_name(macro, str(_get(i, "type", default=_get(i, "name")))),
                                            retries=int(_get(i, "retries", default=0)),
                                            timeout=int(float(_get(i, "timeout", default=0))))
                         for i in impls or []]
    return result


def _impl_name(macro: str, kind: str) -> str:
    return kind if kind.startswith(macro) else macro + kind


def from_config(cfg: Any, *, config_dir: Path | None = None) -> ServerSettings:
    """Build the settings from a `kadeploy.config.KadeployConfig`."""
    server = _get(cfg, "server")
    auth_cfg = _get(server, "authentication")
    auth = AuthSettings(
        headers_prefix=str(_get(auth_cfg, "global_", "headers_prefix")
                           or _get(auth_cfg, "global", "headers_prefix")
                           or _get(auth_cfg, "headers_prefix", default=DEFAULT_HEADERS_PREFIX)),
        acl=_whitelist(_get(auth_cfg, "acl")),
        http_basic_dbfile=_path(_get(auth_cfg, "http_basic", "dbfile"), config_dir),
        http_basic_realm=str(_get(auth_cfg, "http_basic", "realm", default="Kadeploy")),
        http_basic_whitelist=_whitelist(_get(auth_cfg, "http_basic")) if _get(auth_cfg, "http_basic", "whitelist") else None,
        certificate_ca=_path(_get(auth_cfg, "certificate", "ca_cert"), config_dir),
        certificate_whitelist=_whitelist(_get(auth_cfg, "certificate"))
        if _get(auth_cfg, "certificate", "whitelist") else None,
        certificate_unsafe_header=bool(_get(auth_cfg, "certificate", "unsafe_header", default=False)),
        ident=_whitelist(_get(auth_cfg, "ident")),
    )
    almighty = _get(server, "rights", "almighty_users", default="root")
    if isinstance(almighty, str):
        almighty = [user.strip() for user in almighty.split(",") if user.strip()]
    clusters: dict[str, ClusterSettings] = {}
    nodes_by_cluster: dict[str, list[str]] = {}
    addresses: dict[str, dict[str, str]] = {}
    for hostname, info in (_get(cfg, "nodes", default={}) or {}).items():
        cluster_name = str(_get(info, "cluster"))
        nodes_by_cluster.setdefault(cluster_name, []).append(hostname)
        addresses.setdefault(cluster_name, {})[hostname] = str(_get(info, "address", default=""))
    for name, cluster in (_get(cfg, "clusters", default={}) or {}).items():
        settings = ClusterSettings(name=name, nodes=nodes_by_cluster.get(name, []),
                                   prefix=str(_get(cluster, "prefix", default="")),
                                   addresses=addresses.get(name, {}))
        settings.block_device = str(_get(cluster, "partitioning", "block_device", default=settings.block_device))
        settings.deploy_partition = int(_get(cluster, "partitioning", "partitions", "deploy",
                                             default=settings.deploy_partition))
        settings.prod_partition = int(_get(cluster, "partitioning", "partitions", "prod",
                                           default=settings.prod_partition))
        supported = _get(cluster, "boot", "kernels", "deploy", "supported_fs")
        if isinstance(supported, str):
            supported = [fs.strip() for fs in supported.split(",") if fs.strip()]
        if supported:
            settings.supported_fs = list(supported)
        automata = _automata(cluster)
        if automata:
            settings.automata = automata
        settings.console = bool(_get(cluster, "remoteops", "console"))
        clusters[name] = settings
    certificate = _get(server, "security", "certificate")
    hooks = {key: str(value) for key, value in (_as_dict(_get(server, "hooks")) or {}).items() if value}
    return ServerSettings(
        version=str(_get(cfg, "version", default="3.3.11.stable")),
        hostname=str(_get(server, "network", "server_hostname", default=socket.gethostname())),
        port=int(_get(server, "network", "ports", "kadeploy_server", default=25300)),
        secure=bool(_get(server, "security", "secure_server", default=True)),
        local_only=bool(_get(server, "security", "local_only", default=False)),
        certificate=_path(certificate, config_dir),
        private_key=_path(_get(server, "security", "private_key", "file"), config_dir),
        trusted_proxies=[str(entry) for entry in _get(server, "security", "trusted_proxies", default=[])],
        public_metrics=bool(_get(server, "security", "public_metrics", default=False)),
        max_running_per_user=int(_get(server, "security", "max_running_workflows_per_user", default=32)),
        max_running_per_admin=int(_get(server, "security", "max_running_workflows_per_admin", default=0)),
        database_url=_database_url(_get(server, "database")),
        auth=auth, almighty_users=list(almighty),
        rights_kind=str(_get(server, "rights", "kind", default="db")),
        autoclean_threshold=float(_get(server, "autoclean_threshold", default=360)),
        verbosity_clients=int(_get(server, "verbosity", "clients", default=3)),
        pxe_method=str(_get(server, "pxe", "dhcp", "method", default="PXElinux")),
        clusters=clusters, hooks=hooks,
        vlan_hostname_suffix=str(_get(server, "network", "vlan", "hostname_suffix", default="") or ""),
        vlan_set_cmd=str(_get(server, "network", "vlan", "set_cmd", default="") or ""),
        logfile=_path(_get(server, "logs", "logfile"), config_dir),
        debugfile=_path(_get(server, "logs", "debugfile"), config_dir),
        debugfile_level=int(_get(server, "verbosity", "logs", default=3)),
        log_to_db=bool(_get(server, "logs", "database", default=True)))


def _as_dict(value: Any) -> dict[str, Any] | None:
    if value is None or isinstance(value, dict):
        return value
    dump = getattr(value, "model_dump", None)
    return dump() if dump else dict(vars(value))


def _path(value: Any, config_dir: Path | None) -> Path | None:
    if not value:
        return None
    path = Path(str(value))
    if not path.is_absolute() and config_dir is not None:
        path = config_dir / path
    return path


def parse_database_url(url: str) -> URL:
    """Parse a URL given directly (tests, `--database`)."""
    return make_url(url)
