"""The runner fills the administrator's templates in one pass (issue #16, class 2), not replace after replace."""

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
