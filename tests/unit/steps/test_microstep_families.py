"""Micro-steps live by family, each family reading the run only through its Protocol (issue 15, point 3).

Every declared micro-step is run here on a real `ClusterRun` wrapped in a
view that answers only the members its family's Protocol lists: a step that
reads anything else fails with the name it reached for. Node commands go to
a recording executor; PXE profiles, the VLAN command, the power commands and
the custom broadcast are real files and processes.
"""

from __future__ import annotations

import inspect
import socket
import sys
import typing
from pathlib import Path
from typing import Any, Protocol

import pytest

from kadeploy.boot.commands import CommandTable, RemoteOp
from kadeploy.boot.pxe import BootTarget, PXEMethodSettings, PXEProfiles
from kadeploy.boot.window import RebootWindow
from kadeploy.engine import CustomOperation, ListOutput, MicroContext, StepResult
from kadeploy.errors import KadeployError
from kadeploy.remote.result import CommandResult
from kadeploy.steps.context import ClusterRun, FileRef
from kadeploy.steps.deploy import NodeSteps
from kadeploy.steps.micro import MICROSTEPS
from kadeploy.steps.micro.custom import CustomRun, run_custom_operation
from kadeploy.steps.plan import Archive, DeployPlan

N1, N2 = "node-1.c1.testbed", "node-2.c1.testbed"
NODES = [N1, N2]
PRE, POST, USER = Archive("pre.tgz"), Archive("post.tgz", script="post.sh"), Archive("user.tgz")


def family_protocol(step: Any) -> type:
    """The type of a micro-step's `run` parameter: its family's Protocol (`object` for a step reading nothing)."""
    return typing.get_type_hints(step)["run"]


def protocol_members(protocol: type) -> set[str]:
    return {name for cls in protocol.__mro__ if cls not in (object, Protocol, typing.Generic)
            for name in vars(cls) if not name.startswith("_")}


class SliceView:
    """The run as one family sees it: its Protocol's members, nothing else."""

    def __init__(self, run: ClusterRun, protocol: type) -> None:
        self._run = run
        self._family = protocol.__name__
        self._members = protocol_members(protocol)

    def __getattr__(self, name: str) -> Any:
        if name not in self._members:
            raise AttributeError(f"a {self._family} step read {name!r}, which {self._family} does not list")
        return getattr(self._run, name)


class RecordingExecutor:
    """Every node command succeeds (stdout empty); the commands are kept in order."""

    def __init__(self) -> None:
        self.commands: list[str] = []
        self.not_relayed: list[str] = []   # the commands run with relay=False (never through the tree)
        self.forgotten: list[str] = []

    async def run(self, hosts, command, *, input=None, timeout=None, env=None, relay=True) -> dict[str, CommandResult]:
        self.commands.append(command)
        if not relay:
            self.not_relayed.append(command)
        return {node: CommandResult(node, 0) for node in hosts}

    async def put(self, hosts, local_path, remote_path, *, timeout=None, mode=None) -> dict[str, CommandResult]:
        self.commands.append(f"put {local_path} {remote_path}")
        return {node: CommandResult(node, 0) for node in hosts}

    def forget(self, hostnames) -> None:
        self.forgotten.extend(hostnames)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def run(tmp_path: Path) -> ClusterRun:
    for name in ("pre.tgz", "post.tgz", "user.tgz", "image.tgz", "script.sh"):
        (tmp_path / name).write_bytes(b"x")
    plan = DeployPlan(cluster="c1", block_device="/dev/sda", deploy_part_num=3, prod_part_num=2, tmp_part_num=4,
                      swap_part_num=1, env_kernel="/vmlinuz", env_initrd="/initrd.img", vlan="100",
                      preinstall=PRE, admin_postinstalls=(POST,), user_postinstalls=(USER,))
    commands = CommandTable({"reboot": [RemoteOp("soft", "true")], "power_on": [RemoteOp("soft", "true")],
                             "power_status": [RemoteOp("soft", "echo on")]})
    return ClusterRun(
        wid="D-1", user="bob", cluster="c1", plan=plan, hosts={N1: "127.0.0.1", N2: "127.0.0.1"},
        targets={N1: BootTarget(N1, "10.200.1.1"), N2: BootTarget(N2, "10.200.1.2")},
        executor=RecordingExecutor(),  # type: ignore[arg-type]
        reboot_window=RebootWindow(2), gate=None, commands=commands,
        pxe=PXEProfiles(PXEMethodSettings("PXElinux", tmp_path / "tftpboot", export_server="10.200.0.1")),
        pxe_repository=tmp_path, deploy_kernel="deploy-vmlinuz", deploy_initrd="deploy-initrd",
        deploy_kernel_params="rw", reboot_timeout=lambda n: 0.3, kexec_timeout=lambda n: 0.3,
        sleep_before_ping=0.0, probe_interval=0.1, check_window=10, ssh_port=_closed_port(),
        deploy_env_port=_closed_port(), partitioning_script="parted", bootloader_script="grub-install",
        custom_broadcast_cmd="test -s ENVFILE && test -s NODEFILE", image=FileRef(tmp_path / "image.tgz", 1),
        ssh_key=b"ssh-ed25519 AAAA bob", archives={a: FileRef(tmp_path / a.file, 1) for a in (PRE, POST, USER)},
        custom_files={"script.sh": FileRef(tmp_path / "script.sh", 1)},
        vlan_command=lambda nodes, vlan: "true", vlan_hosts={N1: "127.0.0.2", N2: "127.0.0.2"},
        power_kind="status",
    )


def context(micro: str, macro: str = "BootNewEnv", implementation: str = "BootNewEnvClassical") -> MicroContext:
    return MicroContext("D-1", "c1", "Deploy", macro, implementation, micro, 0, None, ListOutput(), 10.0)


#: where a micro-step runs when the default (BootNewEnvClassical) is not one of its places
CONTEXTS = {
    "send_environment": [("BroadcastEnv", "BroadcastEnvCustom")],
    "switch_pxe": [("SetDeploymentEnv", "SetDeploymentEnvUntrusted"), ("BootNewEnv", "BootNewEnvClassical")],
    "kexec": [("SetDeploymentEnv", "SetDeploymentEnvKexec"), ("BootNewEnv", "BootNewEnvKexec")],
    "set_vlan": [("SetDeploymentEnv", "SetDeploymentEnvUntrusted"), ("BootNewEnv", "BootNewEnvClassical")],
}
#: micro-steps whose nodes are not back here: the probe finds nothing listening
EXPECTED_KO = {"wait_reboot"}
CASES = [(micro, macro, implementation) for micro in MICROSTEPS.names()
         for macro, implementation in CONTEXTS.get(micro, [("BootNewEnv", "BootNewEnvClassical")])]


def test_every_microstep_is_a_function_named_after_it_in_a_family_module():
    for declaration in MICROSTEPS.declarations():
        step = declaration.value
        assert step.__name__ == declaration.name
        module = step.__module__
        assert module.startswith("kadeploy.steps.micro.") and module != "kadeploy.steps.micro.shared", module


def test_each_family_reads_the_run_through_one_protocol_a_cluster_run_provides(run):
    protocols: dict[str, set[type]] = {}
    for declaration in MICROSTEPS.declarations():
        protocol = family_protocol(declaration.value)
        protocols.setdefault(declaration.value.__module__, set()).add(protocol)
        if protocol is object:
            continue
        assert getattr(protocol, "_is_protocol", False), f"{declaration.name} reads a {protocol}, not a Protocol"
        assert protocol.__module__ == declaration.value.__module__, "a family declares its own slice"
        missing = {name for name in protocol_members(protocol) if not hasattr(run, name)}
        assert not missing, f"{protocol.__name__} lists what a ClusterRun does not have: {missing}"
    assert all(len(found) == 1 for found in protocols.values()), protocols
    # each slice is a part of the run, not the whole of it
    for (found,) in protocols.values():
        if found is not object:
            assert len(protocol_members(found)) < len(vars(run)) // 2, found.__name__


@pytest.mark.parametrize(("micro", "macro", "implementation"), CASES, ids=[f"{m}-{i}" for m, _, i in CASES])
async def test_each_microstep_runs_on_its_familys_slice_alone(run, micro, macro, implementation):
    step = MICROSTEPS.get(micro)
    view = SliceView(run, family_protocol(step))
    result = await step(view, context(micro, macro, implementation), list(NODES))
    assert isinstance(result, StepResult)
    if micro in EXPECTED_KO:
        assert sorted(result.ko) == NODES and not result.ok
    else:
        assert sorted(result.ok) == NODES and not result.ko, result.ko


@pytest.mark.parametrize(("micro", "macro", "implementation"), [
    ("kexec", "BootNewEnv", "BootNewEnvKexec"),
    ("reboot_from_deploy_env", "BootNewEnv", "BootNewEnvClassical"),
    ("switch_root", "BootNewEnv", "BootNewEnvPivotRoot")])
async def test_a_command_that_takes_its_node_down_is_never_relayed(run, micro, macro, implementation):
    """A node that kexecs, reboots or switches root must not be a relay of the executor's tree: its subtree
    would be cut mid-command (seen at 1,000 fake nodes: Kexec fell back to Classical on a relay's children)."""
    result = await MICROSTEPS.get(micro)(run, context(micro, macro, implementation), list(NODES))
    assert sorted(result.ok) == NODES, result.ko
    assert run.executor.not_relayed and run.executor.not_relayed[-1] == run.executor.commands[-1]


async def test_other_node_commands_may_go_through_the_tree(run):
    await MICROSTEPS.get("format_deploy_part")(run, context("format_deploy_part"), list(NODES))
    assert run.executor.commands and not run.executor.not_relayed


@pytest.mark.parametrize("action", ["exec", "send", "run"])
async def test_custom_operations_run_on_the_custom_slice_alone(run, action):
    operation = CustomOperation(action, "op", command="hostname", file="script.sh", destination="/root")
    result = await run_custom_operation(SliceView(run, CustomRun), operation,  # type: ignore[arg-type]
                                        context("custom_post_sync-op"), list(NODES))
    assert sorted(result.ok) == NODES
    sent = run.executor.commands[-1]
    expected = {"exec": "hostname", "send": "cat - > /root/script.sh", "run": "KADEPLOY_CLUSTER"}[action]
    assert expected in sent, sent


async def test_node_steps_dispatch_by_name_to_the_declared_step(run):
    steps = NodeSteps(run, "Deploy")
    result = await steps.run("format_deploy_part", context("format_deploy_part"), [N1])
    assert result.ok == [N1]
    assert len(run.executor.commands) == 1 and "mkfs" in run.executor.commands[0]
    power = await steps.run("power", context("power", "Power", "PowerStatus"), [N1, N2])
    assert sorted(power.ok) == NODES and run.power_output == {N1: "on", N2: "on"}


async def test_an_undeclared_microstep_is_refused_by_name(run):
    with pytest.raises(KadeployError, match='"load_drivers" is not supported'):
        await NodeSteps(run, "Deploy").run("load_drivers", context("load_drivers"), [N1])


def test_micro_package_names_every_family_module():
    families = {declaration.value.__module__ for declaration in MICROSTEPS.declarations()}
    package = sys.modules["kadeploy.steps.micro"]
    assert {f"kadeploy.steps.micro.{name}" for name in package.__all__
            if inspect.ismodule(getattr(package, name))} == families
