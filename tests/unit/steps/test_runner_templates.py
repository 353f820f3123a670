"""What the runner writes: templates filled in one pass (issue #16, class 2), the power status block as Kadeploy3's."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from kadeploy.errors import KadeployError
from kadeploy.steps.runner import EngineRunner, _driver_factory
from kadeploy.vocabulary import REGISTRIES, Kind


def _runner_with_set_cmd(template: str) -> SimpleNamespace:
    vlan = SimpleNamespace(set_cmd=template)
    return SimpleNamespace(cfg=SimpleNamespace(server=SimpleNamespace(network=SimpleNamespace(vlan=vlan))))


def test_a_user_named_like_a_placeholder_stays_a_user_name():
    command = EngineRunner._vlan_command(_runner_with_set_cmd("kavlan -s VLAN_ID -u USER NODES"), "VLAN_ID")
    assert command(["node-1.c1"], "12") == "kavlan -s 12 -u VLAN_ID  -m node-1.c1"  # NODES is " -m <node>" each


def test_a_vlan_id_is_checked_before_it_reaches_the_command():
    command = EngineRunner._vlan_command(_runner_with_set_cmd("kavlan -s VLAN_ID NODES"), "alice")
    with pytest.raises(KadeployError, match="Invalid VLAN"):
        command(["node-1.c1"], "12; reboot")


def test_power_driver_addresses_are_filled_once():
    registry = REGISTRIES[Kind.POWER_DRIVER]
    op = SimpleNamespace(driver="ipmi", address="bmc-HOSTNAME_SHORT.HOSTNAME_FQDN", user=None, password=None)
    built = _driver_factory(op)("node-1.c1.test")
    assert built.address == "bmc-node-1.node-1.c1.test"
    assert isinstance(built, registry.get("ipmi"))


def test_power_status_is_one_block_of_the_nodes_ok_as_kadeploy3_logs_it():
    from kadeploy.operations import NodeOutcome, OperationOutcome
    from kadeploy.steps.runner import _log_power_status

    logged: list[tuple[str | None, int, str]] = []
    sink = SimpleNamespace(log=lambda cluster, level, text: logged.append((cluster, level, text)))
    outcome = OperationOutcome({"node-10.c1": NodeOutcome("ok"), "node-2.c1": NodeOutcome("ok"),
                                "node-3.c2": NodeOutcome("ko", "no answer")})
    _log_power_status(sink, outcome, {"node-10.c1": "on", "node-2.c1": "Chassis Power is off", "node-3.c2": ""})
    assert logged == [(None, 0, "---"), (None, 0, "node-2.c1: Chassis Power is off"), (None, 0, "node-10.c1: on"),
                      (None, 0, "---")]
