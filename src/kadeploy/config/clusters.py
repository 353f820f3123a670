"""`clusters.conf`: the clusters a server manages and their nodes (reference §3.2).

A node entry may be a range: `{name: "griffon-[1-92].nancy.grid5000.fr",
address: "10.0.65.[1-92]"}` expands both sides in order and pairs them, so
both must give the same number of items. Our extension: an optional `mac`
per (single) node, used by MAC-named PXE profiles.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from pydantic import Field, field_validator

from kadeploy.config.validation import ConfigModel, join_path
from kadeploy.errors import ConfigError, KadeployError
from kadeploy.nodeset import expand

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


@dataclass(frozen=True)
class NodeInfo:
    """A node as the server knows it: FQDN, address to reach it, cluster, MAC."""

    hostname: str
    address: str
    cluster: str
    mac: str | None = None

    @property
    def short_name(self) -> str:
        return self.hostname.split(".", 1)[0]


class NodeEntry(ConfigModel):
    name: str
    address: str
    mac: str | None = None

    @field_validator("mac")
    @classmethod
    def _mac_format(cls, value: str | None) -> str | None:
        if value is None:
            return None
        normalised = value.strip().lower().replace("-", ":")
        if not _MAC.match(normalised):
            raise ValueError(f"invalid MAC address \"{value}\" (expected aa:bb:cc:dd:ee:ff)")
        return normalised


class ClusterEntry(ConfigModel):
    name: str = Field(min_length=1)
    prefix: str = ""
    conf_file: str
    nodes: list[NodeEntry] = Field(min_length=1)


class ClustersFile(ConfigModel):
    clusters: list[ClusterEntry] = Field(min_length=1)


def _check_address(address: str, where: str) -> None:
    """Addresses are IPs, or hostnames for sites that resolve names."""
    try:
        ipaddress.ip_address(address)
    except ValueError:
        if not re.match(r"^[A-Za-z0-9.\-]+$", address):
            raise ConfigError(f"{where}: invalid address \"{address}\"") from None


def expand_nodes(clusters: ClustersFile, source: str = "clusters.conf") -> dict[str, NodeInfo]:
    """Expand every node entry; a node may belong to only one cluster."""
    nodes: dict[str, NodeInfo] = {}
    names_seen: set[str] = set()
    for cluster_index, cluster in enumerate(clusters.clusters):
        cluster_path = join_path("clusters", cluster_index)
        if cluster.name in names_seen:
            raise ConfigError(f"{source}: {cluster_path}.name: cluster \"{cluster.name}\" is defined twice")
        names_seen.add(cluster.name)
        for node_index, entry in enumerate(cluster.nodes):
            where = f"{source}: {cluster_path}.nodes[{node_index}]"
            try:
                hostnames = expand(entry.name)
            except KadeployError as exc:
                raise ConfigError(f"{where}.name: {exc.message}") from None
            try:
                addresses = expand(entry.address)
            except KadeployError as exc:
                raise ConfigError(f"{where}.address: {exc.message}") from None
            if len(hostnames) != len(addresses):
                raise ConfigError(
                    f"{where}: incoherent number of hostnames and addresses "
                    f"({len(hostnames)} names in \"{entry.name}\", {len(addresses)} addresses in \"{entry.address}\")"
                )
            if entry.mac is not None and len(hostnames) != 1:
                raise ConfigError(f"{where}.mac: a MAC address can only be given for a single node, not a range")
            for hostname, address in zip(hostnames, addresses):
                _check_address(address, f"{where}.address")
                if hostname in nodes:
                    raise ConfigError(
                        f"{where}.name: node {hostname} is already defined in cluster {nodes[hostname].cluster}"
                    )
                nodes[hostname] = NodeInfo(hostname, address, cluster.name, entry.mac)
    return nodes
