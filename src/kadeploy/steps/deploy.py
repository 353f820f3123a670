"""The micro-steps of deployment, reboot and power workflows (reference 5.2, 5.4, 6).

`NodeSteps` implements the engine's `StepLibrary` for one cluster of one
operation: each micro-step is a method `ms_<name>` with one job, named as in
Kadeploy3's output, that runs node commands through the executor, writes PXE
profiles, runs power commands, probes nodes or broadcasts the image, and
returns which nodes succeeded and why the others failed. Cancellation (a
timeout or a kill) propagates through the awaits; the executor, the broadcast
and the power commands kill what they started when cancelled.
"""

from __future__ import annotations

import asyncio
import os
import random
import shlex
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from kadeploy.boot import power as boot_power
from kadeploy.boot.probe import wait_reboot
from kadeploy.boot.process import run_process
from kadeploy.boot.pxe import LocalBootEnv
from kadeploy.broadcast import broadcast
from kadeploy.engine import CustomOperation, MicroContext, StepResult
from kadeploy.errors import ErrorCode, KadeployError
from kadeploy.nodeset import fold
from kadeploy.remote.result import CommandResult
from kadeploy.steps import commands
from kadeploy.steps.context import ClusterRun
from kadeploy.steps.macrosteps import canonical_microsteps, deploy_implementation
from kadeploy.steps.pruning import prune
from kadeploy.states import NodeState
from kadeploy.vocabulary import REGISTRIES, Kind

MicroStep = Callable[["NodeSteps", MicroContext, list[str]], Awaitable[StepResult]]

#: Every micro-step is declared by the `@microstep` line above its method; the
#: configuration, the API and the docs read this registry.
MICROSTEPS = REGISTRIES[Kind.MICROSTEP]


#: BroadcastEnvCustom's method is the administrator's command, run here (`_custom_broadcast`).
REGISTRIES[Kind.BROADCAST].declare("custom", "server command",
                                   "the administrator's command (localops/broadcastenv/cmd), run on the server")


def microstep(name: str, summary: str) -> Callable[[MicroStep], MicroStep]:
    """Declare the method below as the micro-step `name` (Kadeploy3's `ms_<name>`); `summary` goes to the docs."""
    return MICROSTEPS.decorator(name, summary)

#: seconds a short control command may take when no step timeout bounds it
DEFAULT_COMMAND_TIMEOUT = 300.0


class NodeSteps:
    """`StepLibrary` for deploy, reboot and power workflows of one cluster."""

    def __init__(self, run: ClusterRun, kind: str) -> None:
        self.run_ctx = run
        self.kind = kind  # "Deploy", "Reboot", "Power"

    # -- StepLibrary -------------------------------------------------------------------

    def microsteps(self, implementation: str) -> list[str]:
        canonical = self._canonical(implementation)
        if self.kind != "Deploy":
            return [m for m in canonical if m != "set_vlan" or self.run_ctx.plan.vlan]
        if implementation.endswith("Dummy"):
            return list(canonical)
        return prune(implementation, canonical, self.run_ctx.plan,
                     has_admin_postinstall=bool(self.run_ctx.plan.admin_postinstalls))

    def bypassed(self, implementation: str) -> list[str]:
        kept = set(self.microsteps(implementation))
        return [name for name in self._canonical(implementation) if name not in kept]

    def _canonical(self, implementation: str) -> tuple[str, ...]:
        canonical = canonical_microsteps(self.kind, implementation)
        if canonical is None:
            raise KadeployError(ErrorCode.INVALID_OPTION, f"Unknown macro-step implementation {implementation!r}")
        return canonical

    async def run(self, micro: str, ctx: MicroContext, nodes: list[str]) -> StepResult:
        try:
            step: MicroStep = MICROSTEPS.get(micro)
        except ValueError as exc:
            raise KadeployError(ErrorCode.INVALID_OPTION, str(exc)) from None
        return await step(self, ctx, nodes)

    async def run_custom(self, op: CustomOperation, ctx: MicroContext, nodes: list[str]) -> StepResult:
        run = self.run_ctx
        variables = commands.deploy_variables(run.plan, run.version)
        timeout = op.timeout or ctx.timeout
        if op.action == "exec":
            return await self._remote(nodes, f"{commands.export_statement(variables)}{op.command}", timeout=timeout)
        file_ref = run.custom_files.get(op.file or "")
        if file_ref is None:
            raise KadeployError(ErrorCode.INVALID_CUSTOMOP, f"custom operation {op.name}: file {op.file} not fetched")
        if op.action == "send":
            destination = commands.custom_send_destination(op.destination or "", variables)
            target = destination.rstrip("/") + "/" + Path(op.file or "").name
            cmd = f"mkdir -p {shlex.quote(destination)} && cat - > {shlex.quote(target)}"
            return await self._remote(nodes, cmd, input=file_ref.path, timeout=timeout)
        return await self._remote(nodes, commands.run_script(variables, op.params or ""),
                                  input=file_ref.path, timeout=timeout)

    # -- helpers -------------------------------------------------------------------------

    async def _remote(self, nodes: list[str], command: str, *, input: bytes | Path | None = None,
                      timeout: float | None = None, env: dict[str, str] | None = None) -> StepResult:
        """Run a command on nodes; exit status 0 is OK, anything else KO with its stderr."""
        results = await self.run_ctx.executor.run(self.run_ctx.subset(nodes), command, input=input,
                                                  timeout=timeout or DEFAULT_COMMAND_TIMEOUT, env=env)
        self._debug(command, results)
        return _verdict(nodes, results)

    def _debug(self, command: str, results: dict[str, CommandResult]) -> None:
        if self.run_ctx.debug is None:
            return
        for node, result in results.items():
            self.run_ctx.debug(node, f"COMMAND: {command}")
            for stream, text in (("STDOUT", result.stdout), ("STDERR", result.stderr)):
                for line in text.splitlines():
                    self.run_ctx.debug(node, f"{stream}: {line}")
            self.run_ctx.debug(node, f"STATUS: {result.exit_status if result.error is None else result.error}")

    def _variables(self) -> dict[str, str]:
        return commands.deploy_variables(self.run_ctx.plan, self.run_ctx.version)

    # -- dummy ---------------------------------------------------------------------------

    @microstep("dummy", "sleep a moment; touches no node (Kadeploy3's test step)")
    async def ms_dummy(self, ctx: MicroContext, nodes: list[str]) -> StepResult:
        await asyncio.sleep(random.uniform(0.2, 1.0))
        return StepResult(ok=list(nodes))

    # -- PXE and VLAN --------------------------------------------------------------------

    @microstep("switch_pxe", "write the nodes' PXE profiles for the next boot (deployment, deployed or user's system)")
    async def ms_switch_pxe(self, ctx: MicroContext, nodes: list[str]) -> StepResult:
        run = self.run_ctx
        # outside SetDeploymentEnv, set_vlan moves the nodes into --vlan next: they boot there
        targets = run.boot_targets(nodes, into_vlan=ctx.macro != "SetDeploymentEnv")
        if ctx.macro == "SetDeploymentEnv" or run.reboot_kind == "deploy_env":
            return await asyncio.to_thread(run.pxe.deploy_kernel, targets, run.deploy_kernel,
                                           run.deploy_initrd, run.deploy_kernel_params)
        if run.user_pxe_profile is not None:
            return await asyncio.to_thread(run.pxe.user_profile, targets, run.user_pxe_profile, run.user,
                                           run.user_pxe_singularities, run.user_pxe_files)
        plan = run.plan
        env = LocalBootEnv(os=plan.os_kind, kernel=plan.env_kernel, initrd=plan.env_initrd,
                           kernel_params=plan.kernel_params, hypervisor=plan.hypervisor,
                           hypervisor_params=plan.hypervisor_params)
        return await asyncio.to_thread(run.pxe.local_boot, targets, plan.disk_index, plan.final_boot_partition,
                                       env, block_device=plan.block_device)

    @microstep("set_vlan", "move the nodes to the requested VLAN (the administrator's set_cmd)")
    async def ms_set_vlan(self, ctx: MicroContext, nodes: list[str]) -> StepResult:
        run = self.run_ctx
        vlan = "DEFAULT" if ctx.macro == "SetDeploymentEnv" else (run.plan.vlan or "DEFAULT")
        if run.vlan_command is None:
            return StepResult(ko={n: "No VLAN command is configured (network/vlan/set_cmd)" for n in nodes})
        timeout = ctx.timeout or DEFAULT_COMMAND_TIMEOUT
        outcome = await run_process(run.vlan_command(nodes, vlan), timeout)
        if outcome.timed_out:
            return StepResult(ko={n: f"The VLAN command (network/vlan/set_cmd) timed out after {timeout:g}s"
                                  for n in nodes})
        if outcome.exit_status != 0:
            return StepResult(ko={n: outcome.stderr.strip() or "set_vlan failed" for n in nodes})
        run.moved_to_vlan(nodes, vlan)
        return StepResult(ok=list(nodes))

    # -- reboot, power, detection ----------------------------------------------------------

    @microstep("reboot", "reboot through the power commands (soft, hard, very_hard escalation)")
    async def ms_reboot(self, ctx: MicroContext, nodes: list[str]) -> StepResult:
        run = self.run_ctx
        if ctx.implementation == "BootNewEnvHardReboot":
            level = "hard"
        else:
            level = boot_power.retry_start_level(run.reboot_level, ctx.attempt)
        for node in nodes:
            ctx.set_state(node, NodeState.REBOOT_IN_PROGRESS)
        self.run_ctx.executor.forget(nodes)
        return await boot_power.escalate("reboot", nodes, level, run.commands, run.reboot_window,
                                         command_timeout=min(ctx.timeout or 120.0, 120.0),
                                         output=lambda level_, text: ctx.output.log(level_, ctx.prefix + text,
                                                                                    ctx.nodeset_id),
                                         gate=run.gate)

    @microstep("reboot_from_deploy_env", "reboot from the deployment environment (`reboot` over SSH)")
    async def ms_reboot_from_deploy_env(self, ctx: MicroContext, nodes: list[str]) -> StepResult:
        run = self.run_ctx
        for node in nodes:
            ctx.set_state(node, NodeState.REBOOT_IN_PROGRESS)
        async with run.reboot_window.slot():
            result = await self._remote(nodes, commands.reboot_from_deploy_env(), timeout=30)
        run.executor.forget(nodes)
        return result

    @microstep("wait_reboot", "wait until the nodes answer on their SSH port again (and the old one is closed)")
    async def ms_wait_reboot(self, ctx: MicroContext, nodes: list[str]) -> StepResult:
        run = self.run_ctx
        n = len(nodes)
        into_deploy_env = ctx.macro == "SetDeploymentEnv" or run.reboot_kind == "deploy_env"
        after_kexec = ctx.implementation in ("SetDeploymentEnvKexec", "BootNewEnvKexec")
        timeout = run.kexec_timeout(n) if after_kexec else run.reboot_timeout(n)
        ports_up = [run.deploy_env_port] if into_deploy_env else []
        ports_down = [] if into_deploy_env or self.kind == "Reboot" and run.reboot_kind == "simple" \
            else [run.deploy_env_port]

        def reached(node: str, seconds: float) -> None:
            ctx.set_state(node, NodeState.REBOOTED)
            ctx.output.log(5, f"{ctx.prefix}  {node} is here after {round(seconds)}s", ctx.nodeset_id)

        result = await wait_reboot(run.subset(nodes), ssh_port=run.ssh_port, ports_up=ports_up,
                                   ports_down=ports_down, timeout=timeout,
                                   initial_sleep=min(run.sleep_before_ping, timeout),
                                   interval=run.probe_interval, window=run.check_window, on_reached=reached)
        run.executor.forget(nodes)
        return result

    @microstep("power", "power on, off or status through the power commands")
    async def ms_power(self, ctx: MicroContext, nodes: list[str]) -> StepResult:
        run = self.run_ctx
        if run.power_kind == "status":
            status = await boot_power.power_status(nodes, run.commands, run.reboot_window, gate=run.gate)
            for node, text in status.status.items():
                run.power_output[node] = text.strip()
            return StepResult(ok=list(status.ok), ko=dict(status.ko))
        kind = "power_on" if run.power_kind == "on" else "power_off"
        return await boot_power.escalate(kind, nodes, run.reboot_level, run.commands, run.reboot_window,
                                         command_timeout=120.0,
                                         output=lambda level_, text: ctx.output.log(level_, ctx.prefix + text,
                                                                                    ctx.nodeset_id),
                                         gate=run.gate)

    # -- deployment environment ----------------------------------------------------------

    @microstep("send_key_in_deploy_env", "install the user's SSH key in the deployment environment")
    async def ms_send_key_in_deploy_env(self, ctx: MicroContext, nodes: list[str]) -> StepResult:
        if self.run_ctx.ssh_key is None:
            return StepResult(ok=list(nodes))
        return await self._remote(nodes, commands.append_authorized_keys(), input=self.run_ctx.ssh_key,
                                  timeout=ctx.timeout)

    @microstep("create_partition_table", "run the cluster's partitioning script")
    async def ms_create_partition_table(self, ctx: MicroContext, nodes: list[str]) -> StepResult:
        script = self.run_ctx.partitioning_script.encode()
        return await self._remote(nodes, commands.run_script(self._variables()), input=script, timeout=ctx.timeout)

    @microstep("format_deploy_part", "mkfs the deployment partition")
    async def ms_format_deploy_part(self, ctx: MicroContext, nodes: list[str]) -> StepResult:
        return await self._remote(nodes, commands.format_deploy_part(self.run_ctx.plan), timeout=ctx.timeout)

    @microstep("format_tmp_part", "mkfs the /tmp partition")
    async def ms_format_tmp_part(self, ctx: MicroContext, nodes: list[str]) -> StepResult:
        return await self._remote(nodes, commands.format_tmp_part(self.run_ctx.plan), timeout=ctx.timeout)

    @microstep("format_swap_part", "mkswap the swap partition")
    async def ms_format_swap_part(self, ctx: MicroContext, nodes: list[str]) -> StepResult:
        return await self._remote(nodes, commands.format_swap_part(self.run_ctx.plan), timeout=ctx.timeout)

    @microstep("mount_deploy_part", "mount the deployment partition on the extraction directory")
    async def ms_mount_deploy_part(self, ctx: MicroContext, nodes: list[str]) -> StepResult:
        return await self._remote(nodes, commands.mount_deploy_part(self.run_ctx.plan), timeout=ctx.timeout)

    @microstep("umount_deploy_part", "unmount the deployment partition")
    async def ms_umount_deploy_part(self, ctx: MicroContext, nodes: list[str]) -> StepResult:
        return await self._remote(nodes, commands.umount_deploy_part(self.run_ctx.plan), timeout=ctx.timeout)

    @microstep("mount_tmp_part", "mount the /tmp partition")
    async def ms_mount_tmp_part(self, ctx: MicroContext, nodes: list[str]) -> StepResult:
        plan = self.run_ctx.plan
        device = commands.partition_device(plan.block_device, plan.tmp_part_num)
        return await self._remote(nodes, f"mount {shlex.quote(device)} {shlex.quote(plan.tmp_dir)}",
                                  timeout=ctx.timeout)

    @microstep("sync", "flush the nodes' disk caches")
    async def ms_sync(self, ctx: MicroContext, nodes: list[str]) -> StepResult:
        return await self._remote(nodes, "sync", timeout=ctx.timeout)

    @microstep("check_nodes", "check that the nodes run the production environment from its partition (Prod)")
    async def ms_check_nodes(self, ctx: MicroContext, nodes: list[str]) -> StepResult:
        plan = self.run_ctx.plan
        prod = commands.partition_device(plan.block_device, plan.prod_part_num)
        results = await self.run_ctx.executor.run(self.run_ctx.subset(nodes), commands.root_device_check(prod),
                                                  timeout=ctx.timeout or 60)
        ok, ko = [], {}
        for node in nodes:
            result = results[node]
            if result.ok and result.stdout.strip() == prod:
                ok.append(node)
            else:
                ko[node] = result.reason if not result.ok else f"The production environment is not booted on {prod}"
        # a root named differently (by-uuid, kernel name) may still be the prod partition
        renamed = [node for node in ko if results[node].ok]
        if renamed:
            again = await self.run_ctx.executor.run(self.run_ctx.subset(renamed),
                                                    commands.same_root_device_check(prod), timeout=ctx.timeout or 60)
            for node in renamed:
                if again[node].ok:
                    ok.append(node)
                    del ko[node]
        return StepResult(ok=ok, ko=ko)

    @microstep("send_deployment_kernel", "copy the deployment kernel and initrd to the running system (for kexec)")
    async def ms_send_deployment_kernel(self, ctx: MicroContext, nodes: list[str]) -> StepResult:
        run = self.run_ctx
        repository = run.plan.kexec_repository
        hosts = run.subset(nodes)
        await run.executor.run(hosts, f"mkdir -p {shlex.quote(repository)}", timeout=30)
        ok = set(nodes)
        ko: dict[str, str] = {}
        for name in (run.deploy_kernel, run.deploy_initrd):
            if not name:
                continue
            local = run.pxe_repository / name
            results = await run.executor.put({n: hosts[n] for n in ok}, local,
                                             f"{repository}/{Path(name).name}", timeout=ctx.timeout or 120)
            for node, result in results.items():
                if not result.ok:
                    ko[node] = result.reason
                    ok.discard(node)
        return StepResult(ok=sorted(ok), ko=ko)

    @microstep("kexec", "kexec into a kernel already on the node")
    async def ms_kexec(self, ctx: MicroContext, nodes: list[str]) -> StepResult:
        run = self.run_ctx
        plan = run.plan
        if ctx.macro == "SetDeploymentEnv":
            repository = plan.kexec_repository
            command = commands.kexec_load(f"{repository}/{Path(run.deploy_kernel).name}",
                                          f"{repository}/{Path(run.deploy_initrd).name}" if run.deploy_initrd else "",
                                          run.deploy_kernel_params)
        else:
            if plan.os_kind != "linux":
                return StepResult(ko={n: "kexec is only possible for linux environments" for n in nodes})
            params = plan.kernel_params
            if "root=" not in params:
                params = f"{params} root={plan.deploy_part}".strip()
            command = commands.kexec_load(plan.env_kernel, plan.env_initrd, params, plan.extraction_dir)
        for node in nodes:
            ctx.set_state(node, NodeState.REBOOT_IN_PROGRESS)
        result = await self._remote(nodes, command, timeout=60)
        run.executor.forget(nodes)
        return result

    # -- broadcast and installation ------------------------------------------------------

    @microstep("send_environment", "broadcast the image to the nodes with the macro-step's method")
    async def ms_send_environment(self, ctx: MicroContext, nodes: list[str]) -> StepResult:
        run = self.run_ctx
        if run.image is None:
            raise KadeployError(ErrorCode.INVALID_FILE, "No image to send")
        method = deploy_implementation(ctx.implementation).broadcast
        if method is None:
            raise KadeployError(ErrorCode.INVALID_OPTION, f"{ctx.implementation} declares no broadcast method")
        if method == "custom":
            return await self._custom_broadcast(ctx, nodes)
        start = time.monotonic()
        relays, unresolved = await run.relay_addresses(nodes)
        result = await broadcast(run.image.path, relays,
                                 commands.image_sink(run.plan), method=method, executor=run.executor,
                                 timeout=ctx.timeout, digest=run.image_digest,
                                 topology=run.topology or None, switch_parents=run.switch_parents or None)
        ctx.debug(3, f"Broadcast time: {round(time.monotonic() - start)}s")
        return StepResult(ok=list(result.ok), ko={**unresolved, **result.ko})

    async def _custom_broadcast(self, ctx: MicroContext, nodes: list[str]) -> StepResult:
        """BroadcastEnvCustom: the admin's command, run on the server (reference 3.3 `localops`).

        ENVFILE, NODEFILE, DECOMPRESS and TAKTUK_CONNECTOR are substituted; the
        command's exit status decides for every node, as in Kadeploy3.
        """
        run = self.run_ctx
        if not run.custom_broadcast_cmd:
            return StepResult(ko={n: "localops/broadcastenv/cmd is not configured for BroadcastEnvCustom"
                                  for n in nodes})
        assert run.image is not None
        with tempfile.NamedTemporaryFile("w", prefix="kadeploy-nodes-", suffix=".txt", delete=False) as handle:
            handle.write("".join(f"{run.hosts[n]}\n" for n in nodes))
            node_file = handle.name
        command = commands.custom_broadcast(run.custom_broadcast_cmd, str(run.image.path), node_file,
                                           commands.image_sink(run.plan), run.connector)
        start = time.monotonic()
        try:
            outcome = await run_process(command, ctx.timeout)
        finally:
            os.unlink(node_file)
        ctx.debug(3, f"Broadcast time: {round(time.monotonic() - start)}s")
        if outcome.timed_out:
            return StepResult(ko={n: f"The broadcast command (localops/broadcastenv/cmd) timed out after "
                                     f"{ctx.timeout:g}s" for n in nodes})
        if outcome.exit_status != 0:
            error = outcome.stderr.strip() or f"exit status {outcome.exit_status}"
            return StepResult(ko={n: error for n in nodes})
        return StepResult(ok=list(nodes))

    @microstep("decompress_environment", "finish writing the image (fsa restore, stored images) onto the partition")
    async def ms_decompress_environment(self, ctx: MicroContext, nodes: list[str]) -> StepResult:
        return await self._remote(nodes, commands.decompress_stored_image(self.run_ctx.plan), timeout=ctx.timeout)

    async def _install_archives(self, ctx: MicroContext, nodes: list[str], archives) -> StepResult:
        run = self.run_ctx
        variables = self._variables()
        remaining = list(nodes)
        failed: dict[str, str] = {}
        for archive in archives:
            file_ref = run.archives.get(archive)
            if file_ref is None:
                raise KadeployError(ErrorCode.INVALID_FILE, f"The archive {archive.file} was not fetched")
            ctx.debug(3, f"Send the archive {archive.file}")
            result = await self._remote(remaining, commands.unpack_archive(run.plan, archive.compression),
                                        input=file_ref.path, timeout=ctx.timeout)
            failed.update(result.ko)
            passed = set(result.ok)
            remaining = [n for n in remaining if n in passed]
            script = commands.run_archive_script(run.plan, archive.script, variables)
            if script and remaining:
                result = await self._remote(remaining, script, timeout=ctx.timeout)
                failed.update(result.ko)
                passed = set(result.ok)
                remaining = [n for n in remaining if n in passed]
        return StepResult(ok=remaining, ko=failed)

    @microstep("manage_admin_pre_install", "run the administrator's pre-install archive")
    async def ms_manage_admin_pre_install(self, ctx: MicroContext, nodes: list[str]) -> StepResult:
        preinstall = self.run_ctx.plan.preinstall
        return await self._install_archives(ctx, nodes, [preinstall] if preinstall else [])

    @microstep("manage_admin_post_install", "run the administrator's post-install archives")
    async def ms_manage_admin_post_install(self, ctx: MicroContext, nodes: list[str]) -> StepResult:
        return await self._install_archives(ctx, nodes, self.run_ctx.plan.admin_postinstalls)

    @microstep("manage_user_post_install", "run the environment's post-install archives")
    async def ms_manage_user_post_install(self, ctx: MicroContext, nodes: list[str]) -> StepResult:
        return await self._install_archives(ctx, nodes, self.run_ctx.plan.user_postinstalls)

    @microstep("check_kernel_files", "check that the environment's kernel and initrd exist on the partition")
    async def ms_check_kernel_files(self, ctx: MicroContext, nodes: list[str]) -> StepResult:
        return await self._remote(nodes, commands.check_kernel_files(self.run_ctx.plan), timeout=ctx.timeout)

    @microstep("send_key", "install the user's SSH key in the deployed system")
    async def ms_send_key(self, ctx: MicroContext, nodes: list[str]) -> StepResult:
        if self.run_ctx.ssh_key is None:
            return StepResult(ok=list(nodes))
        return await self._remote(nodes, commands.append_authorized_keys(self.run_ctx.plan.extraction_dir),
                                  input=self.run_ctx.ssh_key, timeout=ctx.timeout)

    @microstep("install_bootloader", "run the cluster's bootloader installation script")
    async def ms_install_bootloader(self, ctx: MicroContext, nodes: list[str]) -> StepResult:
        script = self.run_ctx.bootloader_script.encode()
        return await self._remote(nodes, commands.run_script(self._variables()), input=script, timeout=ctx.timeout)


def _verdict(nodes: list[str], results: dict[str, CommandResult]) -> StepResult:
    ok: list[str] = []
    ko: dict[str, str] = {}
    for node in nodes:
        result = results.get(node)
        if result is None:
            ko[node] = "no result"
        elif result.ok:
            ok.append(node)
        else:
            ko[node] = result.reason
    return StepResult(ok=ok, ko=ko)


def describe(nodes: list[str]) -> str:
    """Folded node list for output lines."""
    return fold(nodes)
