"""`server.conf` `security/fetch`: where user URLs may be fetched from (our extension).

```yaml
security:
  fetch:
    allow: [192.0.2.0/24]          # if given, only these networks (addresses or address/prefix)
    deny: [10.10.0.0/16]           # always refused: BMC and management networks, internal services
    ca_bundle: /etc/ssl/site-ca.pem  # CAs https URLs are verified against (default: the system's)
    max_size: 20000                # MB, per downloaded file (default: only the cache size bounds it)
```

Loopback, link-local, unspecified and multicast addresses and every BMC
address named by the cluster files are refused unless `allow` names them
(the rule is in `kadeploy.catalog.fetchpolicy`).
"""

from __future__ import annotations

from pydantic import Field, ValidationInfo, field_validator

from kadeploy.catalog.fetchpolicy import parse_network
from kadeploy.config.validation import ConfigModel, resolve_path


class FetchConfig(ConfigModel):
    """`security/fetch`: allow and deny lists of the server's fetches, TLS CAs, size cap."""

    allow: list[str] = Field(default_factory=list)
    deny: list[str] = Field(default_factory=list)
    ca_bundle: str | None = None
    max_size: int | None = Field(default=None, ge=1)  # MB

    @field_validator("allow", "deny")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            parse_network(str(entry))
        return [str(entry).strip() for entry in value]

    @field_validator("ca_bundle")
    @classmethod
    def _bundle(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        path = resolve_path(value, info)
        if not path.is_file():
            raise ValueError(f"cannot read the CA bundle {path}")
        return str(path)

    @property
    def max_bytes(self) -> int | None:
        return None if self.max_size is None else self.max_size * 1024 * 1024
