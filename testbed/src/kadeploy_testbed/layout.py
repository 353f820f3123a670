"""testbed room: names, addresses and MACs of the virtual nodes.

Pure computation (no I/O), so that the config writer, the daemon, `status`,
`down` and the tests all agree on who is where without asking each other.
Imports nothing from other rooms except `kadeploy.errors`.

Addressing (docs/contracts.md, "testbed"): bridge `ktb0` holds `10.200.0.1/16`
on the host; node k (1-based, global over clusters) gets `10.200.<1+(k-1)//254>.<1+(k-1)%254>`
so the first 254 nodes are `10.200.1.k`; its BMC gets the same host part in
`10.200.64.0/18`. MACs are derived from the IP (locally administered prefix
`02:00`) so a node keeps its MAC across runs, as real hardware does.

VLANs (KaVLAN): the testbed has the VLANs `VLANS`, each its own bridge
`ktb0v<ID>`. In a VLAN, node k is `node-<k>-kavlan-<ID>.<cluster>.testbed`
(the server's `network/vlan/hostname_suffix` is `HOSTNAME_SUFFIX`) at its VLAN
address, the same host part in `10.200.128.0/18`; its default address is not
reachable there. One VLAN address per node serves every VLAN, since a node is
in one VLAN at a time; it stays inside the server's /16, so a node in a VLAN
needs no route to reach the server's TFTP and HTTP boot services.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from kadeploy.errors import ErrorCode, KadeployError

BRIDGE = "ktb0"
SERVER_IP = "10.200.0.1"
#: the daemon's Redfish service (sushy-tools, one system per node) on SERVER_IP, HTTPS
REDFISH_PORT = 8443
#: the daemon's PDU (SNMP agent, pdu.py) on SERVER_IP, and how many consecutive nodes one outlet feeds
PDU_PORT = 1161
NODES_PER_OUTLET = 2
PREFIX_LEN = 16
NETNS_PREFIX = "ktb-"
DOMAIN = "testbed"
#: the VLANs a node can be moved to (besides DEFAULT), as a site's KaVLAN has a fixed set
VLANS = (100, 101, 102, 103)
#: server.conf `network/vlan/hostname_suffix` of the testbed (VLAN_ID is the server's placeholder)
HOSTNAME_SUFFIX = "-kavlan-VLAN_ID"
MAX_NODES = 254 * 63  # host parts 10.200.1.0 .. 10.200.63.255 stay below the BMC range
DEFAULT_DIR = Path("/var/lib/kadeploy-testbed")
CACHE_DIR = Path("/var/cache/kadeploy-testbed")


@dataclass(frozen=True)
class NodeSpec:
    """Everything fixed about one virtual node; `index` is 1-based and global."""

    index: int
    cluster: str
    ip: str
    mac: str
    bmc_ip: str

    @property
    def short_name(self) -> str:
        return f"node-{self.index}"

    @property
    def hostname(self) -> str:
        return f"node-{self.index}.{self.cluster}.{DOMAIN}"

    @property
    def bmc_hostname(self) -> str:
        return f"node-{self.index}-bmc.{self.cluster}.{DOMAIN}"

    @property
    def vlan_ip(self) -> str:
        """The node's address while it is in a VLAN (any of `VLANS`)."""
        return vlan_ip(self.index)

    def vlan_hostname(self, vlan: int) -> str:
        """The node's name in VLAN `vlan`: `node-<k>-kavlan-<vlan>.<cluster>.testbed`."""
        return f"node-{self.index}-kavlan-{vlan}.{self.cluster}.{DOMAIN}"

    def address(self, vlan: int | None) -> str:
        """Where the node is while in VLAN `vlan` (None: the default VLAN)."""
        return self.ip if vlan is None else self.vlan_ip

    @property
    def netns(self) -> str:
        return f"{NETNS_PREFIX}{self.index}"

    @property
    def host_veth(self) -> str:
        """Bridge-side end of the node's veth (IFNAMSIZ is 15, so keep it short)."""
        return f"ktbv{self.index}"

    @property
    def ip_hex(self) -> str:
        """PXElinux profile name: uppercase hex of the IPv4 address."""
        return ip_hex(self.ip)

    @property
    def pxe_mac_name(self) -> str:
        """PXElinux MAC profile name: ARP type 01 then the MAC with dashes."""
        return "01-" + self.mac.lower().replace(":", "-")


@dataclass(frozen=True)
class Layout:
    """The N nodes of a testbed split over C clusters (`c1`, `c2`...)."""

    nodes: tuple[NodeSpec, ...]
    clusters: tuple[str, ...]

    def by_cluster(self, cluster: str) -> list[NodeSpec]:
        return [node for node in self.nodes if node.cluster == cluster]

    def find(self, name: str) -> NodeSpec:
        """Look a node up by FQDN, short name, `ktb-<k>`, IP or BMC name/IP."""
        for node in self.nodes:
            if name in (node.hostname, node.short_name, node.netns, node.ip,
                        node.bmc_hostname, node.bmc_ip, f"{node.short_name}-bmc"):
                return node
        raise KadeployError(ErrorCode.INVALID_NODELIST, f"{name}: not a node of this testbed")


def host_part(index: int) -> tuple[int, int]:
    """Third and fourth octets for global node index `index` (1-based)."""
    return 1 + (index - 1) // 254, 1 + (index - 1) % 254


def node_ip(index: int) -> str:
    third, fourth = host_part(index)
    return f"10.200.{third}.{fourth}"


def bmc_ip(index: int) -> str:
    third, fourth = host_part(index)
    return f"10.200.{64 + third}.{fourth}"


def vlan_ip(index: int) -> str:
    third, fourth = host_part(index)
    return f"10.200.{128 + third}.{fourth}"


def ip_hex(ip: str) -> str:
    """PXElinux profile name of an address: uppercase hex of the IPv4 address."""
    return "".join(f"{int(part):02X}" for part in ip.split("."))


def bridge_mac(vlan: int = 0) -> str:
    """The fixed MAC of bridge `ktb0` and of every VLAN bridge `ktb0v<ID>`.

    A Linux bridge otherwise takes the lowest MAC of its ports, so moving a node
    into a VLAN changed the server's MAC under every other node's ARP cache. All
    VLAN bridges share it (separate layer-2 domains, like a router's VLAN
    interfaces): a node moved into a VLAN keeps a valid ARP entry for the server.
    """
    return "02:6b:74:62:00:01"


def mac_for(ip: str) -> str:
    octets = ipaddress.IPv4Address(ip).packed
    return "02:00:" + ":".join(f"{b:02x}" for b in octets)


def build_layout(nodes: int, clusters: int = 1) -> Layout:
    """Split `nodes` over `clusters` as evenly as possible, lower indices first.

    Cluster c_j gets a contiguous block of indices, the first clusters one node
    more when the division is not exact, so `node-[1-4].c1` style ranges stay
    foldable.
    """
    if nodes < 1 or nodes > MAX_NODES:
        raise KadeployError(ErrorCode.INVALID_OPTION, f"--nodes {nodes}: must be between 1 and {MAX_NODES}")
    if clusters < 1 or clusters > nodes:
        raise KadeployError(ErrorCode.INVALID_OPTION,
                            f"--clusters {clusters}: must be between 1 and the number of nodes ({nodes})")
    names = tuple(f"c{j + 1}" for j in range(clusters))
    base, extra = divmod(nodes, clusters)
    specs: list[NodeSpec] = []
    index = 1
    for j, cluster in enumerate(names):
        for _ in range(base + (1 if j < extra else 0)):
            ip = node_ip(index)
            specs.append(NodeSpec(index=index, cluster=cluster, ip=ip, mac=mac_for(ip), bmc_ip=bmc_ip(index)))
            index += 1
    return Layout(nodes=tuple(specs), clusters=names)


def pxe_candidates(node: NodeSpec, ip: str | None = None) -> list[str]:
    """Profile names a PXElinux ROM tries, in order: MAC, hex IP then its prefixes, default.

    `ip` is the address DHCP gave the node (its VLAN address in a VLAN); default: `node.ip`.
    """
    names = [node.pxe_mac_name]
    hex_ip = ip_hex(ip or node.ip)
    names.extend(hex_ip[:length] for length in range(len(hex_ip), 0, -1))
    names.append("default")
    return names


def outlet_groups(layout: Layout, per_outlet: int = NODES_PER_OUTLET) -> dict[int, list[NodeSpec]]:
    """PDU outlets 1.. feeding `per_outlet` consecutive nodes each, cluster by cluster (a chassis
    never spans two clusters); a cluster's last outlet may feed fewer."""
    if per_outlet < 1:
        raise KadeployError(ErrorCode.INVALID_OPTION, f"nodes per PDU outlet: at least 1, not {per_outlet}")
    outlets: dict[int, list[NodeSpec]] = {}
    for cluster in layout.clusters:
        nodes = layout.by_cluster(cluster)
        for start in range(0, len(nodes), per_outlet):
            outlets[len(outlets) + 1] = nodes[start:start + per_outlet]
    return outlets
