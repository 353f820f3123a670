"""Unit tests (no root): the testbed's power methods (`up --power-method`) as cluster files the server loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from kadeploy.boot.commands import CommandTable, RemoteOp
from kadeploy.config import load_config
from kadeploy.errors import KadeployError
from kadeploy_testbed import cli
from kadeploy_testbed.configdir import POWER_METHODS, cluster_conf, pdu_paths, redfish_tls_paths, write_config
from kadeploy_testbed.layout import build_layout, outlet_groups


def _load(tmp_path: Path, method: str, nodes: int = 5, clusters: int = 2):
    write_config(tmp_path, build_layout(nodes, clusters), "admin", "secret", power_method=method)
    cert = redfish_tls_paths(tmp_path)[0]
    cert.write_text("made by the daemon at start\n")  # ca_file is checked at load
    return load_config(tmp_path / "etc")


@pytest.mark.parametrize("method", POWER_METHODS)
def test_every_power_method_writes_cluster_files_the_server_loads(tmp_path: Path, method: str) -> None:
    cfg = _load(tmp_path, method)
    ops = cfg.clusters["c1"].remoteops
    hard = ops.command("reboot", "hard")
    if method == "redfish":
        assert (hard.driver, hard.address, hard.ca_file) == (
            "redfish", "https://10.200.0.1:8443/redfish/v1/Systems/HOSTNAME_SHORT", str(redfish_tls_paths(tmp_path)[0]))
        assert ops.command("power_status", "soft").driver == "redfish"
    else:
        assert hard.driver is None and "ipmitool" in hard.cmd and "chassis power reset" in hard.cmd
    very_hard = ops.command("reboot", "very_hard")
    if method == "pdu":
        assert very_hard.cmd.endswith("scripts/pdu reboot GROUP_SHORT")
        assert very_hard.groups == [["node-1.c1.testbed", "node-2.c1.testbed"], ["node-3.c1.testbed"]]
        assert ops.command("power_off", "very_hard").cmd.endswith("scripts/pdu off GROUP_SHORT")
    else:
        assert "chassis power cycle" in very_hard.cmd


def test_the_pdu_files_follow_the_outlets_cluster_by_cluster(tmp_path: Path) -> None:
    layout = build_layout(5, 2)
    write_config(tmp_path, layout, "admin", "secret", power_method="pdu")
    table, c2_groups = pdu_paths(tmp_path, "c2")
    assert table.read_text() == "1 node-1,node-2\n2 node-3\n3 node-4,node-5\n"
    assert c2_groups.read_text() == "node-4.c2.testbed,node-5.c2.testbed\n"
    assert {outlet: [node.short_name for node in nodes] for outlet, nodes in outlet_groups(layout).items()} == {
        1: ["node-1", "node-2"], 2: ["node-3"], 3: ["node-4", "node-5"]}
    # what the server runs for a complete group: the script and the group's short names, in one pass
    cfg = load_config(tmp_path / "etc")
    op = cfg.clusters["c2"].remoteops.command("reboot", "very_hard")
    commands = CommandTable({"reboot": [RemoteOp("very_hard", cmd=op.cmd, group=op.group)]})
    plan = commands.plan("reboot", "very_hard", ["node-4.c2.testbed", "node-5.c2.testbed"])
    assert [inv.command for inv in plan.invocations] == [f"{tmp_path}/etc/scripts/pdu reboot node-4,node-5"]


def test_an_unknown_power_method_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KadeployError, match="power method 'snmp': expected one of ipmi, redfish, pdu"):
        cluster_conf("c1", tmp_path, tmp_path / "key", "admin", "secret", power_method="snmp")


def test_other_modes_refuse_a_power_method_they_do_not_have(tmp_path: Path, capsys) -> None:
    assert cli.main(["--dir", str(tmp_path / "fake"), "up", "--mode", "fake", "--nodes", "2",
                     "--power-method", "redfish"]) != 0
    assert "--power-method redfish: fake mode has no Redfish service nor PDU (ipmi only)" in capsys.readouterr().err
