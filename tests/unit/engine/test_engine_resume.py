"""Resume (issue 4(a)) and the automatic retry policy (issue 4(b))."""

from __future__ import annotations

import pytest
from engine_fakes import NODES, FakeLibrary, deploy, fail, fail_on

from kadeploy.engine import (
    ListOutput,
    ResumePoint,
    Workflow,
    merge_results,
    run_with_retries,
)
from kadeploy.errors import KadeployError


async def test_breakpointed_nodes_resume_at_the_micro_step_without_redoing_the_rest(make_workflow):
    first = FakeLibrary()
    brk = "BroadcastEnvKascade:manage_user_post_install"
    result = await make_workflow(first, breakpoint=brk).run(NODES)
    point = result.resume_points["node-1.c1"]
    assert point == ResumePoint("node-1.c1", 1, "BroadcastEnv", "BroadcastEnvKascade", "manage_user_post_install")

    second = FakeLibrary()
    # Same breakpoint: the one a node resumes from is not applied again.
    resumed = await make_workflow(second, breakpoint=brk).run(NODES, resume=result.resume_points)
    assert resumed.ok == NODES
    assert second.ran("SetDeploymentEnvUntrusted", "switch_pxe") == []
    assert second.ran("BroadcastEnvKascade", "send_environment") == []
    assert second.ran("BroadcastEnvKascade", "manage_user_post_install") == NODES
    assert second.ran("BootNewEnvKexec", "wait_reboot") == NODES
    assert resumed.records["node-1.c1"].steps[0] is None


async def test_macro_breakpoint_resumes_at_the_macro_step(make_workflow):
    result = await make_workflow(FakeLibrary(), breakpoint="BootNewEnv").run(NODES)
    assert result.resume_points["node-2.c1"] == ResumePoint("node-2.c1", 2, "BootNewEnv", "BootNewEnvKexec", None)
    second = FakeLibrary()
    resumed = await make_workflow(second).run(NODES, resume=result.resume_points)
    assert resumed.ok == NODES
    assert {c.implementation for c in second.calls} == {"BootNewEnvKexec"}


async def test_failed_nodes_resume_at_the_start_of_the_failed_macro_step(make_workflow):
    first = FakeLibrary({"sync": fail_on(["node-3.c1"], "sync failed")})
    result = await make_workflow(first).run(NODES)
    assert set(result.resume_points) == {"node-3.c1"}
    assert result.resume_points["node-3.c1"] == ResumePoint("node-3.c1", 1, "BroadcastEnv")

    second = FakeLibrary()
    resumed = await make_workflow(second).run(["node-3.c1"], resume=result.resume_points)
    assert resumed.ok == ["node-3.c1"]
    assert second.ran("SetDeploymentEnvUntrusted", "reboot") == []
    assert second.ran("BroadcastEnvKascade", "send_environment") == ["node-3.c1"]


async def test_nodes_without_resume_point_start_from_scratch(make_workflow, output):
    points = {"node-1.c1": ResumePoint("node-1.c1", 2, "BootNewEnv")}
    library = FakeLibrary()
    result = await make_workflow(library).run(NODES, resume=points)
    assert result.ok == NODES
    assert library.ran("SetDeploymentEnvUntrusted", "reboot") == NODES[1:]
    assert library.ran("BootNewEnvKexec", "kexec") == NODES
    assert "[1] Performing a Deploy[SetDeploymentEnvUntrusted] step" in output.texts(1)


@pytest.mark.parametrize("point, message", [
    (ResumePoint("node-1.c1", 5, "BootNewEnv"), "no macro-step BootNewEnv at position 6"),
    (ResumePoint("node-1.c1", 1, "BootNewEnv"), "no macro-step BootNewEnv at position 2"),
    (ResumePoint("node-1.c1", 1, "BroadcastEnv", "BroadcastEnvTree"), "BroadcastEnvTree is not an implementation"),
    (ResumePoint("node-1.c1", 1, "BroadcastEnv", "BroadcastEnvKascade", "kexec"), "has no micro-step kexec"),
])
async def test_impossible_resume_point_is_refused(make_workflow, point, message):
    with pytest.raises(KadeployError, match=message):
        await make_workflow(FakeLibrary()).run(NODES, resume={point.hostname: point})


def _factory(libraries: list[FakeLibrary], output: ListOutput):
    def make(round_number: int) -> Workflow:
        return Workflow("Deploy", "c1", deploy(), libraries[round_number - 1], output)
    return make


async def test_retry_policy_redeploys_only_failed_nodes_until_all_ok():
    output = ListOutput()
    libraries = [FakeLibrary({"sync": fail_on(["node-2.c1", "node-3.c1"])}),
                 FakeLibrary({"sync": fail_on(["node-3.c1"])}),
                 FakeLibrary(), FakeLibrary()]
    results = await run_with_retries(_factory(libraries, output), NODES, max_rounds=4, output=output)
    assert len(results) == 3
    assert libraries[1].ran("SetDeploymentEnvUntrusted", "reboot") == ["node-2.c1", "node-3.c1"]
    assert libraries[2].ran("SetDeploymentEnvUntrusted", "reboot") == ["node-3.c1"]
    assert libraries[3].calls == []
    merged = merge_results(results)
    assert merged.ok == NODES and merged.ko == {}
    assert "Round 2/4: retrying on 2 failed nodes node-[2-3].c1" in output.texts(0)
    assert "Round 1/4: 2/4 nodes OK (50%)" in output.texts(0)
    assert "Round 3/4: 4/4 nodes OK (100%)" in output.texts(0)


async def test_retry_policy_stops_when_rounds_are_exhausted():
    libraries = [FakeLibrary({"reboot": fail("dead")}) for _ in range(2)]
    results = await run_with_retries(_factory(libraries, ListOutput()), NODES, max_rounds=2)
    assert len(results) == 2
    merged = merge_results(results)
    assert merged.ok == [] and sorted(merged.ko) == NODES


async def test_retry_policy_stops_at_the_success_ratio():
    libraries = [FakeLibrary({"sync": fail_on(["node-4.c1"])}), FakeLibrary()]
    results = await run_with_retries(_factory(libraries, ListOutput()), NODES, max_rounds=3, min_success=0.75)
    assert len(results) == 1
    assert list(merge_results(results).ko) == ["node-4.c1"]


async def test_retry_policy_can_resume_instead_of_redeploying():
    libraries = [FakeLibrary({"sync": fail_on(["node-4.c1"])}), FakeLibrary()]
    results = await run_with_retries(_factory(libraries, ListOutput()), NODES, max_rounds=2, resume=True)
    assert merge_results(results).ok == NODES
    assert libraries[1].ran("SetDeploymentEnvUntrusted", "reboot") == []
    assert libraries[1].ran("BroadcastEnvKascade", "sync") == ["node-4.c1"]


@pytest.mark.parametrize("rounds, ratio", [(0, None), (2, 0.0), (2, 1.5)])
async def test_retry_policy_refuses_bad_settings(rounds, ratio):
    with pytest.raises(KadeployError):
        await run_with_retries(_factory([FakeLibrary()], ListOutput()), NODES, rounds, ratio)
