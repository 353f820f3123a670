"""client.conf: the list of Kadeploy servers a user's tools may talk to.

Client room. Reference 3.5: YAML with `default` and `servers` (name,
hostname, port, secure, auth_headers_prefix; and our `certificate` and
`private_key`, the user's X.509 certificate and key presented in the TLS
handshake, `~` meaning the user's home, relative paths the config dir; and
our `ca_cert`, the CA the server's certificate must be signed by, and
`verify`, to verify it against the system's CAs when there is no `ca_cert`). Found in
`$KADEPLOY3_CONFIG_DIR/client.conf`, else `/etc/kadeploy3/client.conf` (the
legacy name `client_conf.yml` is still read). Imports only `kadeploy.errors`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kadeploy.errors import ConfigError

DEFAULT_CONFIG_DIR = Path("/etc/kadeploy3")
DEFAULT_PORT = 25300


@dataclass(frozen=True)
class ServerEntry:
    """One server of client.conf; `auth_headers_prefix` None means "ask the server"."""

    name: str
    hostname: str
    port: int = DEFAULT_PORT
    secure: bool = True
    auth_headers_prefix: str | None = None
    #: the user's certificate and key for the TLS handshake (`~` not yet expanded: it is each user's home)
    certificate: str | None = None
    private_key: str | None = None
    #: the server's certificate is verified (its name and its CA): against `ca_cert` if given, else the system's
    #: CAs when `verify` (Kadeploy3's clients never verify: both off by default, as there)
    ca_cert: str | None = None
    verify: bool = False

    @property
    def base_url(self) -> str:
        scheme = "https" if self.secure else "http"
        return f"{scheme}://{self.hostname}:{self.port}"


@dataclass(frozen=True)
class ClientConfig:
    """The parsed client.conf: servers in file order and the default one's name."""

    servers: list[ServerEntry]
    default: str
    source: Path = field(default=Path("client.conf"))

    def server(self, name: str | None = None) -> ServerEntry:
        """The server called `name` (or the default one); unknown names are a ConfigError."""
        wanted = name or self.default
        for entry in self.servers:
            if entry.name == wanted:
                return entry
        known = ", ".join(entry.name for entry in self.servers)
        raise ConfigError(f"The {wanted} server is not defined in the configuration: {known} values are allowed")


def config_dir() -> Path:
    """Where client.conf lives: `$KADEPLOY3_CONFIG_DIR` wins over /etc/kadeploy3."""
    return Path(os.environ.get("KADEPLOY3_CONFIG_DIR") or DEFAULT_CONFIG_DIR)


def find_client_config() -> Path:
    """Path of client.conf (or the legacy client_conf.yml when only that exists)."""
    directory = config_dir()
    path = directory / "client.conf"
    legacy = directory / "client_conf.yml"
    if not path.exists() and legacy.exists():
        return legacy
    return path


def load_client_config(path: Path | None = None) -> ClientConfig:
    """Read and validate client.conf; every mistake names the file and the key."""
    path = path or find_client_config()
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"Error({path}) File not found '{path}'") from None
    except OSError as exc:
        raise ConfigError(f"Error({path}) cannot read the file: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError(f"Error({path}) Invalid YAML file '{path}'") from None
    return parse_client_config(data, path)


def parse_client_config(data: Any, path: Path = Path("client.conf")) -> ClientConfig:
    """Validate the YAML document of a client.conf."""
    if not isinstance(data, dict):
        raise ConfigError(f"Error({path}) the file must be a YAML mapping with 'servers' and 'default'")
    servers_data = data.get("servers")
    if not isinstance(servers_data, list) or not servers_data:
        raise ConfigError(f"Error({path}) No server specified in the configuration file (key 'servers')")
    servers = [_parse_server(item, index, path) for index, item in enumerate(servers_data)]
    names = [entry.name for entry in servers]
    default = data.get("default")
    if default is None:
        default = names[0]
    if not isinstance(default, str) or default not in names:
        raise ConfigError(f"Error({path}) [default] must be one of: {', '.join(names)} (got {default!r})")
    return ClientConfig(servers=servers, default=default, source=path)


def _parse_server(item: Any, index: int, path: Path) -> ServerEntry:
    where = f"Error({path}) [servers/{index}]"
    if not isinstance(item, dict):
        raise ConfigError(f"{where} must be a mapping with name, hostname and port")
    name = item.get("name")
    hostname = item.get("hostname")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}/name: a non-empty string is expected")
    if not isinstance(hostname, str) or not hostname:
        raise ConfigError(f"{where}/hostname: a non-empty string is expected")
    port = item.get("port", DEFAULT_PORT)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigError(f"{where}/port: an integer between 1 and 65535 is expected (got {port!r})")
    secure = item.get("secure", True)
    if not isinstance(secure, bool):
        raise ConfigError(f"{where}/secure: true or false is expected (got {secure!r})")
    prefix = item.get("auth_headers_prefix") or None
    if prefix is not None and not isinstance(prefix, str):
        raise ConfigError(f"{where}/auth_headers_prefix: a string is expected")
    verify = item.get("verify", False)
    if not isinstance(verify, bool):
        raise ConfigError(f"{where}/verify: true or false is expected (got {verify!r})")
    files: dict[str, str | None] = {}
    for key in ("certificate", "private_key", "ca_cert"):
        value = item.get(key) or None
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{where}/{key}: a file path is expected (got {value!r})")
        if value is not None and not value.startswith("~") and not Path(value).is_absolute():
            value = str(path.parent / value)
        files[key] = value
    if files["private_key"] and not files["certificate"]:
        raise ConfigError(f"{where}/private_key: given without certificate")
    return ServerEntry(name=name, hostname=hostname, port=port, secure=secure, auth_headers_prefix=prefix,
                       certificate=files["certificate"], private_key=files["private_key"],
                       ca_cert=files["ca_cert"], verify=verify)
