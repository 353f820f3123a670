"""Node sets split on partial failure and progress independently (reference 5.1)."""

from __future__ import annotations

import asyncio

from engine_fakes import NODES, FakeLibrary, assert_each_node_once, deploy, fail_on, sleep_on

from kadeploy.engine import ImplementationSpec, MicroStepConf


async def test_half_the_nodes_fail_then_succeed_on_retry(make_workflow, output):
    library = FakeLibrary({("SetDeploymentEnvUntrusted", "wait_reboot"):
                           fail_on(["node-3.c1", "node-4.c1"], "not back", while_attempt_below=1)})
    macrosteps = deploy(setenv=[ImplementationSpec("SetDeploymentEnvUntrusted", retries=1)])
    result = await make_workflow(library, macrosteps).run(NODES)
    assert result.ok == NODES
    # The retry restarted the implementation from its first micro-step, for the failed half only.
    assert [c.nodes for c in library.calls if c.micro == "switch_pxe"] == [
        tuple(NODES), ("node-3.c1", "node-4.c1")]
    texts = output.texts(1)
    assert texts[texts.index("---") + 1:texts.index("---") + 4] == [
        "Nodeset [0] split into :", "  [1] node-[1-2].c1", "  [2] node-[3-4].c1"]
    assert "[2] Performing a Deploy[SetDeploymentEnvUntrusted] step" in texts
    assert "[1] End of deployment for node-[1-2].c1 after 0s" in texts
    assert "[2] End of deployment for node-[3-4].c1 after 0s" in texts
    assert result.records["node-3.c1"].steps[0].retries == 1
    assert result.records["node-1.c1"].steps[0].retries == 0


async def test_successful_nodes_move_on_without_waiting_for_the_failed_ones(make_workflow):
    """Pipelining: the OK half starts broadcasting while the KO half is still retrying."""
    library = FakeLibrary({
        ("SetDeploymentEnvUntrusted", "reboot"): fail_on(["node-4.c1"], while_attempt_below=1),
        ("SetDeploymentEnvUntrusted", "switch_pxe"): sleep_on(["node-4.c1"], 0.3),
    })
    macrosteps = deploy(setenv=[ImplementationSpec("SetDeploymentEnvUntrusted", retries=1)])
    result = await make_workflow(library, macrosteps).run(NODES)
    assert result.ok == NODES
    order = [(c.implementation, c.micro, c.nodes) for c in library.calls]
    first_broadcast = order.index(("BroadcastEnvKascade", "send_environment", tuple(NODES[:3])))
    retry_done = order.index(("SetDeploymentEnvUntrusted", "format_deploy_part", ("node-4.c1",)))
    assert first_broadcast < retry_done


async def test_repeated_splits_account_for_every_node_exactly_once(make_workflow, output):
    nodes = [f"node-{i}.c1" for i in range(1, 9)]
    library = FakeLibrary({
        "reboot": fail_on(["node-1.c1", "node-2.c1"], while_attempt_below=1),
        "send_environment": fail_on(["node-3.c1"], "broken disk"),
        ("BootNewEnvKexec", "kexec"): fail_on(["node-5.c1", "node-6.c1"], "kexec failed"),
        ("BootNewEnvClassical", "wait_reboot"): fail_on(["node-6.c1"], "unreachable"),
    })
    macrosteps = deploy(setenv=[ImplementationSpec("SetDeploymentEnvUntrusted", retries=1)],
                        boot=[ImplementationSpec("BootNewEnvKexec"), ImplementationSpec("BootNewEnvClassical")])
    result = await make_workflow(library, macrosteps).run(nodes)
    assert_each_node_once(result, nodes)
    assert sorted(result.ko) == ["node-3.c1", "node-6.c1"]
    assert result.ko["node-6.c1"] == "BootNewEnvClassical-wait_reboot: unreachable"
    assert result.ok == ["node-1.c1", "node-2.c1", "node-4.c1", "node-5.c1", "node-7.c1", "node-8.c1"]
    # Each node ended exactly once in the output ("End of deployment" or "Deployment failed").
    ends = [t for t in output.texts(1) if "End of deployment for" in t or "Deployment failed for" in t]
    from kadeploy.nodeset import expand
    ended = [n for t in ends for n in expand(t.split(" for ")[1].split(" after")[0])]
    assert sorted(ended) == sorted(nodes)
    # Each final state reported exactly once per node.
    finals = [s.hostname for s in output.states if (s.state == "ok" and s.micro is None) or s.state == "ko"]
    assert sorted(finals) == sorted(nodes)


async def test_node_set_ids_are_unique_and_increasing(make_workflow, output):
    library = FakeLibrary({"reboot": fail_on(["node-4.c1"]), "sync": fail_on(["node-3.c1"])})
    await make_workflow(library).run(NODES)
    splits = [t for t in output.texts(1) if t.startswith("  [")]
    ids = [int(t.split("]")[0].strip(" [")) for t in splits]
    assert ids == [1, 2, 3, 4]


async def test_raisable_off_keeps_nodes_until_the_instance_is_done(make_workflow):
    """With raisable false, early finishers wait for the slow nodes of their instance."""
    library = FakeLibrary({
        ("SetDeploymentEnvUntrusted", "reboot"): fail_on(["node-4.c1"], "dead", while_attempt_below=1),
        ("SetDeploymentEnvUntrusted", "format_deploy_part"): sleep_on(["node-1.c1"], 0.2),
    })
    conf = {"reboot": MicroStepConf(raisable=False)}
    macrosteps = deploy(setenv=[ImplementationSpec("SetDeploymentEnvUntrusted", retries=1, microsteps=conf)])
    result = await make_workflow(library, macrosteps).run(NODES)
    assert result.ok == NODES
    order = [(c.implementation, c.micro, c.nodes) for c in library.calls]
    # node-4 failed at reboot but its retry only starts once nodes 1-3 finished the instance.
    retry = order.index(("SetDeploymentEnvUntrusted", "switch_pxe", ("node-4.c1",)))
    slow_done = order.index(("SetDeploymentEnvUntrusted", "format_deploy_part", tuple(NODES[:3])))
    assert retry > slow_done


async def test_raisable_on_retries_failed_nodes_at_once(make_workflow):
    library = FakeLibrary({
        ("SetDeploymentEnvUntrusted", "reboot"): fail_on(["node-4.c1"], "dead", while_attempt_below=1),
        ("SetDeploymentEnvUntrusted", "format_deploy_part"): sleep_on(["node-1.c1"], 0.2),
    })
    macrosteps = deploy(setenv=[ImplementationSpec("SetDeploymentEnvUntrusted", retries=1)])
    await make_workflow(library, macrosteps).run(NODES)
    order = [(c.implementation, c.micro, c.nodes) for c in library.calls]
    retry = order.index(("SetDeploymentEnvUntrusted", "switch_pxe", ("node-4.c1",)))
    slow_done = order.index(("SetDeploymentEnvUntrusted", "format_deploy_part", tuple(NODES[:3])))
    assert retry < slow_done


async def test_non_raisable_implementation_holds_ok_and_ko_together(make_workflow, output):
    library = FakeLibrary({"sync": fail_on(["node-2.c1"], "io error")})
    macrosteps = deploy(broadcast=[ImplementationSpec("BroadcastEnvKascade", raisable=False)])
    result = await make_workflow(library, macrosteps).run(NODES)
    assert result.ko == {"node-2.c1": "BroadcastEnvKascade-sync: io error"}
    assert_each_node_once(result)


async def test_concurrent_instances_of_the_same_macro_step(make_workflow):
    """Two node sets can be in the same macro-step at once."""
    library = FakeLibrary({
        ("SetDeploymentEnvUntrusted", "reboot"): fail_on(["node-4.c1"], while_attempt_below=1),
        ("BroadcastEnvKascade", "send_environment"): sleep_on(NODES[:3], 0.3),
    })
    macrosteps = deploy(setenv=[ImplementationSpec("SetDeploymentEnvUntrusted", retries=1)])
    wf = make_workflow(library, macrosteps)
    task = asyncio.create_task(wf.run(NODES))
    seen_both = False
    for _ in range(100):
        await asyncio.sleep(0.01)
        status = wf.status()
        if "BroadcastEnvKascade" in status and "SetDeploymentEnvUntrusted" in status:
            seen_both = True
            break
    result = await task
    assert seen_both and result.ok == NODES
