"""Killing a running workflow, and aborting on a step's KadeployError."""

from __future__ import annotations

import asyncio

import pytest
from engine_fakes import NODES, FakeLibrary, deploy, fail_on, never

from kadeploy.engine import ImplementationSpec, StepResult
from kadeploy.errors import ErrorCode, KadeployError


def slow_for(nodes):
    async def behaviour(ctx, step_nodes):
        if set(nodes) & set(step_nodes):
            await never(ctx, step_nodes)
        return StepResult(ok=list(step_nodes))
    return behaviour


def _engine_tasks() -> set[asyncio.Task]:
    current = asyncio.current_task()
    return {t for t in asyncio.all_tasks() if t is not current and not t.done()}


async def test_cancel_kills_every_step_and_leaves_no_task(make_workflow, output):
    library = FakeLibrary({"send_environment": never})
    before = _engine_tasks()
    wf = make_workflow(library)
    task = asyncio.create_task(wf.run(NODES))
    while library.running == 0 or not any(c.micro == "send_environment" for c in library.calls):
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert library.running == 0
    assert [c.micro for c in library.cancelled] == ["send_environment"]
    assert _engine_tasks() == before
    result = wf.result
    assert result.aborted and result.ok == [] and sorted(result.ko) == NODES
    assert result.ko["node-1.c1"] == "BroadcastEnvKascade-send_environment: Deployment aborted"
    assert output.last_state("node-2.c1").state == "aborted"
    assert output.texts(0)[-1] == "Deployment aborted"
    assert " * Kill a deployment instance" in output.texts(2)


async def test_kill_method_keeps_finished_nodes(make_workflow):
    library = FakeLibrary({("SetDeploymentEnvUntrusted", "switch_pxe"): fail_on(["node-1.c1"], "no pxe"),
                           "wait_reboot": never})
    wf = make_workflow(library)
    task = asyncio.create_task(wf.run(NODES))
    while not any(c.micro == "wait_reboot" for c in library.calls):
        await asyncio.sleep(0.01)
    wf.kill()
    with pytest.raises(asyncio.CancelledError):
        await task
    result = wf.result
    assert result.ko["node-1.c1"] == "SetDeploymentEnvUntrusted-switch_pxe: no pxe"
    assert result.records["node-1.c1"].state == "ko"
    assert result.records["node-2.c1"].state == "aborted"


async def test_kadeploy_error_in_a_step_aborts_the_workflow(make_workflow):
    async def missing_file(ctx, nodes):
        raise KadeployError(ErrorCode.INVALID_FILE, "The file '/srv/img.tgz' is not readable on the server")
    # node-4 is still rebooting (its own node set) when the broadcast aborts the operation.
    library = FakeLibrary({"send_environment": missing_file,
                           ("SetDeploymentEnvUntrusted", "reboot"): fail_on(["node-4.c1"], while_attempt_below=1),
                           ("SetDeploymentEnvUntrusted", "wait_reboot"): slow_for(["node-4.c1"])})
    wf = make_workflow(library, deploy(setenv=[ImplementationSpec("SetDeploymentEnvUntrusted", retries=1)]))
    with pytest.raises(KadeployError) as error:
        await asyncio.wait_for(wf.run(NODES), 5)
    assert error.value.code == ErrorCode.INVALID_FILE
    assert wf.result.aborted
    assert all(r.state == "aborted" for r in wf.result.records.values())
    assert library.running == 0
    assert [c.nodes for c in library.cancelled] == [("node-4.c1",)]
    assert [c.nodes for c in library.cancelled] == [("node-4.c1",)]


async def test_step_that_cancels_itself_does_not_lose_its_nodes(make_workflow):
    async def self_cancelling(ctx, nodes):
        raise asyncio.CancelledError()
    result = await asyncio.wait_for(make_workflow(FakeLibrary({"sync": self_cancelling})).run(NODES), 5)
    assert result.processing == []
    assert result.ko["node-1.c1"] == "BroadcastEnvKascade-sync: the step was cancelled unexpectedly"
