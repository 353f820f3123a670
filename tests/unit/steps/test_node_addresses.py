"""Where the runner says each node is reached (Kadeploy3's `get_nodeid`), on a real configuration.

By name, as Kadeploy3 does by default; by its clusters.conf address when the
cluster file sets `hooks/use_ip_to_deploy`; at its VLAN address once moved
there (the addresses come resolved with the request).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from kadeploy.config import load_config
from kadeploy.operations import Operation, RebootRequest
from kadeploy.steps.runner import EngineRunner
from kadeploy_testbed.configdir import write_config
from kadeploy_testbed.layout import build_layout

NODES = ["node-1.c1.testbed", "node-2.c1.testbed"]


class _Sink:
    def log(self, cluster, level, text) -> None:
        pass

    def debug(self, node, text) -> None:
        pass


def _runner(tmp_path: Path, *, use_ip_to_deploy: bool | None) -> EngineRunner:
    write_config(tmp_path, build_layout(2), "admin", "secret")
    if use_ip_to_deploy is not None:
        cluster_file = tmp_path / "etc" / "c1.conf"
        cluster = yaml.safe_load(cluster_file.read_text())
        cluster["hooks"] = {"use_ip_to_deploy": use_ip_to_deploy}
        cluster_file.write_text(yaml.safe_dump(cluster))
    return EngineRunner(load_config(tmp_path / "etc"))


def _reboot(vlan: str | None = None, **fields) -> Operation:
    return Operation(wid="R-1", kind="reboot", user="root", nodes={"c1": list(NODES)},
                     options=RebootRequest(kind="simple", vlan=vlan),
                     addresses={"node-1.c1.testbed": "10.200.1.1", "node-2.c1.testbed": "10.200.1.2"}, **fields)


def test_nodes_are_reached_by_name_by_default(tmp_path):
    run = _runner(tmp_path, use_ip_to_deploy=None)._cluster_run(_reboot(), "c1", NODES, {}, _Sink())
    assert run.hosts == {node: node for node in NODES}


def test_use_ip_to_deploy_reaches_nodes_at_their_clusters_conf_address(tmp_path):
    run = _runner(tmp_path, use_ip_to_deploy=True)._cluster_run(_reboot(), "c1", NODES, {}, _Sink())
    assert run.hosts == {"node-1.c1.testbed": "10.200.1.1", "node-2.c1.testbed": "10.200.1.2"}


def test_vlan_addresses_are_where_set_vlan_moves_the_nodes(tmp_path):
    op = _reboot(vlan="100",
                 vlan_addresses={"node-1.c1.testbed": "10.200.129.1", "node-2.c1.testbed": "10.200.129.2"})
    run = _runner(tmp_path, use_ip_to_deploy=False)._cluster_run(op, "c1", NODES, {}, _Sink())
    run.moved_to_vlan(NODES[:1], "100")
    assert run.hosts == {"node-1.c1.testbed": "10.200.129.1", "node-2.c1.testbed": "node-2.c1.testbed"}
    # the PXE identity keeps the clusters.conf address; the VLAN one is added where the node boots in the VLAN
    assert [t.vlan_ip for t in run.boot_targets(NODES, into_vlan=True)] == ["10.200.129.1", "10.200.129.2"]
    assert [t.ip for t in run.boot_targets(NODES, into_vlan=False)] == ["10.200.1.1", "10.200.1.2"]
    assert [t.vlan_ip for t in run.boot_targets(NODES, into_vlan=False)] == [None, None]
