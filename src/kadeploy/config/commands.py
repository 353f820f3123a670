"""`command.conf`: per-node overrides of reboot, power and console commands (§3.4).

```yaml
vm-001:
  reboot_soft: ssh -q root@vm-001 /sbin/special_reboot_for_vm
```
Nodes are named by FQDN or short name. A per-node command takes precedence
over the cluster's (and over a group command). Unknown nodes and unknown
command kinds are warnings, so that a stale entry does not stop the server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kadeploy.config.clusters import NodeInfo
from kadeploy.config.validation import describe_value
from kadeploy.errors import ConfigError

DEFAULT_LEVELS = ("soft", "hard", "very_hard")


def command_kinds(levels: Sequence[str] = DEFAULT_LEVELS) -> set[str]:
    """`reboot_<level>`, `power_on_<level>`, `power_off_<level>`, `power_status`, `console`."""
    kinds = {"power_status", "console"}
    for operation in ("reboot", "power_on", "power_off"):
        kinds.update(f"{operation}_{level}" for level in levels)
    return kinds


def parse_commands(
    data: Any,
    nodes: Mapping[str, NodeInfo],
    source: str = "command.conf",
    levels: Mapping[str, Sequence[str]] | None = None,
) -> tuple[dict[str, dict[str, str]], list[str]]:
    """Validate command.conf content; return {node: {kind: cmd}} and warnings.

    `levels` gives each cluster's `remoteops/level_name` (default soft, hard, very_hard).
    """
    warnings: list[str] = []
    if data is None:
        return {}, warnings
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of node names at the top level, got {describe_value(data)}")
    by_name = {info.short_name: info for info in nodes.values()}
    by_name.update(nodes)
    commands: dict[str, dict[str, str]] = {}
    for node, entries in data.items():
        node_name = str(node)
        if not isinstance(entries, dict):
            raise ConfigError(f"{source}: {node_name}: expected a mapping of commands, got {describe_value(entries)}")
        node_info = by_name.get(node_name)
        if node_info is None:
            warnings.append(f"{source}: {node_name}: the node does not exist in clusters.conf, ignored")
            continue
        kinds = command_kinds((levels or {}).get(node_info.cluster, DEFAULT_LEVELS))
        node_commands: dict[str, str] = {}
        for kind, command in entries.items():
            if not isinstance(command, str):
                raise ConfigError(f"{source}: {node_name}/{kind}: expected a string, got {describe_value(command)}")
            if str(kind) not in kinds:
                warnings.append(f"{source}: {node_name}/{kind}: unknown command kind, ignored")
                continue
            node_commands[str(kind)] = command
        commands[node_name] = node_commands
    return commands, warnings


def node_command(commands: Mapping[str, Mapping[str, str]], node: NodeInfo, kind: str) -> str | None:
    """The override for `kind` (`reboot_hard`...) of a node, by FQDN then short name."""
    for name in (node.hostname, node.short_name):
        command = commands.get(name, {}).get(kind)
        if command is not None:
            return command
    return None
