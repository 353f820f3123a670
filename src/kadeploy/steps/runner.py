"""The real operation runner: the engine driving the micro-steps, one workflow per cluster.

The server validates a request into an `Operation` (typed options: a
`DeployRequest`, `RebootRequest` or `PowerRequest` of `kadeploy.operations`,
the environment already resolved) and hands it here (`create_services(cfg)`
is what `kadeploy3d`, the composition root, builds at start). For each
cluster of the operation this module resolves what the steps need (plan,
addresses, boot targets, PXE writers, power commands, fetched files), builds
the engine `Workflow` with the cluster's automaton (or the request's
`--force-steps`), runs the clusters concurrently and returns per-node
verdicts and the statistics records of reference section 8.

Server-wide resources live on the runner and are shared by every operation:
the SSH executor (connections reused across operations), the reboot window
(a semaphore, not Kadeploy3's sleep loop) and the per-BMC interval gate.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from kadeploy.boot.commands import CommandTable, node_address
from kadeploy.boot.commands import RemoteOp as BootRemoteOp
from kadeploy.boot.drivers import POWER_DRIVERS
from kadeploy.boot.pxe import BootTarget, PXEMethodSettings, PXEProfiles
from kadeploy.boot.bmcsession import SessionRetry
from kadeploy.boot.window import MinIntervalGate, RebootWindow
from kadeploy.catalog.cache import Priority
from kadeploy.catalog.files import fetcher_from_config
from kadeploy.catalog.environment import ArchiveSpec, EnvironmentDescription
from kadeploy.catalog.grab import grab_environment
from kadeploy.errors import KadeployError
from kadeploy.engine import (
    ImplementationSpec,
    MicroStepConf,
    ResumePoint,
    Workflow,
    WorkflowResult,
    merge_results,
    run_with_retries,
)
from kadeploy.engine.model import CustomOperation as EngineCustomOperation
from kadeploy.remote import Executor
from kadeploy.remote.tree import DEFAULT_ARITY, TreeOptions, tree_from_environment
from kadeploy.operations import (
    DeployRequest,
    NodeOutcome,
    Operation,
    OperationOutcome,
    PowerRequest,
    RebootRequest,
    Services,
    WorkflowRequest,
    WorkflowSink,
)
from kadeploy.steps.context import ClusterRun, FileRef
from kadeploy.steps.customops import apply_custom_operations
from kadeploy.steps.deploy import NodeSteps
from kadeploy.steps.macrosteps import DEPLOY_INTERFACES, default_deploy_macrosteps, power_macrosteps, reboot_macrosteps
from kadeploy.steps.plan import Archive, DeployPlan
from kadeploy.steps.timing import TimedLibrary
from kadeploy.states import FAILED, NodeState
from kadeploy.nodeset import sort_key
from kadeploy.vlan import set_vlan_command

log = logging.getLogger("kadeploy.steps")

_KIND = {"deploy": "Deploy", "reboot": "Reboot", "power": "Power", "power-status": "Power"}
#: an authorized_keys file is read whole into memory and sent to every node: bounded
MAX_KEY_FILE_SIZE = 1024 * 1024


class EngineRunner:
    """`OperationRunner` backed by the engine and the real micro-steps."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        server = cfg.server
        taktuk = server.external.taktuk  # Kadeploy3's TakTuk keys shape the executor's tree mode
        try:
            tree_from = tree_from_environment(os.environ)
        except ValueError as exc:
            raise KadeployError(0, str(exc)) from None
        self.executor = Executor(Path(server.ssh_private_key), port=server.network.ports.ssh,
                                 connect_timeout=10.0, output_limit=taktuk.outputs_size,
                                 tree=TreeOptions(arity=taktuk.tree_arity or DEFAULT_ARITY)
                                 if taktuk.auto_propagate else None, tree_from=tree_from)
        self.reboot_window = RebootWindow(server.windows.reboot.size)
        bmc = server.windows.bmc
        self.gate = MinIntervalGate(bmc.interval, sessions=bmc.sessions,
                                    retry=SessionRetry(retries=bmc.retries, backoff=bmc.backoff))
        # the server cache (size limit, priorities, per-workflow references): reference 1.6
        self.fetcher = fetcher_from_config(cfg)
        self._pxe: dict[str, PXEProfiles] = {}
        self._commands: dict[str, CommandTable] = {}

    # -- OperationRunner -----------------------------------------------------------------

    async def run(self, op: Operation, sink: WorkflowSink) -> OperationOutcome:
        try:
            return await self._run(op, sink)
        finally:
            # the operation's cached files may be evicted again; anonymous ones are deleted
            self.fetcher.release(op.wid)

    async def _run(self, op: Operation, sink: WorkflowSink) -> OperationOutcome:
        kind = _KIND[op.kind]
        start = time.time()
        workflows: dict[str, Workflow] = {}
        timings: dict[str, TimedLibrary] = {}
        sink.set_status_provider(lambda: {c: wf.status() for c, wf in workflows.items()})
        files = await self._fetch_files(op, sink)
        multi = len(op.nodes) > 1

        async def one_cluster(cluster: str, nodes: list[str]) -> tuple[str, WorkflowResult]:
            run = self._cluster_run(op, cluster, nodes, files, sink)
            library = TimedLibrary(NodeSteps(run, kind))
            timings[cluster] = library
            output = _ClusterOutput(sink, cluster)
            macrosteps = self._macrosteps(op, cluster, run.plan)
            prefix = (self.cfg.clusters[cluster].prefix or cluster) if multi else None

            def make_workflow(round_number: int) -> Workflow:
                workflow = Workflow(kind, cluster, macrosteps, library, output, breakpoint=op.breakpoint,
                                    cluster_prefix=prefix, wid=op.wid)
                workflows[cluster] = workflow
                return workflow

            deploy = op.options if isinstance(op.options, DeployRequest) else None
            rounds = deploy.retry_failed if deploy else 0
            min_success = deploy.min_success if deploy else None
            if deploy is not None and (rounds or min_success):
                results = await run_with_retries(make_workflow, nodes, max_rounds=rounds + 1,
                                                 min_success=min_success or None, output=output)
                result = merge_results(results)
            else:
                result = await make_workflow(1).run(nodes, resume=_resume_points(op, nodes))
            power_output.update(run.power_output)
            return cluster, result

        power_output: dict[str, str] = {}
        results = await asyncio.gather(*(one_cluster(c, n) for c, n in op.nodes.items()))
        outcome = self._outcome(op, dict(results), start, files, timings)
        if op.kind == "power-status":
            _log_power_status(sink, outcome, power_output)
        return outcome

    # -- building a cluster run ----------------------------------------------------------

    def _cluster_run(self, op: Operation, cluster: str, nodes: list[str], files: dict[str, Any],
                     sink: WorkflowSink) -> ClusterRun:
        cfg = self.cfg
        cluster_cfg = cfg.clusters[cluster]
        server = cfg.server
        options = op.options
        env = op.environment
        plan = build_plan(cfg, cluster, env.description if env is not None else None, options,
                          ssh_key=files.get("key") is not None)
        hosts = {node: self._address(node, op, cluster_cfg) for node in nodes}
        targets = {node: BootTarget(node, cfg.nodes[node].address, cfg.nodes[node].mac) for node in nodes}
        deploy_kernel = cluster_cfg.boot.kernels.deploy
        pxe = options.pxe
        reboot = options if isinstance(options, RebootRequest) else None
        power = options if isinstance(options, PowerRequest) else None
        timeout_classical = options.timeout_reboot_classical \
            if isinstance(options, (DeployRequest, RebootRequest)) else None
        timeout_kexec = options.timeout_reboot_kexec if isinstance(options, DeployRequest) else None
        run = ClusterRun(
            wid=op.wid, user=op.user, cluster=cluster, plan=plan, hosts=hosts, targets=targets,
            executor=self.executor, reboot_window=self.reboot_window, gate=self.gate,
            commands=self.command_table(cluster), pxe=self._pxe_profiles(cluster),
            pxe_repository=Path(server.pxe.networkboot.repository),
            deploy_kernel=deploy_kernel.vmlinuz, deploy_initrd=deploy_kernel.initrd,
            deploy_kernel_params=deploy_kernel.params,
            reboot_timeout=_timeout(timeout_classical, cluster_cfg.timeouts.reboot),
            kexec_timeout=_timeout(timeout_kexec, cluster_cfg.timeouts.kexec),
            sleep_before_ping=float(cluster_cfg.boot.sleep_time_before_ping),
            probe_interval=float(server.network.ports.probe_interval),
            check_window=server.windows.check.size,
            ssh_port=server.network.ports.ssh, deploy_env_port=server.network.ports.test_deploy_env,
            partitioning_script=cluster_cfg.partitioning.script,
            bootloader_script=cluster_cfg.boot.install_bootloader,
            image=files.get("image"), image_digest=None, ssh_key=files.get("key"),
            archives=files.get("archives", {}), custom_files=files.get("custom", {}),
            user_pxe_profile=pxe.profile if pxe is not None else None,
            user_pxe_singularities=dict(pxe.singularities) if pxe is not None else {},
            # under the names the user gave (FILES_PREFIX--<name>), not the cache's file names
            user_pxe_files={Path(f.uri.rstrip("/")).name: f.path for f in files.get("pxe_files", [])},
            reboot_level=reboot.level if reboot else power.level if power else "soft",
            power_kind=(power.status or "status") if power else "",
            reboot_kind=reboot.kind if reboot else "",
            vlan_command=self._vlan_command(op.user),
            vlan_hosts={node: op.vlan_addresses[node] for node in nodes if node in op.vlan_addresses},
            debug=sink.debug if op.debug else None,
            custom_broadcast_cmd=cluster_cfg.localops.broadcastenv.cmd,
            topology=cluster_cfg.topology.node_switches(),
            switch_parents=cluster_cfg.topology.switch_parents(),
            connector=server.external.default_connector,
        )
        return run

    def _address(self, node: str, op: Operation, cluster_cfg: Any) -> str:
        """Where a node is reached in the default VLAN: its name, or with `hooks/use_ip_to_deploy`
        its clusters.conf address (Kadeploy3's `get_nodeid`: SSH, probes, broadcast node lists)."""
        if cluster_cfg.use_ip_to_deploy:
            return op.addresses.get(node) or self.cfg.nodes[node].address
        return node

    def _vlan_command(self, user: str):
        template = self.cfg.server.network.vlan.set_cmd
        if not template:
            return None

        def command(nodes: list[str], vlan: str) -> str:
            return set_vlan_command(template, nodes, vlan, user)

        return command

    def _pxe_profiles(self, cluster: str) -> PXEProfiles:
        if cluster not in self._pxe:
            pxe = self.cfg.server.pxe
            headers = self.cfg.clusters[cluster].pxe.headers
            self._pxe[cluster] = PXEProfiles(
                _pxe_settings(pxe.dhcp, self.cfg), _pxe_settings(pxe.localboot, self.cfg),
                _pxe_settings(pxe.networkboot, self.cfg),
                headers={"dhcp": headers.dhcp, "localboot": headers.localboot, "networkboot": headers.networkboot})
        return self._pxe[cluster]

    def command_table(self, cluster: str) -> CommandTable:
        if cluster not in self._commands:
            cluster_cfg = self.cfg.clusters[cluster]
            remoteops = {}
            for kind in ("reboot", "power_on", "power_off", "power_status", "console"):
                ops = []
                for op in getattr(cluster_cfg.remoteops, kind):
                    driver = _driver_factory(op) if op.driver else None
                    ops.append(BootRemoteOp(op.name, cmd=op.cmd, group=op.group, driver=driver))
                remoteops[kind] = ops
            self._commands[cluster] = CommandTable(
                remoteops, self.cfg.commands, default_connector=self.cfg.server.external.default_connector,
                levels=cluster_cfg.remoteops.level_name)
        return self._commands[cluster]

    # -- automata ------------------------------------------------------------------------

    def _macrosteps(self, op: Operation, cluster: str, plan: DeployPlan):
        options = op.options
        if isinstance(options, RebootRequest):
            return reboot_macrosteps(options.kind)
        if isinstance(options, PowerRequest):
            return power_macrosteps(options.status or "status")
        automata = options.automata or self.cfg.clusters[cluster].automata
        macrosteps = []
        for interface in DEPLOY_INTERFACES:
            implementations = [self._implementation(conf) for conf in automata.get(interface, [])]
            if not implementations:
                implementations = dict(default_deploy_macrosteps())[interface]
            macrosteps.append((interface, implementations))
        macrosteps = _substitute(macrosteps, plan, self.cfg.clusters[cluster])
        return apply_custom_operations(macrosteps, options.custom_operations)

    @staticmethod
    def _implementation(conf: Any) -> ImplementationSpec:
        if isinstance(conf, ImplementationSpec):
            return conf
        if isinstance(conf, dict):
            return ImplementationSpec(str(conf.get("name")), retries=int(conf.get("retries", 0)),
                                      timeout=float(conf.get("timeout", 0)))
        microsteps = {}
        for micro in conf.microsteps:
            microsteps[micro.name] = MicroStepConf(
                timeout=micro.timeout, retries=micro.retries, raisable=micro.raisable, breakpoint=micro.breakpoint,
                pre_ops=tuple(_engine_op(o) for o in micro.pre_ops),
                post_ops=tuple(_engine_op(o) for o in micro.post_ops),
                substitute=tuple(_engine_op(o) for o in micro.substitute) or None)
        return ImplementationSpec(conf.name, retries=conf.retries, timeout=float(conf.timeout),
                                  raisable=conf.raisable, breakpoint=conf.breakpoint, microsteps=microsteps)

    # -- files ---------------------------------------------------------------------------

    async def _fetch_files(self, op: Operation, sink: WorkflowSink) -> dict[str, Any]:
        files: dict[str, Any] = {}
        env = op.environment
        if op.kind == "deploy" and env is not None:
            server = self.cfg.server
            grabbed = await grab_environment(
                self.fetcher, env, client=op.client, wid=op.wid,
                max_preinstall_size=server.environments.max_preinstall_size * 1024 * 1024 or None,
                max_postinstall_size=server.environments.max_postinstall_size * 1024 * 1024 or None)
            files["image"] = FileRef(grabbed.image.path, grabbed.image.size)
            files["image_checksum"] = grabbed.image.checksum
            archives: dict[Archive, FileRef] = {}
            got_archives = ([grabbed.preinstall] if grabbed.preinstall else []) + grabbed.postinstalls
            for archive, got in zip(_archives(env.description), got_archives):
                archives[archive] = FileRef(got.path, got.size)
            files["archives"] = archives
        key = op.options.ssh_authorized_keys
        if key:
            got = await self.fetcher.fetch(str(key), client=op.client, what="key file", wid=op.wid,
                                           priority=Priority.ANON, max_size=MAX_KEY_FILE_SIZE)
            files["key"] = got.path.read_bytes()
            for cluster in op.nodes:
                sink.log(cluster, 3, f"Grab the key file {key}")
        pxe = op.options.pxe
        pxe_files = []
        for ref in pxe.files if pxe is not None else ():
            pxe_files.append(await self.fetcher.fetch(str(ref), client=op.client, what="PXE file", wid=op.wid,
                                                      priority=Priority.ANON))
        files["pxe_files"] = pxe_files
        custom: dict[str, FileRef] = {}
        for ref in _custom_files(op.options.custom_operations):
            got = await self.fetcher.fetch(ref, client=op.client, what="custom operation file", wid=op.wid,
                                           priority=Priority.ANON)
            custom[ref] = FileRef(got.path, got.size)
        files["custom"] = custom
        return files

    # -- outcome -------------------------------------------------------------------------

    def _outcome(self, op: Operation, results: dict[str, WorkflowResult], start: float,
                 files: dict[str, Any], timings: dict[str, TimedLibrary] | None = None) -> OperationOutcome:
        nodes: dict[str, NodeOutcome] = {}
        stats: list[dict[str, Any]] = []
        resume: dict[str, dict[str, Any]] = {}
        env = op.environment
        env_label = env.label if env is not None else ""
        for cluster, result in results.items():
            brk = set(result.brk)
            for node, record in result.records.items():
                if node in brk:
                    state = NodeState.BRK
                elif node in result.ko or record.state in FAILED:
                    state = NodeState.KO
                else:
                    state = NodeState.OK
                nodes[node] = NodeOutcome(state, result.ko.get(node, record.error or ""))
                point = result.resume_points.get(node)
                if point is not None and state != NodeState.OK:
                    resume[node] = {"macro_index": point.macro_index, "macro": point.macro,
                                    "implementation": point.implementation, "micro": point.micro}
                row: dict[str, Any] = {"wid": op.wid, "user": op.user, "hostname": node, "start": int(start),
                                       "env": env_label, "anonymous_env": env is not None and not env.is_recorded,
                                       "success": state != NodeState.KO, "error": nodes[node].error,
                                       # Kadeploy3 never filled this field; we record the image's checksum
                                       "md5": files.get("image_checksum", "")}
                for index, step in enumerate(record.steps[:3], start=1):
                    if step is None:
                        continue
                    row[f"step{index}"] = step.implementation
                    row[f"timeout_step{index}"] = int(step.timeout)
                    row[f"retry_step{index}"] = step.retries
                    row[f"step{index}_duration"] = int(round(step.duration))
                if timings and cluster in timings:
                    row["micro_steps"] = timings[cluster].of(node)
                stats.append(row)
        return OperationOutcome(nodes, stats, resume)


class _ClusterOutput:
    """Engine output -> server sink, tagged with the cluster."""

    def __init__(self, sink: WorkflowSink, cluster: str) -> None:
        self.sink = sink
        self.cluster = cluster

    def log(self, level: int, text: str, nodeset_id: str | None = None) -> None:
        self.sink.log(self.cluster, level, text)

    def node_state(self, hostname: str, macro: str | None, micro: str | None, state: str,
                   error: str | None = None) -> None:
        self.sink.node_state(hostname, macro or "", micro or "", state, error)


def build_plan(cfg: Any, cluster: str, env: EnvironmentDescription | None, request: WorkflowRequest, *,
               ssh_key: bool = False) -> DeployPlan:
    """Resolve the deployment plan of one cluster from configuration, environment and request."""
    cluster_cfg = cfg.clusters[cluster]
    partitioning = cluster_cfg.partitioning
    deploy = request if isinstance(request, DeployRequest) else None
    block_device = request.block_device or partitioning.block_device
    deploy_part_num = request.deploy_partition if request.deploy_partition is not None \
        else partitioning.partitions.deploy
    swap = partitioning.partitions.swap
    server = cfg.server
    kernels = cluster_cfg.boot.kernels
    image, boot = (env.image, env.boot) if env is not None else (None, None)
    partitions = env.options.partitions if env is not None and env.options is not None else []
    return DeployPlan(
        cluster=cluster, block_device=block_device, deploy_part_num=deploy_part_num,
        swap_part_num=-1 if partitioning.disable_swap or swap is None else swap,
        prod_part_num=partitioning.partitions.prod, tmp_part_num=partitioning.partitions.tmp,
        whole_disk=request.whole_disk, boot_partition=deploy.boot_partition if deploy else None,
        env_name=env.name if env else "", env_version=(env.version or 1) if env else 1,
        os_kind=env.os if env else "linux", image_kind=image.kind if image else "tar",
        image_compression=str(image.compression) if image else "gzip",
        image_file=image.file if image else "",
        image_partitions=tuple((part.id, part.device) for part in partitions),
        filesystem=env.filesystem if env else "", partition_type=env.partition_type if env else 0x83,
        env_kernel=boot.kernel if boot else "", env_initrd=boot.initrd if boot else "",
        env_kernel_params=boot.kernel_params if boot else "",
        hypervisor=boot.hypervisor if boot else "", hypervisor_params=boot.hypervisor_params if boot else "",
        multipart=env.multipart if env else False,
        user_postinstalls=tuple(_archives(env, postinstalls_only=True)) if env else (),
        preinstall=_archive(env.preinstall) if env and env.preinstall else None,
        admin_postinstalls=tuple(Archive(f.file, _compression(f.format), f.script)
                                 for f in cluster_cfg.postinstall.files),
        supported_fs=tuple(kernels.deploy.supported_fs),
        cluster_kernel_params=kernels.user.params,
        mkfs_args={m.fstype: m.args for m in server.external.mkfs},
        tar_options=server.external.tar,
        decompress_on_the_fly=cluster_cfg.localops.broadcastenv.decompress,
        extraction_dir=server.environments.deployment.extraction_dir,
        rambin_dir=server.environments.deployment.rambin_dir,
        tmp_dir=server.environments.deployment.tarball_dir,
        kexec_repository=cluster_cfg.kexec.repository,
        localboot_method=server.pxe.localboot.method,
        ssh_key=ssh_key,
        reformat_tmp=(deploy.reformat_tmp_partition or None) if deploy else None,
        disable_bootloader_install=deploy.disable_bootloader_install if deploy else False,
        disable_disk_partitioning=deploy.disable_disk_partitioning if deploy else False,
        disable_kexec=deploy.disable_kexec if deploy else False,
        vlan=request.vlan or None,
        user_pxe_profile=request.pxe is not None and bool(request.pxe.profile),
    )


def _resume_points(op: Operation, nodes: list[str]) -> dict[str, ResumePoint] | None:
    """The engine resume points of a resumed deployment (`kadeploy3 --resume WID`), None otherwise."""
    points = op.options.resume_points if isinstance(op.options, DeployRequest) else None
    if not points:
        return None
    wanted = set(nodes)
    return {node: ResumePoint(node, point.macro_index, point.macro, point.implementation, point.micro)
            for node, point in points.items() if node in wanted}


def _archive(spec: ArchiveSpec) -> Archive:
    return Archive(spec.archive, spec.compression or "gzip", spec.script or "none")


def _archives(env: EnvironmentDescription, postinstalls_only: bool = False) -> list[Archive]:
    archives = [_archive(spec) for spec in env.postinstalls]
    if not postinstalls_only and env.preinstall is not None:
        archives.insert(0, _archive(env.preinstall))
    return archives


def _compression(short_format: str) -> str:
    return {"tgz": "gzip", "tbz2": "bzip2", "txz": "xz", "tzst": "zstd"}.get(short_format, "gzip")


def _custom_files(raw: Any) -> list[str]:
    refs: list[str] = []
    if not isinstance(raw, dict):
        return refs
    for micros in raw.values():
        if not isinstance(micros, dict):
            continue
        for conf in micros.values():
            if not isinstance(conf, dict):
                continue
            for key in ("substitute", "pre-ops", "post-ops"):
                for op in conf.get(key) or []:
                    if isinstance(op, dict) and op.get("file"):
                        refs.append(str(op["file"]))
    return refs


def _engine_op(op: Any) -> EngineCustomOperation:
    return EngineCustomOperation(op.action, op.label, command=op.command, file=op.file,
                                 destination=op.destination, params=op.params or None,
                                 timeout=float(op.timeout), retries=op.retries, scattering=op.scattering)


def _substitute(macrosteps, plan: DeployPlan, cluster_cfg: Any):
    """Kadeploy3's automatic substitutions (reference 5.2), with its `--no-kexec` bug fixed.

    BootNewEnvKexec becomes BootNewEnvClassical (retries 0, timeout = reboot
    timeout + 200) for a non-linux OS, an unsupported filesystem or
    `--no-kexec`; SetDeploymentEnvKexec becomes SetDeploymentEnvUntrusted under
    `--no-kexec` (Kadeploy3 applied that one to the wrong list). An environment
    with a preinstall forces SetDeploymentEnvUntrustedCustomPreInstall.
    """
    no_kexec = plan.disable_kexec
    result = []
    for interface, implementations in macrosteps:
        replaced = []
        for spec in implementations:
            if spec.name == "BootNewEnvKexec" and (no_kexec or plan.os_kind != "linux" or not plan.filesystem_supported):
                timeout = cluster_cfg.timeouts.reboot.evaluate(1) + 200
                spec = ImplementationSpec("BootNewEnvClassical", retries=0, timeout=float(timeout))
            elif spec.name == "SetDeploymentEnvKexec" and no_kexec:
                spec = replace(spec, name="SetDeploymentEnvUntrusted")
            if interface == "SetDeploymentEnv" and plan.preinstall is not None:
                spec = replace(spec, name="SetDeploymentEnvUntrustedCustomPreInstall")
            replaced.append(spec)
        result.append((interface, replaced))
    return result


def _timeout(override: Any, configured: Any):
    """A timeout function of `n`: the request's expression if given, else the cluster's."""
    if override:
        from kadeploy.config.timeout import TimeoutExpr
        return TimeoutExpr(str(override)).evaluate
    return configured.evaluate


def _pxe_settings(conf: Any, cfg: Any) -> PXEMethodSettings:
    server = conf.export.server
    if server == "LOCAL_IP":
        server = cfg.server.network.server_hostname
    return PXEMethodSettings(conf.method, Path(conf.repository), profiles_directory=conf.profiles.directory,
                             profiles_filename=conf.profiles.filename, export_kind=conf.export.kind,
                             export_server=server, binary=conf.binary, userfiles_directory=conf.userfiles.directory)


def _log_power_status(sink: WorkflowSink, outcome: OperationOutcome, power_output: dict[str, str]) -> None:
    """Kadeploy3's status block (kapower.rb `power_get`): `---`, `<node>: <output>` per node OK, `---`.

    Logged once for the whole operation, after the clusters' end lines, with no
    cluster prefix; `kapower3 --status` prints it as the server's output.
    """
    sink.log(None, 0, "---")
    for node in sorted(outcome.ok, key=sort_key):
        sink.log(None, 0, f"{node}: {power_output.get(node, '')}")
    sink.log(None, 0, "---")


def _driver_factory(op: Any) -> Any:
    """Build the op's declared power driver for one node (`HOSTNAME_SHORT`/`HOSTNAME_FQDN` in its address)."""
    driver = POWER_DRIVERS.get(op.driver)
    options = {"verify": op.ca_file} if getattr(op, "ca_file", None) else {}

    def build(hostname: str) -> Any:
        address = node_address(op.address or "", hostname)
        return driver(address, op.user, op.password, **options)
    return build


def create_services(cfg: Any) -> Services:
    """The runner `kadeploy3d` runs every operation with, its fetcher and its console opener."""
    from kadeploy.steps.console import ConsoleFactory

    runner = EngineRunner(cfg)
    return Services(runner, runner.fetcher, ConsoleFactory(runner))
