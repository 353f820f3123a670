"""`--vlan` in the micro-steps: where nodes are reached and which PXE profiles are written.

Kadeploy3 (`microsteps.rb`): after `set_vlan` the nodes are waited for at their
VLAN address; `switch_pxe` writes the final profile under the VLAN address as
well as the default one. The set_cmd here is a real shell command writing a
file, the PXE profiles are real files and the probes real TCP connections on
loopback addresses.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from kadeploy.boot.pxe import BootTarget, PXEMethodSettings, PXEProfiles
from kadeploy.boot.window import RebootWindow
from kadeploy.engine import ListOutput, MicroContext
from kadeploy.remote import Executor
from kadeploy.steps.context import ClusterRun
from kadeploy.steps.deploy import NodeSteps
from kadeploy.steps.plan import DeployPlan
from tests.ports import free_port

N1, N2 = "node-1.c1.testbed", "node-2.c1.testbed"


def cluster_run(tmp_path: Path, *, hosts: dict[str, str], vlan_hosts: dict[str, str], vlan: str | None = "100",
                set_cmd: str = "echo VLAN_ID NODES >> {log}", ssh_port: int = 22, reboot_kind: str = "") -> ClusterRun:
    log = tmp_path / "set_cmd.log"

    def vlan_command(nodes: list[str], vlan_id: str) -> str:
        return set_cmd.format(log=log).replace("VLAN_ID", vlan_id).replace("NODES", " ".join(nodes))

    targets = {N1: BootTarget(N1, "10.200.1.1", "02:00:0a:c8:01:01"), N2: BootTarget(N2, "10.200.1.2")}
    return ClusterRun(
        wid="D-1", user="bob", cluster="c1",
        plan=DeployPlan(cluster="c1", block_device="/dev/sda", deploy_part_num=3, vlan=vlan),
        hosts=hosts, targets=targets, executor=Executor(None), reboot_window=RebootWindow(1), gate=None,
        commands=None,  # type: ignore[arg-type]  # no power command runs here
        pxe=PXEProfiles(PXEMethodSettings("PXElinux", tmp_path / "tftpboot", export_server="10.200.0.1")),
        pxe_repository=tmp_path / "tftpboot", deploy_kernel="kernels/deploy-vmlinuz",
        deploy_initrd="kernels/deploy-initrd", deploy_kernel_params="rw",
        reboot_timeout=lambda n: 5.0, kexec_timeout=lambda n: 5.0, sleep_before_ping=0.0, probe_interval=0.1,
        check_window=10, ssh_port=ssh_port, deploy_env_port=free_port(), vlan_command=vlan_command,
        vlan_hosts=vlan_hosts, reboot_kind=reboot_kind)


def context(macro: str, implementation: str, micro: str, kind: str = "Deploy") -> MicroContext:
    return MicroContext("D-1", "c1", kind, macro, implementation, micro, 0, None, ListOutput(), 10.0)


def profiles(tmp_path: Path) -> list[str]:
    directory = tmp_path / "tftpboot" / "pxelinux.cfg"
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


async def test_set_vlan_moves_the_nodes_to_their_vlan_address_and_default_brings_them_back(tmp_path):
    run = cluster_run(tmp_path, hosts={N1: N1, N2: N2}, vlan_hosts={N1: "10.200.129.1", N2: "10.200.129.2"})
    steps = NodeSteps(run, "Deploy")
    result = await steps.run("set_vlan", context("BootNewEnv", "BootNewEnvClassical", "set_vlan"), [N1, N2])
    assert result.ok == [N1, N2] and not result.ko
    assert run.subset([N1, N2]) == {N1: "10.200.129.1", N2: "10.200.129.2"}
    # SetDeploymentEnv puts them back in the default VLAN, at their names again
    await steps.run("set_vlan", context("SetDeploymentEnv", "SetDeploymentEnvUntrusted", "set_vlan"), [N1])
    assert run.subset([N1, N2]) == {N1: N1, N2: "10.200.129.2"}
    assert (tmp_path / "set_cmd.log").read_text().splitlines() == [f"100 {N1} {N2}", f"DEFAULT {N1}"]


async def test_nodes_stay_where_they_were_when_the_set_cmd_fails(tmp_path):
    run = cluster_run(tmp_path, hosts={N1: "10.200.1.1"}, vlan_hosts={N1: "10.200.129.1"},
                      set_cmd="echo 'kavlan: VLAN_ID is not yours' >&2; exit 1")
    result = await NodeSteps(run, "Deploy").run("set_vlan", context("BootNewEnv", "BootNewEnvKexec", "set_vlan"),
                                                [N1])
    assert result.ko == {N1: "kavlan: 100 is not yours"}
    assert run.hosts[N1] == "10.200.1.1"


async def test_final_profile_is_written_under_the_vlan_address_as_well(tmp_path):
    run = cluster_run(tmp_path, hosts={N1: N1, N2: N2}, vlan_hosts={N1: "10.200.129.1", N2: "10.200.129.2"})
    result = await NodeSteps(run, "Deploy").run(
        "switch_pxe", context("BootNewEnv", "BootNewEnvClassical", "switch_pxe"), [N1, N2])
    assert result.ok == [N1, N2]
    # 0AC80101 / 0AC80102: the default addresses; 0AC88101 / 0AC88102: 10.200.129.1 and .2
    assert profiles(tmp_path) == ["0AC80101", "0AC80102", "0AC88101", "0AC88102"]
    assert "APPEND hd0 3" in (tmp_path / "tftpboot" / "pxelinux.cfg" / "0AC88101").read_text()


async def test_deployment_environment_profile_is_only_written_for_the_default_vlan(tmp_path):
    # SetDeploymentEnv moves the nodes back to the default VLAN before they boot
    run = cluster_run(tmp_path, hosts={N1: N1}, vlan_hosts={N1: "10.200.129.1"})
    await NodeSteps(run, "Deploy").run(
        "switch_pxe", context("SetDeploymentEnv", "SetDeploymentEnvUntrusted", "switch_pxe"), [N1])
    assert profiles(tmp_path) == ["0AC80101"]


async def test_reboot_into_the_deployment_environment_in_a_vlan_writes_its_vlan_profile(tmp_path):
    run = cluster_run(tmp_path, hosts={N1: N1}, vlan_hosts={N1: "10.200.129.1"}, reboot_kind="deploy_env")
    await NodeSteps(run, "Reboot").run("switch_pxe", context("Reboot", "RebootDeployEnv", "switch_pxe", "Reboot"),
                                       [N1])
    assert profiles(tmp_path) == ["0AC80101", "0AC88101"]
    assert "deploy-vmlinuz" in (tmp_path / "tftpboot" / "pxelinux.cfg" / "0AC88101").read_text()


async def test_without_vlan_one_profile_per_node(tmp_path):
    run = cluster_run(tmp_path, hosts={N1: N1}, vlan_hosts={}, vlan=None)
    await NodeSteps(run, "Deploy").run("switch_pxe", context("BootNewEnv", "BootNewEnvClassical", "switch_pxe"),
                                       [N1])
    assert profiles(tmp_path) == ["0AC80101"]


@pytest.fixture
def listener_on_127_0_0_2() -> Iterator[int]:
    """An open port on 127.0.0.2 (the node's 'VLAN address'); 127.0.0.3 (its default one) has none."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.2", 0))
    server.listen(16)
    yield server.getsockname()[1]
    server.close()


async def test_after_set_vlan_the_nodes_are_waited_for_at_their_vlan_address(tmp_path, listener_on_127_0_0_2):
    port = listener_on_127_0_0_2
    run = cluster_run(tmp_path, hosts={N1: "127.0.0.3"}, vlan_hosts={N1: "127.0.0.2"}, ssh_port=port)
    steps = NodeSteps(run, "Deploy")
    # before the move, the node is looked for where it is no more: nothing answers there
    run.reboot_timeout = lambda n: 1.0
    missed = await steps.run("wait_reboot", context("BootNewEnv", "BootNewEnvClassical", "wait_reboot"), [N1])
    assert N1 in missed.ko
    await steps.run("set_vlan", context("BootNewEnv", "BootNewEnvClassical", "set_vlan"), [N1])
    run.reboot_timeout = lambda n: 5.0
    reached = await asyncio.wait_for(
        steps.run("wait_reboot", context("BootNewEnv", "BootNewEnvClassical", "wait_reboot"), [N1]), 10)
    assert reached.ok == [N1], reached.ko


async def test_relays_get_addresses_the_server_resolved(tmp_path):
    run = cluster_run(tmp_path, hosts={N1: "localhost", N2: "10.200.1.2"}, vlan_hosts={})
    relays, unresolved = await run.relay_addresses([N1, N2])
    assert dict(relays) == {N1: "127.0.0.1", N2: "10.200.1.2"} and unresolved == {}
