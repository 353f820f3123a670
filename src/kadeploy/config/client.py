"""`client.conf`: the servers a client may talk to (reference §3.5).

```yaml
default: nancy
servers:
- {name: nancy, hostname: kadeploy.nancy.grid5000.fr, port: 25300, secure: true}
```
`secure` defaults to true; an empty or absent `auth_headers_prefix` means
"ask the server" (`GET /auth_headers_prefix`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import Field, model_validator

from kadeploy.config.validation import ConfigModel, read_yaml_file, validate_model

log = logging.getLogger("kadeploy.config")

LEGACY_CLIENT_FILE = "client_conf.yml"


class ServerEntry(ConfigModel):
    name: str
    hostname: str
    port: int = Field(default=25300, ge=1, le=65535)
    secure: bool = True
    auth_headers_prefix: str | None = None
    certificate: str | None = None  # the user's X.509 certificate for the TLS handshake (our extension)
    private_key: str | None = None
    ca_cert: str | None = None   # the CA the server's certificate is verified against (our extension)
    verify: bool = False         # verify the server's certificate against the system's CAs (our extension)

    @property
    def base_url(self) -> str:
        return f"{'https' if self.secure else 'http'}://{self.hostname}:{self.port}"


class ClientConfig(ConfigModel):
    default: str
    servers: list[ServerEntry] = Field(min_length=1)
    warnings: list[str] = Field(default_factory=list, exclude=True)

    @model_validator(mode="after")
    def _default_is_listed(self) -> ClientConfig:
        names = [server.name for server in self.servers]
        if len(set(names)) != len(names):
            raise ValueError("servers: a server name is listed twice")
        if self.default not in names:
            raise ValueError(f"default: no server is named \"{self.default}\" (known: {', '.join(names)})")
        return self

    def server(self, name: str | None = None) -> ServerEntry:
        """The server called `name`, or the default one; KeyError if unknown."""
        wanted = name or self.default
        for server in self.servers:
            if server.name == wanted:
                return server
        raise KeyError(wanted)


def load_client_config(path: Path | str) -> ClientConfig:
    """Read a client.conf; `client_conf.yml` beside it is accepted with a warning."""
    path = Path(path)
    warnings: list[str] = []
    if not path.exists() and (path.parent / LEGACY_CLIENT_FILE).exists():
        legacy = path.parent / LEGACY_CLIENT_FILE
        warnings.append(f"{legacy.name}: deprecated file name, consider renaming it to '{path.name}'")
        path = legacy
    data = read_yaml_file(path)
    config, unknown = validate_model(ClientConfig, data, path.name)
    config.warnings = warnings + unknown
    for warning in config.warnings:
        log.warning(warning)
    return config
