"""Breakpoints `Macro` and `Macro:micro` (reference 5.8)."""

from __future__ import annotations

import pytest
from engine_fakes import NODES, FakeLibrary, deploy, fail_on

from kadeploy.engine import Breakpoint, ImplementationSpec
from kadeploy.errors import ErrorCode, KadeployError


async def test_breakpoint_on_a_macro_step_interface(make_workflow, output):
    library = FakeLibrary()
    result = await make_workflow(library, breakpoint="BroadcastEnv").run(NODES)
    assert result.brk == NODES and result.ok == [] and result.ko == {}
    assert result.reported_ok == NODES
    assert library.ran("BroadcastEnvKascade", "send_environment") == []
    assert library.ran("SetDeploymentEnvUntrusted", "format_deploy_part") == NODES
    assert "Breakpoint reached for node-[1-4].c1" in output.texts(1)
    assert "Performing a Deploy[BroadcastEnvKascade] step" not in output.texts(1)
    assert output.last_state("node-1.c1").state == "brk"


async def test_breakpoint_on_a_micro_step(make_workflow, output):
    library = FakeLibrary()
    result = await make_workflow(library, breakpoint="BroadcastEnvKascade:manage_user_post_install").run(NODES)
    assert result.brk == NODES
    assert library.ran("BroadcastEnvKascade", "send_environment") == NODES
    assert library.ran("BroadcastEnvKascade", "manage_user_post_install") == []
    assert library.ran("BootNewEnvKexec", "kexec") == []
    texts = output.texts(2)
    assert "*** Breakpoint on manage_user_post_install reached for node-[1-4].c1" in texts
    assert "Step Deploy[BroadcastEnvKascade] breakpointed" in texts
    assert "Breakpoint reached for node-[1-4].c1" in texts
    assert result.records["node-1.c1"].state == "brk"


async def test_breakpoint_on_implementation_applies_to_fallback_only(make_workflow):
    library = FakeLibrary({("BootNewEnvKexec", "wait_reboot"): fail_on(["node-1.c1"], "no kexec")})
    macrosteps = deploy(boot=[ImplementationSpec("BootNewEnvKexec"), ImplementationSpec("BootNewEnvHardReboot")])
    result = await make_workflow(library, macrosteps, breakpoint="BootNewEnvHardReboot").run(NODES)
    assert result.ok == NODES[1:]
    assert result.brk == ["node-1.c1"]


async def test_breakpoint_in_cluster_config(make_workflow):
    macrosteps = deploy(setenv=[ImplementationSpec("SetDeploymentEnvUntrusted", breakpoint=True)])
    library = FakeLibrary()
    result = await make_workflow(library, macrosteps).run(NODES)
    assert result.brk == NODES and library.calls == []


async def test_breakpoint_on_unused_step_is_refused(make_workflow):
    with pytest.raises(KadeployError) as error:
        make_workflow(FakeLibrary(), breakpoint="BroadcastEnvTree")
    assert error.value.code == ErrorCode.INVALID_OPTION
    assert "The step 'BroadcastEnvTree' is not used during the operation" in error.value.message
    with pytest.raises(KadeployError, match="'BroadcastEnv:kexec' is not used"):
        make_workflow(FakeLibrary(), breakpoint="BroadcastEnv:kexec")


@pytest.mark.parametrize("text", ["", "Broadcast Env", "BroadcastEnv:", "a:b:c", "x;rm -rf /"])
def test_malformed_breakpoint_is_refused(text):
    with pytest.raises(KadeployError, match="Invalid breakpoint"):
        Breakpoint.parse(text)
