"""config room: server.conf, clusters.conf, cluster files, command.conf, client.conf.

Typed, strictly validated models with Kadeploy3's defaults (reference §3).
Errors raise `kadeploy.errors.ConfigError` naming the file, the key path and
what was expected; unknown keys are warnings. Imports only `kadeploy.errors`
and `kadeploy.nodeset`.

    cfg = load_config(Path("/etc/kadeploy3"))
    cfg.server.database.kind, cfg.clusters["c1"].partitioning.deploy_part,
    cfg.nodes["node-1.c1.testbed"].address, cfg.clusters["c1"].timeouts.reboot.evaluate(n)
"""

from kadeploy.config.automata import (
    MACROSTEP_INTERFACES,
    CustomOperation,
    ImplementationConf,
    MicrostepConf,
    default_automata,
    implementation_name,
    implementation_types,
    waits_for,
    parse_request_automata,
)
from kadeploy.config.client import ClientConfig, ServerEntry, load_client_config
from kadeploy.config.cluster import (
    AdminArchive,
    BootConfig,
    ClusterConfig,
    PartitioningConfig,
    RemoteOp,
    RemoteOpsConfig,
)
from kadeploy.config.clusters import NodeInfo
from kadeploy.config.loader import KadeployConfig, check_config, load_config
from kadeploy.config.server import DEFAULT_CONNECTOR, PXEConfig, ServerConfig
from kadeploy.config.timeout import TimeoutExpr

__all__ = [
    "DEFAULT_CONNECTOR",
    "MACROSTEP_INTERFACES",
    "AdminArchive",
    "BootConfig",
    "ClientConfig",
    "ClusterConfig",
    "CustomOperation",
    "ImplementationConf",
    "KadeployConfig",
    "MicrostepConf",
    "NodeInfo",
    "PartitioningConfig",
    "PXEConfig",
    "RemoteOp",
    "RemoteOpsConfig",
    "ServerConfig",
    "ServerEntry",
    "TimeoutExpr",
    "check_config",
    "default_automata",
    "implementation_name",
    "implementation_types",
    "waits_for",
    "load_client_config",
    "load_config",
    "parse_request_automata",
]
