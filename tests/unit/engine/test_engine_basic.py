"""The simple paths of the automaton: all succeed, all fail, errors, output, stats records."""

from __future__ import annotations

import pytest
from engine_fakes import NODES, FakeLibrary, assert_each_node_once, deploy, fail, fail_on

from kadeploy.engine import ImplementationSpec, ListOutput, Workflow
from kadeploy.steps.macrosteps import reboot_macrosteps
from kadeploy.errors import KadeployError


async def test_all_nodes_succeed_through_every_macro_step(make_workflow):
    library = FakeLibrary()
    result = await make_workflow(library).run(NODES)
    assert result.ok == NODES and result.ko == {} and result.brk == []
    # Every micro-step of every macro-step ran once, on the whole node set.
    for implementation, micro in [("SetDeploymentEnvUntrusted", "switch_pxe"), ("BroadcastEnvKascade", "sync"),
                                  ("BootNewEnvKexec", "wait_reboot")]:
        assert library.ran(implementation, micro) == NODES
    assert len(library.calls) == 4 + 3 + 2


async def test_all_nodes_fail_with_prefixed_error(make_workflow, output):
    library = FakeLibrary({"reboot": fail("very_hard_reboot command is not provided")})
    result = await make_workflow(library).run(NODES)
    assert result.ok == []
    assert result.ko == {n: "SetDeploymentEnvUntrusted-reboot: very_hard_reboot command is not provided"
                         for n in NODES}
    assert library.ran("SetDeploymentEnvUntrusted", "wait_reboot") == []
    assert library.ran("BroadcastEnvKascade", "send_environment") == []
    state = output.last_state("node-1.c1")
    assert (state.macro, state.micro, state.state) == ("SetDeploymentEnvUntrusted", "reboot", "ko")
    assert state.error.startswith("SetDeploymentEnvUntrusted-reboot: ")


async def test_output_lines_of_a_successful_deployment(make_workflow, output):
    await make_workflow(FakeLibrary()).run(NODES)
    lines = output.texts(verbosity=3)
    assert lines[0] == "Launching a deployment on node-[1-4].c1"
    assert lines[1] == "Performing a Deploy[SetDeploymentEnvUntrusted] step"
    assert lines[2:6] == ["  switch_pxe", "  reboot", "  wait_reboot", "  format_deploy_part"]
    assert lines[6] == "End of step Deploy[SetDeploymentEnvUntrusted] after 0s"
    assert lines[7] == "Performing a Deploy[BroadcastEnvKascade] step"
    assert lines[-2] == "End of deployment for node-[1-4].c1 after 0s"
    assert lines[-1] == "End of deployment on cluster c1 after 0s"
    # No node set ever split: no prefix anywhere.
    assert not any(line.startswith("[") for line in lines)


async def test_verbosity_levels_of_lines(make_workflow, output):
    await make_workflow(FakeLibrary()).run(NODES)
    levels = {line.text: line.level for line in output.lines}
    assert levels["Launching a deployment on node-[1-4].c1"] == 0
    assert levels["End of deployment on cluster c1 after 0s"] == 0
    assert levels["Performing a Deploy[BroadcastEnvKascade] step"] == 1
    assert levels["  send_environment"] == 3
    assert levels["   ~ Time in send_environment: 0s"] == 4
    assert output.texts(verbosity=0) == ["Launching a deployment on node-[1-4].c1",
                                         "End of deployment on cluster c1 after 0s"]
    assert not any("~ Time in" in line for line in output.texts(verbosity=3))


async def test_failure_lines_at_levels_one_and_two(make_workflow, output):
    library = FakeLibrary({"sync": fail()})
    await make_workflow(library).run(NODES)
    level2 = output.texts(verbosity=2)
    assert "!!! The nodes node-[1-4].c1 failed on step sync" in level2
    assert "Step Deploy[BroadcastEnvKascade] failed for node-[1-4].c1 after 0s" in level2
    assert "Deployment failed for node-[1-4].c1 after 0s" in output.texts(verbosity=1)
    assert "!!! The nodes node-[1-4].c1 failed on step sync" not in output.texts(verbosity=1)


async def test_stats_records_name_implementation_timeout_retries_duration(make_workflow):
    library = FakeLibrary({("BootNewEnvClassical", "wait_reboot"): fail("Unreachable after the reboot")})
    macrosteps = deploy(boot=[ImplementationSpec("BootNewEnvClassical", retries=1, timeout=5),
                              ImplementationSpec("BootNewEnvHardReboot", timeout=7)])
    result = await make_workflow(library, macrosteps).run(NODES)
    assert result.ok == NODES
    record = result.records["node-3.c1"]
    assert record.success and record.state == "ok" and record.error is None
    setenv, broadcast, boot = record.steps
    assert (setenv.implementation, setenv.retries) == ("SetDeploymentEnvUntrusted", 0)
    assert (broadcast.implementation, broadcast.timeout) == ("BroadcastEnvKascade", 0)
    # Classical failed twice (one retry), then fallback to HardReboot: 2 retries+fallbacks.
    assert (boot.implementation, boot.timeout, boot.retries) == ("BootNewEnvHardReboot", 7, 2)
    assert 0 < boot.duration < boot.timeout  # measured, and the step did not wait out its timeout


async def test_failed_record_keeps_error_and_success_false(make_workflow):
    library = FakeLibrary({"send_environment": fail_on(["node-2.c1"], "tar: Unexpected EOF")})
    result = await make_workflow(library).run(NODES)
    record = result.records["node-2.c1"]
    assert not record.success and record.state == "ko"
    assert record.error == "BroadcastEnvKascade-send_environment: tar: Unexpected EOF"
    assert record.steps[2] is None  # never reached BootNewEnv
    assert_each_node_once(result)


async def test_step_exception_fails_nodes_not_the_server(make_workflow):
    async def crash(ctx, nodes):
        raise OSError("connection reset")
    result = await make_workflow(FakeLibrary({"format_deploy_part": crash})).run(NODES)
    assert result.ko["node-1.c1"] == "SetDeploymentEnvUntrusted-format_deploy_part: OSError: connection reset"


async def test_nodes_missing_from_step_result_fail(make_workflow):
    async def forgetful(ctx, nodes):
        from kadeploy.engine import StepResult
        return StepResult(ok=nodes[:2])
    result = await make_workflow(FakeLibrary({"sync": forgetful})).run(NODES)
    assert result.ok == NODES[:2]
    assert set(result.ko) == set(NODES[2:])


async def test_node_in_both_ok_and_ko_counts_as_failed(make_workflow):
    async def both(ctx, nodes):
        from kadeploy.engine import StepResult
        return StepResult(ok=list(nodes), ko={"node-1.c1": "half done"})
    result = await make_workflow(FakeLibrary({"sync": both})).run(NODES)
    assert result.ko == {"node-1.c1": "BroadcastEnvKascade-sync: half done"}


async def test_reboot_workflow_wording():
    output = ListOutput()
    library = FakeLibrary(microstep_lists={"Simple": ["reboot", "set_vlan", "wait_reboot"]})
    wf = Workflow("Reboot", "c1", reboot_macrosteps("simple"), library, output)
    result = await wf.run(NODES)
    assert result.ok == NODES
    texts = output.texts()
    assert "Performing a Reboot[Simple] step" in texts
    assert "End of step Reboot[Simple] after 0s" in texts
    assert "End of reboot for node-[1-4].c1 after 0s" in texts
    assert texts[-1] == "End of reboot on cluster c1 after 0s"


async def test_power_failure_wording():
    output = ListOutput()
    library = FakeLibrary({"power": fail("no power")}, microstep_lists={"On": ["power"]})
    wf = Workflow("Power", "c1", [("Power", [ImplementationSpec("On")])], library, output)
    result = await wf.run(NODES)
    assert result.ko["node-1.c1"] == "On-power: no power"
    assert "Power operation failed for node-[1-4].c1 after 0s" in output.texts()


async def test_multi_cluster_prefix_on_every_line(make_workflow, output):
    library = FakeLibrary({"sync": fail_on(["node-4.c1"])})
    await make_workflow(library, cluster_prefix="c0").run(NODES)
    assert all(line.text.startswith("[c0") for line in output.lines)
    assert "[c0] Performing a Deploy[SetDeploymentEnvUntrusted] step" in output.texts()
    assert "Nodeset [c0] split into :" in [t.removeprefix("[c0] ") for t in output.texts()]
    assert any(t.startswith("[c0.2] ") for t in output.texts())


async def test_unknown_implementation_is_a_user_error(make_workflow):
    with pytest.raises(KadeployError, match="Unknown implementation"):
        make_workflow(FakeLibrary(), deploy(setenv=[ImplementationSpec("SetDeploymentEnvNope")]))


async def test_empty_node_list_is_refused(make_workflow):
    with pytest.raises(KadeployError, match="No node"):
        await make_workflow(FakeLibrary()).run([])


async def test_a_workflow_runs_once(make_workflow):
    wf = make_workflow(FakeLibrary())
    await wf.run(NODES)
    with pytest.raises(RuntimeError):
        await wf.run(NODES)
