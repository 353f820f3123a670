"""Custom operations woven into micro-steps (reference 5.9), status view, bypassed micro-steps.

The request's operations are merged by `kadeploy.steps.customops` (tested on its own in
tests/unit/steps/test_request_customops.py); here the engine runs them.
"""

from __future__ import annotations

import asyncio

import pytest
from engine_fakes import NODES, FakeLibrary, deploy, fail, never

from kadeploy.engine import (
    CustomOperation,
    ImplementationSpec,
    ListOutput,
    MicroStepConf,
    Workflow,
)
from kadeploy.steps.customops import apply_custom_operations
from kadeploy.steps.macrosteps import default_deploy_macrosteps

REQUEST = {
    "BroadcastEnvKascade": {
        "send_environment": {
            "pre-ops": [{"action": "exec", "name": "n1", "command": "echo OK > $KADEPLOY_ENV_EXTRACTION_DIR/TEST"}],
            "post-ops": [{"action": "send", "name": "hosts", "file": "my_file",
                          "destination": "$KADEPLOY_ENV_EXTRACTION_DIR/etc", "retries": 1, "scattering": "chain"}],
        },
    },
    "SetDeploymentEnv": {
        "format_deploy_part": {"substitute": [{"action": "run", "name": "mkfs", "file": "mkfs.sh", "timeout": 16}]},
    },
}


async def test_custom_operations_run_around_and_instead_of_micro_steps(make_workflow, output):
    macrosteps = apply_custom_operations(deploy(), REQUEST)
    library = FakeLibrary()
    result = await make_workflow(library, macrosteps).run(NODES)
    assert result.ok == NODES
    order = [c.micro for c in library.calls if c.implementation == "BroadcastEnvKascade"]
    assert order[:3] == ["custom_pre_send_environment-n1", "send_environment", "custom_post_send_environment-hosts"]
    setenv = [c.micro for c in library.calls if c.implementation == "SetDeploymentEnvUntrusted"]
    assert "format_deploy_part" not in setenv and setenv[-1] == "custom_sub_format_deploy_part-mkfs"
    texts = output.texts(4)
    assert "  send_environment-n1" in texts
    assert "   ~ Time in custom_pre_send_environment-n1: 0s" in texts


async def test_failing_custom_operation_names_itself_in_the_error(make_workflow):
    macrosteps = apply_custom_operations(deploy(), REQUEST)
    library = FakeLibrary({("custom", "hosts"): fail("No such file")})
    result = await make_workflow(library, macrosteps).run(NODES)
    assert result.ko["node-1.c1"] == "BroadcastEnvKascade-custom_post_send_environment-hosts: No such file"
    # retries: 1 of the operation ran it twice
    assert len([c for c in library.calls if c.micro.endswith("-hosts")]) == 2


async def test_custom_operation_timeout(make_workflow):
    ops = {"BroadcastEnv": {"sync": {"post-ops": [
        {"action": "exec", "name": "slow", "command": "sleep 100", "timeout": 1}]}}}
    library = FakeLibrary({("custom", "slow"): never})
    result = await asyncio.wait_for(make_workflow(library, apply_custom_operations(deploy(), ops)).run(NODES), 5)
    assert result.ko["node-1.c1"] == ("BroadcastEnvKascade-custom_post_sync-slow: "
                                      "Timeout in the custom_post_sync-slow step")


def test_request_operations_add_to_admin_ones_unless_override():
    admin = CustomOperation("exec", "admin", command="true")
    conf = {"sync": MicroStepConf(post_ops=(admin,))}
    macrosteps = deploy(broadcast=[ImplementationSpec("BroadcastEnvKascade", microsteps=conf)])
    user = {"BroadcastEnv": {"sync": {"post-ops": [{"action": "exec", "name": "user", "command": "true"}]}}}
    added = apply_custom_operations(macrosteps, user)
    assert [op.name for op in added[1][1][0].microsteps["sync"].post_ops] == ["admin", "user"]
    user["BroadcastEnv"]["sync"]["override"] = True
    replaced = apply_custom_operations(macrosteps, user)
    assert [op.name for op in replaced[1][1][0].microsteps["sync"].post_ops] == ["user"]
    # The original specs are left untouched.
    assert [op.name for op in macrosteps[1][1][0].microsteps["sync"].post_ops] == ["admin"]


async def test_status_view_while_running(make_workflow):
    library = FakeLibrary({"wait_reboot": never})
    wf = make_workflow(library)
    assert wf.status() == {}
    task = asyncio.create_task(wf.run(NODES))
    while not any(c.micro == "wait_reboot" for c in library.calls):
        await asyncio.sleep(0.01)
    status = wf.status()
    assert status == {"SetDeploymentEnvUntrusted": {"wait_reboot": {
        "nodes": {"OK": [], "KO": [], "**": NODES}, "time": 0}}}
    assert wf.result.processing == NODES
    wf.kill()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert wf.status() == {}


async def test_pruned_micro_steps_are_reported_as_bypassed():
    output = ListOutput()
    library = FakeLibrary(bypassed_lists={"BroadcastEnvKascade": ["install_bootloader", "send_key"]})
    wf = Workflow("Deploy", "c1", default_deploy_macrosteps(), library, output)
    await wf.run(NODES)
    texts = output.texts(5)
    assert texts.index(" * Bypassing the step Deploy[BroadcastEnvKascade]-install_bootloader") < \
        texts.index(" * Bypassing the step Deploy[BroadcastEnvKascade]-send_key")
    assert not any("Bypassing the step Deploy[SetDeploymentEnvUntrusted]" in t for t in texts)
    assert not any("Bypassing" in t for t in output.texts(4))
