"""Timeouts, retries and fallbacks between implementations (reference 5.5)."""

from __future__ import annotations

import asyncio

from engine_fakes import NODES, FakeLibrary, assert_each_node_once, deploy, fail, fail_on, never

from kadeploy.engine import ImplementationSpec, MicroStepConf


async def test_macro_step_timeout_cancels_the_step_and_fails_its_nodes(make_workflow, output):
    library = FakeLibrary({"wait_reboot": never})
    macrosteps = deploy(setenv=[ImplementationSpec("SetDeploymentEnvUntrusted", timeout=0.2)])
    result = await asyncio.wait_for(make_workflow(library, macrosteps).run(NODES), 5)
    assert result.ko == {n: "SetDeploymentEnvUntrusted-wait_reboot: Timeout in the SetDeploymentEnvUntrusted step"
                         for n in NODES}
    # The never-ending step was cancelled (its remote processes would be killed there).
    assert [c.micro for c in library.cancelled] == ["wait_reboot"]
    assert library.running == 0
    assert "Timeout in the SetDeploymentEnvUntrusted step, let's kill the instance" in output.texts(verbosity=1)
    # stepN_duration is the timeout value on timeout
    assert result.records["node-1.c1"].steps[0].duration == 0.2


async def test_timeout_only_fails_nodes_still_in_the_instance(make_workflow):
    # node-4 fails fast at reboot and leaves; the others hang at wait_reboot and time out.
    library = FakeLibrary({"reboot": fail_on(["node-4.c1"], "no reboot"), "wait_reboot": never})
    macrosteps = deploy(setenv=[ImplementationSpec("SetDeploymentEnvUntrusted", timeout=0.2)])
    result = await asyncio.wait_for(make_workflow(library, macrosteps).run(NODES), 5)
    assert result.ko["node-4.c1"] == "SetDeploymentEnvUntrusted-reboot: no reboot"
    assert result.ko["node-1.c1"].endswith("Timeout in the SetDeploymentEnvUntrusted step")
    assert_each_node_once(result)


async def test_micro_step_timeout(make_workflow, output):
    library = FakeLibrary({"send_environment": never})
    conf = {"send_environment": MicroStepConf(timeout=0.1)}
    macrosteps = deploy(broadcast=[ImplementationSpec("BroadcastEnvKascade", microsteps=conf)])
    result = await asyncio.wait_for(make_workflow(library, macrosteps).run(NODES), 5)
    assert result.ko["node-2.c1"] == "BroadcastEnvKascade-send_environment: Timeout in the send_environment step"
    assert "Timeout in send_environment before the end of the step, let's kill the instance" in output.texts(1)


async def test_micro_step_retries_rerun_only_that_micro_step(make_workflow):
    library = FakeLibrary({"send_environment": fail_on(["node-1.c1"], while_micro_attempt_below=2)})
    conf = {"send_environment": MicroStepConf(retries=2)}
    macrosteps = deploy(broadcast=[ImplementationSpec("BroadcastEnvKascade", microsteps=conf)])
    result = await make_workflow(library, macrosteps).run(NODES)
    assert result.ok == NODES
    sends = [c for c in library.calls if c.micro == "send_environment"]
    assert [(c.nodes, c.micro_attempt) for c in sends] == [
        (tuple(NODES), 0), (("node-1.c1",), 1), (("node-1.c1",), 2)]
    # The macro-step itself was not retried.
    assert result.records["node-1.c1"].steps[1].retries == 0


async def test_fallback_from_never_ending_implementation_to_the_next(make_workflow):
    library = FakeLibrary({("SetDeploymentEnvKexec", "wait_reboot"): never})
    macrosteps = deploy(setenv=[ImplementationSpec("SetDeploymentEnvKexec", timeout=0.15),
                                ImplementationSpec("SetDeploymentEnvUntrusted", timeout=2)])
    result = await asyncio.wait_for(make_workflow(library, macrosteps).run(NODES), 5)
    assert result.ok == NODES
    assert library.ran("SetDeploymentEnvUntrusted", "format_deploy_part") == NODES
    assert library.ran("SetDeploymentEnvKexec", "format_deploy_part") == []
    step = result.records["node-1.c1"].steps[0]
    assert (step.implementation, step.retries, step.timeout) == ("SetDeploymentEnvUntrusted", 1, 2)


async def test_fail_timeout_retry_success_chain(make_workflow, output):
    """Kadeploy3's `[[Fail],[Timeout],[Retry],[Success]]`: the third implementation succeeds on its retry."""
    library = FakeLibrary({
        ("Fail", "step"): fail("always"),
        ("Timeout", "step"): never,
        ("Retry", "step"): fail_on(NODES, "first try", while_attempt_below=1),
    })
    macrosteps = [("SetDeploymentEnv", [ImplementationSpec("Fail"), ImplementationSpec("Timeout", timeout=0.1),
                                        ImplementationSpec("Retry", retries=1), ImplementationSpec("Success")]),
                  ("BroadcastEnv", [ImplementationSpec("BroadcastEnvChain")])]
    result = await asyncio.wait_for(make_workflow(library, macrosteps).run(NODES), 5)
    assert result.ok == NODES
    assert [(c.implementation, c.attempt) for c in library.calls if c.micro == "step"] == [
        ("Fail", 0), ("Timeout", 0), ("Retry", 0), ("Retry", 1)]
    assert library.ran("Success", "step") == []
    step = result.records["node-1.c1"].steps[0]
    assert (step.implementation, step.retries) == ("Retry", 3)  # fallback, fallback, retry
    performing = [t for t in output.texts(1) if t.startswith("Performing")]
    assert performing == ["Performing a Deploy[Fail] step", "Performing a Deploy[Timeout] step",
                          "Performing a Deploy[Retry] step", "Performing a Deploy[Retry] step",
                          "Performing a Deploy[BroadcastEnvChain] step"]


async def test_exhausted_chain_fails_with_last_error(make_workflow):
    library = FakeLibrary({("BootNewEnvKexec", "wait_reboot"): fail("kexec hung"),
                           ("BootNewEnvHardReboot", "reboot"): fail("hard_reboot command is not provided")})
    macrosteps = deploy(boot=[ImplementationSpec("BootNewEnvKexec", retries=1),
                              ImplementationSpec("BootNewEnvHardReboot")])
    result = await make_workflow(library, macrosteps).run(NODES)
    assert result.ko["node-1.c1"] == "BootNewEnvHardReboot-reboot: hard_reboot command is not provided"
    assert result.records["node-1.c1"].steps[2].retries == 2


async def test_attempt_counts_previous_tries_of_the_implementation(make_workflow):
    library = FakeLibrary({("SetDeploymentEnvUntrusted", "wait_reboot"): fail_on(NODES, while_attempt_below=2)})
    macrosteps = deploy(setenv=[ImplementationSpec("SetDeploymentEnvUntrusted", retries=2)])
    result = await make_workflow(library, macrosteps).run(NODES)
    assert result.ok == NODES
    assert [c.attempt for c in library.calls if c.micro == "reboot"] == [0, 1, 2]


async def test_step_gets_remaining_macro_budget_as_timeout(make_workflow):
    library = FakeLibrary()
    macrosteps = deploy(setenv=[ImplementationSpec("SetDeploymentEnvUntrusted", timeout=10)])
    await make_workflow(library, macrosteps).run(NODES)
    budgets = [c.timeout for c in library.calls if c.implementation == "SetDeploymentEnvUntrusted"]
    assert all(b is not None and 9 < b <= 10 for b in budgets)
    assert budgets == sorted(budgets, reverse=True)
    assert all(c.timeout is None for c in library.calls if c.implementation == "BroadcastEnvKascade")
