"""The servers one tool invocation talks to: client.conf, `-S`, `-M`, reachability, nodes.

Client room. Opens a `Connection` to the chosen server (or, with `-M`, to
every reachable server of client.conf), checks each answers `GET /version`
within 5 s, learns the auth header prefix when not configured, and splits the
requested nodes between servers (reference 2, 10).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import httpx

from kadeploy.client.config import ClientConfig, ServerEntry, load_client_config
from kadeploy.client.errors import ClientError
from kadeploy.client.http import Connection, open_debug_stream
from kadeploy.client.multiserver import dispatch
from kadeploy.client.nodes import check_nodes

TransportFactory = Callable[[ServerEntry], httpx.BaseTransport | None]


@dataclass
class GenericOptions:
    """Reference 2.1, common to every tool."""

    server: str | None = None
    multi_server: bool = False
    debug_http: bool = False
    dry_run: bool = False
    password: str | None = None
    get_version: bool = False
    server_info: bool = False


class Session:
    """Connections to one server, or to all reachable servers with `-M`."""

    def __init__(
        self,
        options: GenericOptions,
        config: ClientConfig | None = None,
        *,
        stderr: TextIO | None = None,
        transport_factory: TransportFactory | None = None,
    ) -> None:
        self.options = options
        self.config = config or load_client_config()
        self.stderr = stderr or sys.stderr
        self.transport_factory = transport_factory
        self.connections: list[Connection] = []
        self.versions: dict[str, str] = {}

    @property
    def multi(self) -> bool:
        return self.options.multi_server

    def open(self) -> Session:
        debug_stream = None
        if self.options.debug_http:
            debug_stream = open_debug_stream() or sys.stdout
        if self.multi:
            entries = list(self.config.servers)
        else:
            entries = [self.config.server(self.options.server)]
        for entry in entries:
            connection = Connection(
                entry,
                password=self.options.password,
                debug_stream=debug_stream,
                transport=self.transport_factory(entry) if self.transport_factory else None,
            )
            try:
                self.versions[entry.name] = connection.check_reachable()
            except ClientError as error:
                connection.close()
                if not self.multi:
                    raise
                self.stderr.write(f"The {entry.name} server is unreachable ({error.message})\n")
                continue
            self.connections.append(connection)
        if not self.connections:
            raise ClientError("No Kadeploy server is reachable")
        return self

    def close(self) -> None:
        for connection in self.connections:
            connection.close()
        self.connections = []

    def __enter__(self) -> Session:
        return self if self.connections else self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def primary(self) -> Connection:
        return self.connections[0]

    def prefix(self, connection: Connection) -> str:
        """Line prefix for `-v`/`-I` in multi-server mode, as Kadeploy3 prints it."""
        return f"({connection.server.hostname}) " if self.multi else ""

    # -- nodes ------------------------------------------------------------------

    def managed_nodes(self, connection: Connection) -> list[str]:
        answer = connection.get("/nodes", {"list": True, "user": connection.user})
        if not isinstance(answer, list):
            raise ClientError(f"Invalid node list from the {connection.server.name} server")
        return [str(node) for node in answer]

    def dispatch_nodes(self, nodes: Sequence[str]) -> list[tuple[Connection, list[str]]]:
        """Each contacted server with its share of `nodes` (unknown nodes → INVALID_NODELIST)."""
        if not self.multi:
            connection = self.primary
            return [(connection, check_nodes(nodes, self.managed_nodes(connection), connection.server.name))]
        by_name = {connection.server.name: connection for connection in self.connections}
        server_nodes = {name: self.managed_nodes(connection) for name, connection in by_name.items()}
        shares = dispatch(nodes, server_nodes)
        return [(by_name[name], share) for name, share in shares.items()]

    # -- -v and -I -----------------------------------------------------------------

    def version_lines(self) -> list[str]:
        return [
            f"{self.prefix(connection)}Kadeploy version: {self.versions[connection.server.name]}"
            for connection in self.connections
        ]

    def info_lines(self) -> list[str]:
        lines: list[str] = []
        for connection in self.connections:
            lines += server_info_lines(connection.get("/info"), self.prefix(connection))
        return lines


def server_info_lines(info: Any, prefix: str = "") -> list[str]:
    """`-I`: the server's PXE method, automata, supported filesystems and exported variables."""
    if not isinstance(info, dict):
        raise ClientError("Invalid answer from the server to GET /info")
    lines = [f"{prefix}Kadeploy server configuration:",
             f"{prefix}  Custom PXE boot method: {_ruby_s(info.get('pxe'))}"]
    lines.append(f"{prefix}  Automata configuration:")
    for cluster, macros in (info.get("automata") or {}).items():
        lines.append(f"{prefix}    {cluster}:")
        for name, steps in (macros or {}).items():
            rendered = "; ".join(",".join(_ruby_s(value) for value in step.values()) for step in steps or [])
            lines.append(f"{prefix}      {name}: {rendered}")
    lines.append(f"{prefix}  Deployment environment:")
    lines.append(f"{prefix}    Supported file systems:")
    for cluster, filesystems in (info.get("supported_fs") or {}).items():
        lines.append(f"{prefix}      {cluster}: {','.join(filesystems or [])}")
    lines.append(f"{prefix}    Variables exported to custom scripts:")
    lines += arraystr_lines([str(name) for name in info.get("vars") or []], f"{prefix}      ")
    return lines


def _ruby_s(value: Any) -> str:
    """`"#{value}"` / `join` of a JSON scalar as Ruby writes it (nil empty, booleans lower case)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def arraystr_lines(values: Sequence[str], prefix: str, columns: int | None = None) -> list[str]:
    """client.rb `print_arraystr` then `puts`: values joined by `, ` into lines of at most
    $COLUMNS (80) characters, each starting with `prefix`; no value at all is one empty line."""
    if columns is None:
        digits = re.match(r"\s*[+-]?\d+", os.environ.get("COLUMNS", "80"))  # Ruby's String#to_i
        columns = int(digits.group()) if digits else 0
    lines: list[str] = []
    current: str | None = None
    for value in values:
        if current is None:
            current = prefix + value
        elif len(current) + len(value) + 2 > columns:
            lines.append(current)
            current = prefix + value
        else:
            current += f", {value}"
    if current and current != prefix:
        lines.append(current)
    return lines or [""]
