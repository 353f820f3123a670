"""Loading the whole server configuration from its directory.

`load_config(config_dir)` reads `server.conf`, `clusters.conf`, every cluster
file, `command.conf` (optional) and `version` (optional), validates them and
returns one `KadeployConfig`. Any error raises `ConfigError` naming the file
and key path; unknown keys are warnings, logged on `kadeploy.config` and kept
in `KadeployConfig.warnings`. Kadeploy3's legacy file names are accepted with
a warning. `check_config` is what `kadeploy3d --check-config` runs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kadeploy.config.cluster import ClusterConfig, check_cluster_rules
from kadeploy.config.clusters import ClustersFile, NodeInfo, expand_nodes
from kadeploy.config.commands import node_command, parse_commands
from kadeploy.config.server import ServerConfig
from kadeploy.config.validation import join_path, read_yaml_file, validate_model
from kadeploy.errors import ConfigError

log = logging.getLogger("kadeploy.config")

SERVER_FILES = ("server.conf", "server_conf.yml")
CLUSTERS_FILES = ("clusters.conf", "clusters.yml")
COMMAND_FILES = ("command.conf", "cmd.yml")
VERSION_FILE = "version"


@dataclass
class KadeployConfig:
    """Everything kadeploy3d needs from /etc/kadeploy3, validated."""

    config_dir: Path
    server: ServerConfig
    clusters: dict[str, ClusterConfig]
    nodes: dict[str, NodeInfo]
    commands: dict[str, dict[str, str]] = field(default_factory=dict)
    version: str | None = None
    warnings: list[str] = field(default_factory=list)

    def cluster_of(self, hostname: str) -> ClusterConfig:
        """The cluster a node belongs to; KeyError for an unknown node."""
        return self.clusters[self.nodes[hostname].cluster]

    def node_command(self, hostname: str, kind: str) -> str | None:
        """The command.conf override `kind` (`reboot_soft`...) for a node, if any."""
        return node_command(self.commands, self.nodes[hostname], kind)


def _find_file(config_dir: Path, names: Sequence[str], warnings: list[str], *, required: bool) -> Path | None:
    """The current file name, or the legacy one with a warning."""
    current = config_dir / names[0]
    if current.exists():
        return current
    for legacy_name in names[1:]:
        legacy = config_dir / legacy_name
        if legacy.exists():
            warnings.append(f"{legacy_name}: deprecated file name, consider renaming it to '{names[0]}'")
            return legacy
    if required:
        raise ConfigError(f"{names[0]}: file not found in {config_dir}")
    return None


def _load_cluster(config_dir: Path, entry_index: int, entry: object, warnings: list[str]) -> ClusterConfig:
    name = entry.name  # type: ignore[attr-defined]
    conf_file: str = entry.conf_file  # type: ignore[attr-defined]
    path = Path(conf_file) if Path(conf_file).is_absolute() else config_dir / conf_file
    source = path.name
    if not path.exists():
        raise ConfigError(
            f"clusters.conf: {join_path(join_path('clusters', entry_index), 'conf_file')}: "
            f"cluster file {path} not found"
        )
    data = read_yaml_file(path, source)
    if isinstance(data, dict):
        for reserved in ("name", "prefix", "conf_file", "nodes"):
            if reserved in data:
                warnings.append(f"{source}: {reserved}: unknown key, ignored")
        data = {key: value for key, value in data.items() if key not in ("name", "prefix", "conf_file", "nodes")}
    cluster, unknown = validate_model(ClusterConfig, data, source, context={"config_dir": config_dir, "check_files": True})
    warnings.extend(unknown)
    problems = check_cluster_rules(cluster)
    if problems:
        raise ConfigError("\n".join(f"{source}: {path}: {problem}" for path, problem in problems))
    cluster.name = name
    cluster.prefix = entry.prefix  # type: ignore[attr-defined]
    cluster.conf_file = str(path)
    return cluster


def load_config(config_dir: Path | str) -> KadeployConfig:
    """Read and validate the whole configuration directory.

    Raises ConfigError (message: `<file>: <key path>: <what is wrong>`).
    """
    config_dir = Path(config_dir).resolve()
    if not config_dir.is_dir():
        raise ConfigError(f"configuration directory {config_dir} does not exist")
    warnings: list[str] = []
    context = {"config_dir": config_dir}

    server_path = _find_file(config_dir, SERVER_FILES, warnings, required=True)
    assert server_path is not None
    server, unknown = validate_model(ServerConfig, read_yaml_file(server_path), server_path.name, context=context)
    warnings.extend(unknown)

    clusters_path = _find_file(config_dir, CLUSTERS_FILES, warnings, required=True)
    assert clusters_path is not None
    clusters_file, unknown = validate_model(ClustersFile, read_yaml_file(clusters_path), clusters_path.name)
    warnings.extend(unknown)
    nodes = expand_nodes(clusters_file, clusters_path.name)

    clusters: dict[str, ClusterConfig] = {}
    for index, entry in enumerate(clusters_file.clusters):
        cluster = _load_cluster(config_dir, index, entry, warnings)
        cluster.nodes = [hostname for hostname, info in nodes.items() if info.cluster == entry.name]
        clusters[entry.name] = cluster

    commands: dict[str, dict[str, str]] = {}
    command_path = _find_file(config_dir, COMMAND_FILES, warnings, required=False)
    if command_path is not None:
        levels = {name: cluster.remoteops.level_name for name, cluster in clusters.items()}
        commands, unknown = parse_commands(read_yaml_file(command_path), nodes, command_path.name, levels)
        warnings.extend(unknown)

    version = None
    version_path = config_dir / VERSION_FILE
    if version_path.exists():
        version = version_path.read_text(encoding="utf-8").strip() or None

    for warning in warnings:
        log.warning(warning)
    return KadeployConfig(config_dir, server, clusters, nodes, commands, version, warnings)


def check_config(config_dir: Path | str) -> list[str]:
    """Validate a configuration directory: returns its warnings, raises ConfigError."""
    return load_config(config_dir).warnings
