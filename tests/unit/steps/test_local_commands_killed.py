"""`set_vlan` and BroadcastEnvCustom kill their command's whole process group (issue 15, point 3).

Before, `set_vlan` killed only its shell: a `kavlan` started by the
template outlived the step. The templates here start a child and wait.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from test_custom_broadcast import _steps as custom_broadcast_steps
from test_vlan_steps import N1, cluster_run, context

from kadeploy.steps.deploy import NodeSteps
from tests.processgroups import CHILD_AND_WAIT, group_of, survivors


async def test_set_vlan_command_timed_out_fails_the_nodes_and_leaves_no_process(tmp_path):
    pidfile = tmp_path / "pid"
    run = cluster_run(tmp_path, hosts={N1: "10.200.1.1"}, vlan_hosts={N1: "10.200.129.1"},
                      set_cmd=CHILD_AND_WAIT.format(pidfile=pidfile))
    ctx = replace(context("BootNewEnv", "BootNewEnvKexec", "set_vlan"), timeout=0.5)
    result = await NodeSteps(run, "Deploy").run("set_vlan", ctx, [N1])
    assert result.ko == {N1: "The VLAN command (network/vlan/set_cmd) timed out after 0.5s"}
    assert run.hosts[N1] == "10.200.1.1"
    assert await survivors(int(pidfile.read_text())) == []


async def test_set_vlan_cancelled_leaves_no_process(tmp_path):
    pidfile = tmp_path / "pid"
    run = cluster_run(tmp_path, hosts={N1: "10.200.1.1"}, vlan_hosts={N1: "10.200.129.1"},
                      set_cmd=CHILD_AND_WAIT.format(pidfile=pidfile))
    task = asyncio.create_task(NodeSteps(run, "Deploy").run(
        "set_vlan", context("BootNewEnv", "BootNewEnvKexec", "set_vlan"), [N1]))
    pgid = await group_of(pidfile)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    assert await survivors(pgid) == []


async def test_custom_broadcast_timed_out_fails_every_node_and_leaves_no_process(tmp_path):
    pidfile = tmp_path / "pid"
    steps, ctx = custom_broadcast_steps(tmp_path, CHILD_AND_WAIT.format(pidfile=pidfile))
    result = await steps.run("send_environment", replace(ctx, timeout=0.5), ["n1", "n2"])
    error = "The broadcast command (localops/broadcastenv/cmd) timed out after 0.5s"
    assert result.ok == [] and result.ko == {"n1": error, "n2": error}
    assert await survivors(int(pidfile.read_text())) == []


async def test_custom_broadcast_cancelled_leaves_no_process_nor_node_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)
    pidfile = tmp_path / "pid"
    steps, ctx = custom_broadcast_steps(tmp_path, CHILD_AND_WAIT.format(pidfile=pidfile))
    task = asyncio.create_task(steps.run("send_environment", ctx, ["n1", "n2"]))
    pgid = await group_of(pidfile)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    assert await survivors(pgid) == []
    assert list(tmp_path.glob("kadeploy-nodes-*")) == []
