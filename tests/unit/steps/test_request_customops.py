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


def test_operations_for_an_implementation_this_deployment_does_not_use_are_checked_then_ignored():
    """Kadeploy3 (paramsparser.rb `:custom_ops`) validates the name and ignores what is not in use."""
    raw = {"BroadcastEnvChain": {"sync": {"post-ops": [{"action": "exec", "name": "unused", "command": "true"}]}},
           "BootNewEnv": {"sync": {"post-ops": [{"action": "exec", "name": "no-bootnewenv", "command": "true"}]}}}
    assert apply_custom_operations(_macrosteps(), raw) == _macrosteps()


@pytest.mark.parametrize(("raw", "message"), [
    ({"BroadcastEnvKascade": {"sync": {"post-ops": [{"action": "exec"}]}}}, "command"),  # exec without command
    ({"BroadcastEnvKascade": {"sync": {"after": []}}}, "unknown key"),
    ({"BroadcastEnvChain": {"sync": {"post-ops": [{"action": "exec"}]}}}, "command"),  # unused, still checked
    ({"BroadcastEnvPigeon": {"sync": {"post-ops": []}}}, "Invalid macrostep 'BroadcastEnvPigeon'"),
    ({"SetDeploymentEnvNfsroot": {"format_deploy_part": {"post-ops": []}}},
     '"SetDeploymentEnvNfsroot" is not supported by this Kadeploy'),
    ({"BroadcastEnv": {"frobnicate": {"post-ops": []}}}, "Invalid microstep 'frobnicate'"),
    ({"SetDeploymentEnv": {"load_drivers": {"post-ops": []}}}, '"load_drivers" is not supported by this Kadeploy'),
])
def test_invalid_custom_operations_are_error_8(raw, message):
    with pytest.raises(KadeployError) as error:
        apply_custom_operations(_macrosteps(), raw)
    assert error.value.code == ErrorCode.INVALID_CUSTOMOP
    assert message in error.value.message


@pytest.mark.parametrize("raw", [
    [],
    {"BroadcastEnv": {"sync": {"pre-ops": [{"action": "rm"}]}}},
    {"BroadcastEnv": {"sync": {"pre-ops": [{"action": "exec"}]}}},
    {"BroadcastEnv": {"sync": {"post-ops": [{"action": "send", "file": "f"}]}}},
    {"BroadcastEnv": {"sync": {"pre-ops": [{"action": "exec", "command": "x", "scattering": "star"}]}}},
    {"BroadcastEnv": {"sync": {"pre-ops": [{"action": "exec", "command": "x", "timeout": "soon"}]}}},
    {"BroadcastEnv": {"sync": {"preops": []}}},
    {"BroadcastEnv": {"sync": "post-ops"}},
])
def test_malformed_operations_are_error_8_naming_where(raw):
    with pytest.raises(KadeployError) as error:
        apply_custom_operations(_macrosteps(), raw)
    assert error.value.code == ErrorCode.INVALID_CUSTOMOP
    assert error.value.message.startswith("custom_operations")
    if isinstance(raw, dict):
        assert "custom_operations/BroadcastEnv/sync" in error.value.message
