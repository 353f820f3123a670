"""Custom operations of a request are merged into the automaton (reference 5.9)."""

import pytest

from kadeploy.engine import ImplementationSpec, MicroStepConf
from kadeploy.engine.model import CustomOperation
from kadeploy.errors import ErrorCode, KadeployError
from kadeploy.steps.customops import apply_custom_operations

ADMIN_OP = CustomOperation("exec", "admin", command="true")


def _macrosteps():
    kascade = ImplementationSpec("BroadcastEnvKascade", microsteps={"sync": MicroStepConf(post_ops=(ADMIN_OP,))})
    return [("SetDeploymentEnv", [ImplementationSpec("SetDeploymentEnvUntrusted")]), ("BroadcastEnv", [kascade])]


def test_user_operations_follow_the_admin_ones_of_the_named_implementation():
    merged = apply_custom_operations(_macrosteps(), {"BroadcastEnvKascade": {"sync": {"post-ops": [
        {"action": "exec", "name": "mine", "command": "echo hi"}]}}})
    ops = merged[1][1][0].microsteps["sync"].post_ops
    assert [op.name for op in ops] == ["admin", "mine"]
    assert merged[0] == _macrosteps()[0]


def test_override_replaces_admin_operations_and_interface_names_match():
    merged = apply_custom_operations(_macrosteps(), {"BroadcastEnv": {"sync": {"override": True, "post-ops": [
        {"action": "exec", "name": "mine", "command": "echo hi"}]}}})
    assert [op.name for op in merged[1][1][0].microsteps["sync"].post_ops] == ["mine"]


@pytest.mark.parametrize("raw", [
    {"BroadcastEnvChain": {"sync": {"post-ops": []}}},                      # not in this deployment
    {"BroadcastEnvKascade": {"sync": {"post-ops": [{"action": "exec"}]}}},  # exec without command
    {"BroadcastEnvKascade": {"sync": {"after": []}}},                       # unknown key
])
def test_invalid_custom_operations_are_error_8(raw):
    with pytest.raises(KadeployError) as error:
        apply_custom_operations(_macrosteps(), raw)
    assert error.value.code == ErrorCode.INVALID_CUSTOMOP
