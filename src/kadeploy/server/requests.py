"""Validation of launch requests into `Operation`s (room `server`, reference 1.4).

POST /deployment, POST /reboot, PUT /power and GET /power parameters are
checked here, with Kadeploy3's error codes, before anything is persisted:
nodes (ranges expanded, unknown nodes refused), environment lookup, options,
and rights. This is the API edge: the JSON is read once, into the typed
requests of `kadeploy.operations` (`DeployRequest`, `RebootRequest`,
`PowerRequest`) with the environment resolved (`ResolvedEnvironment`); nothing
after it reads the request's hash again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from kadeploy.catalog.multipart import multipart_boot_device, multipart_devices, multipart_target_problem
from kadeploy.catalog.resolved import ResolvedEnvironment
from kadeploy.config import TimeoutExpr, parse_request_automata
from kadeploy.errors import ErrorCode, KadeployError
from kadeploy.operations import (
    LEVELS,
    REBOOT_KINDS,
    DeployRequest,
    Operation,
    OperationKind,
    PowerRequest,
    PxeRequest,
    RebootRequest,
    ResumeFrom,
    WorkflowRequest,
)
from kadeploy.server.auth import Identity
from kadeploy.server.environments import EnvironmentService
from kadeploy.server.http import as_bool, as_dict, as_int, as_list, as_str
from kadeploy.server.nodelists import LAUNCH_FLOOR, site_nodes
from kadeploy.server.rights import RightsService
from kadeploy.server.settings import ServerSettings
from kadeploy.server.workflows import new_wid
from kadeploy.states import WorkflowState
from kadeploy.vlan import resolve_vlan_addresses

_BREAKPOINT = re.compile(r"^\w+(:\w+)?$")
_BLOCK_DEVICE = re.compile(r"^[\w/]+$")


def resolve_nodes(settings: ServerSettings, params: dict[str, Any]) -> dict[str, list[str]]:
    """`nodes` expanded and grouped per cluster; error 2 for unknown nodes, 12 when missing."""
    patterns = as_list(params, "nodes")
    if not patterns:
        raise KadeployError(ErrorCode.MISSING_OPTION, "No node given (parameter nodes)")
    owner = settings.node_cluster
    hostnames = site_nodes(owner, patterns, LAUNCH_FLOOR)  # bounded before expanding; a short error
    grouped: dict[str, list[str]] = {}
    for host in hostnames:
        grouped.setdefault(owner[host], []).append(host)
    return grouped


def _check_timeout(params: dict[str, Any], key: str) -> str | None:
    value = as_str(params, key)
    if value is None:
        return None
    try:
        TimeoutExpr(value).evaluate(1)
    except (KadeployError, ValueError, ArithmeticError) as exc:
        raise KadeployError(ErrorCode.INVALID_OPTION, f"Invalid {key} {value!r}: {exc}") from None
    return value


def _automata(params: dict[str, Any]) -> Any:
    raw = params.get("automata")
    if raw is None:
        return None
    try:
        return parse_request_automata(raw, "automata")
    except KadeployError as exc:
        raise KadeployError(ErrorCode.INVALID_OPTION, exc.message) from None



def _pxe(params: dict[str, Any]) -> PxeRequest | None:
    """`pxe: {profile, singularities, files}` (kareboot3 -w, -x, --set-pxe-pattern)."""
    pxe = as_dict(params, "pxe")
    if pxe is None:
        return None
    if not pxe.get("profile"):
        raise KadeployError(ErrorCode.INVALID_OPTION, "pxe: profile missing")
    singularities = pxe.get("singularities") or {}
    files = pxe.get("files") or []
    if not isinstance(singularities, dict):
        raise KadeployError(ErrorCode.INVALID_OPTION, "pxe: singularities must be a mapping of node to value")
    if not isinstance(files, list):
        raise KadeployError(ErrorCode.INVALID_OPTION, "pxe: files must be a list")
    return PxeRequest(str(pxe["profile"]), {str(node): str(value) for node, value in singularities.items()},
                      tuple(str(ref) for ref in files))


def _resume_from(wid: str, raw: dict[str, Any]) -> ResumeFrom:
    try:
        return ResumeFrom(int(raw["macro_index"]), str(raw["macro"]), raw.get("implementation"), raw.get("micro"))
    except (KeyError, TypeError, ValueError):
        raise KadeployError(ErrorCode.INVALID_WORKFLOW_ID,
                            f"The deployment {wid} cannot be resumed (its resume record is damaged)") from None


@dataclass
class _Common:
    """What every workflow request carries, checked: the `Operation` fields and the common options."""

    kind: OperationKind
    nodes: dict[str, list[str]]
    addresses: dict[str, str]
    fields: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def hostnames(self) -> list[str]:
        return [node for nodes in self.nodes.values() for node in nodes]

    def operation(self, options: DeployRequest | RebootRequest | PowerRequest, **extra: Any) -> Operation:
        return Operation(wid=new_wid(self.kind), kind=self.kind, nodes=self.nodes, options=options,
                         addresses=self.addresses, **self.fields, **extra)


class RequestBuilder:
    """Turns request parameters into validated, rights-checked operations."""

    def __init__(self, settings: ServerSettings, environments: EnvironmentService, rights: RightsService) -> None:
        self.settings = settings
        self.environments = environments
        self.rights = rights

    def _common(self, kind: OperationKind, identity: Identity, params: dict[str, Any]) -> _Common:
        nodes = resolve_nodes(self.settings, params)
        breakpoint_ = as_str(params, "breakpoint")
        if breakpoint_ is not None and not _BREAKPOINT.match(breakpoint_):
            raise KadeployError(ErrorCode.INVALID_OPTION, f"Invalid breakpoint {breakpoint_!r} (Macro or Macro:micro)")
        custom = as_dict(params, "custom_operations")
        requested = {n for ns in nodes.values() for n in ns}
        addresses = {host: self.settings.clusters[cluster].addresses.get(host, "")
                     for cluster, hosts in nodes.items() for host in hosts if host in requested}
        fields = {"user": identity.user,
                  "verbose_level": as_int(params, "verbose_level", self.settings.verbosity_clients or 3,
                                          minimum=0, maximum=5) or 0,
                  "debug": as_bool(params, "debug"), "force": as_bool(params, "force"),
                  "breakpoint": breakpoint_, "client": as_str(params, "client")}
        options: dict[str, Any] = {"hook": as_bool(params, "hook"), "custom_operations": custom,
                                   "ssh_authorized_keys": as_str(params, "ssh_authorized_keys"),
                                   "vlan": as_str(params, "vlan"), "pxe": _pxe(params)}
        block_device = as_str(params, "block_device")
        if block_device is not None:
            if not _BLOCK_DEVICE.match(block_device):
                raise KadeployError(ErrorCode.INVALID_OPTION, f"Invalid block_device {block_device!r}")
            options["block_device"] = block_device
        if params.get("deploy_partition") not in (None, ""):
            options["deploy_partition"] = as_int(params, "deploy_partition", minimum=0)
        return _Common(kind, nodes, addresses, fields, options)

    def _deploy_part(self, nodes: dict[str, list[str]], options: WorkflowRequest) -> dict[str, str]:
        """The device the rights must cover, per cluster (request values or cluster defaults)."""
        parts = {}
        for cluster_name in nodes:
            cluster = self.settings.clusters[cluster_name]
            device = options.block_device if options.block_device is not None else cluster.block_device
            if options.whole_disk:
                parts[cluster_name] = device  # whole-disk dd
            else:
                partition = options.deploy_partition if options.deploy_partition is not None \
                    else cluster.deploy_partition
                parts[cluster_name] = f"{device}{partition}"
        return parts

    async def _environment(self, identity: Identity, raw: Any) -> ResolvedEnvironment:
        if not isinstance(raw, dict):
            raise KadeployError(ErrorCode.MISSING_OPTION, "No environment given (parameter environment)")
        kind = raw.get("kind", "database")
        if kind == "anonymous":
            description = {k: v for k, v in raw.items() if k != "kind"}
            return ResolvedEnvironment.anonymous(description, identity.user)
        if kind != "database":
            raise KadeployError(ErrorCode.INVALID_ENVIRONMENT, f"Invalid environment kind {kind!r}")
        name = raw.get("name")
        if not name:
            raise KadeployError(ErrorCode.INVALID_ENVIRONMENT, "environment: name missing")
        version = raw.get("version")
        try:
            version = int(version) if version not in (None, "") else None
        except (TypeError, ValueError):
            raise KadeployError(ErrorCode.INVALID_ENVIRONMENT, f"environment: invalid version {version!r}") from None
        record = await self.environments.lookup(identity, str(name), raw.get("user") or None, version)
        return ResolvedEnvironment.recorded(record)

    async def _resume(self, identity: Identity, wid: str,
                      params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """The parameters of a resumed deployment and the resume point of each node (beyond Kadeploy3).

        The finished workflow `wid` recorded its request and where each of its
        failed or breakpointed nodes stopped; the new request keeps those
        parameters (new ones override them) and runs the nodes from there.
        """
        from kadeploy.db import workflows as db_workflows

        def load(session: Any) -> tuple[str, str, str, dict[str, Any] | None] | None:
            row = db_workflows.get_workflow(session, wid)
            return None if row is None else (row.kind, row.user, row.state, row.result)

        found = await self.environments.database.run(load)
        if found is None or found[0] != "deploy":
            raise KadeployError(ErrorCode.INVALID_WORKFLOW_ID, f"No deployment {wid} to resume")
        _, owner, state, result = found
        if owner != identity.user and not identity.admin:
            raise KadeployError(ErrorCode.INVALID_RIGHTS, f"The deployment {wid} belongs to {owner}")
        if state == WorkflowState.RUNNING or not result or "request" not in result:
            raise KadeployError(ErrorCode.INVALID_WORKFLOW_ID,
                                f"The deployment {wid} cannot be resumed (it is {state} or left no record)")
        points: dict[str, dict[str, Any]] = result.get("resume") or {}
        merged = dict(result["request"])
        merged.update({key: value for key, value in params.items() if key not in ("resume", "nodes")})
        requested = [n for nodes in resolve_nodes(self.settings, params).values() for n in nodes] \
            if params.get("nodes") else list(points)
        resumable = [node for node in requested if node in points]
        if not resumable:
            raise KadeployError(ErrorCode.NOTHING_MODIFIED,
                                f"None of the requested nodes failed or stopped at a breakpoint in {wid}")
        merged["nodes"] = resumable
        if "breakpoint" not in params:
            merged.pop("breakpoint", None)  # the resumed run goes past the breakpoint it stopped at
        return merged, points

    async def deployment(self, identity: Identity, params: dict[str, Any]) -> Operation:
        resume_points: dict[str, dict[str, Any]] | None = None
        resume_wid = as_str(params, "resume")
        if resume_wid:
            params, resume_points = await self._resume(identity, resume_wid, params)
        common = self._common("deploy", identity, params)
        received = {k: v for k, v in params.items() if k not in ("resume", "dry_run")}
        options = dict(common.options)
        if resume_points is not None:
            options["resume_points"] = {node: _resume_from(str(resume_wid), resume_points[node])
                                        for node in common.hostnames if node in resume_points} or None
        options["environment"] = await self._environment(identity, params.get("environment"))
        if params.get("boot_partition") not in (None, ""):
            options["boot_partition"] = as_int(params, "boot_partition", minimum=0)
        if "block_device" in options and "deploy_partition" not in options and "boot_partition" not in options:
            raise KadeployError(ErrorCode.MISSING_OPTION, "boot_partition is mandatory to deploy on a whole disk")
        for key in ("timeout_reboot_classical", "timeout_reboot_kexec"):
            options[key] = _check_timeout(params, key)
        for flag in ("disable_bootloader_install", "disable_disk_partitioning", "disable_kexec"):
            options[flag] = as_bool(params, flag)
        options["reformat_tmp_partition"] = as_str(params, "reformat_tmp_partition")
        options["automata"] = _automata(params)
        # beyond Kadeploy3: automatic redeployment of failed nodes (engine run_with_retries)
        options["retry_failed"] = as_int(params, "retry_failed", 0, minimum=0, maximum=10) or 0
        if params.get("min_success") not in (None, ""):
            try:
                ratio = float(params["min_success"])
            except (TypeError, ValueError):
                ratio = -1.0
            if not 0.0 < ratio <= 1.0:
                raise KadeployError(ErrorCode.INVALID_OPTION,
                                    f"min_success must be a ratio in ]0, 1] (got {params['min_success']!r})")
            options["min_success"] = ratio
        request = DeployRequest(**options)
        self._check_image_target(common.nodes, request)
        await self.rights.check(identity, common.hostnames)
        for cluster_name, part in self._deploy_part(common.nodes, request).items():
            await self.rights.check(identity, common.nodes[cluster_name], part)
        # Kadeploy3 (kadeploy.rb): a multipart environment also needs the right on every device it writes
        env = request.environment.description
        multipart_parts = [multipart_boot_device(env), *multipart_devices(env)]
        for part in dict.fromkeys(p for p in multipart_parts if p):
            await self.rights.check(identity, common.hostnames, part)
        op = common.operation(request, request=received)
        await self._resolve_vlan(op)
        return op

    async def _resolve_vlan(self, op: Operation) -> None:
        """`vlan`: each node's address in that VLAN, resolved now (Kadeploy3's kaworkflow.rb).

        A name that does not resolve refuses the request before any node is
        touched; after `set_vlan` the nodes are reached at these addresses.
        """
        vlan = op.options.vlan
        if vlan is None:
            return
        suffix, set_cmd = self.settings.vlan_hostname_suffix, self.settings.vlan_set_cmd
        if not suffix or not set_cmd:
            missing = " and ".join(key for key, value in (("hostname_suffix", suffix), ("set_cmd", set_cmd))
                                   if not value)
            raise KadeployError(ErrorCode.INVALID_VLAN,
                                f"The VLAN management is disabled (server.conf network/vlan/{missing} not set)")
        op.vlan_addresses = await resolve_vlan_addresses(op.hostnames, suffix, str(vlan))

    def _check_image_target(self, nodes: dict[str, list[str]], request: DeployRequest) -> None:
        """Refuse, before any reboot, an image that cannot go where the request puts it."""
        env = request.environment.description
        kind = env.image.kind
        if request.whole_disk and kind != "dd":
            # Kadeploy3's check_config; its wording
            raise KadeployError(ErrorCode.INVALID_OPTION,
                                f"You can only deploy directly on block device when using a dd image "
                                f"(the environment {env.name} is a {kind} image)")
        for part in self._deploy_part(nodes, request).values():
            problem = multipart_target_problem(env, part)
            if problem:
                raise KadeployError(ErrorCode.CONFLICTING_OPTIONS, problem)

    async def reboot(self, identity: Identity, params: dict[str, Any]) -> Operation:
        common = self._common("reboot", identity, params)
        options = dict(common.options)
        kind = as_str(params, "kind")
        if kind is None:
            raise KadeployError(ErrorCode.MISSING_OPTION, "No reboot kind given (simple, set_pxe, deploy_env, "
                                                          "recorded_env)")
        if kind not in REBOOT_KINDS:
            raise KadeployError(ErrorCode.INVALID_OPTION, f"Invalid reboot kind {kind!r}")
        level = as_str(params, "level", "soft")
        if level not in LEVELS:
            raise KadeployError(ErrorCode.INVALID_OPTION, f"Invalid level {level!r} (soft, hard, very_hard)")
        options.update(kind=kind, level=level, check_destructive=as_bool(params, "check_destructive"))
        if kind == "set_pxe" and options["pxe"] is None:
            raise KadeployError(ErrorCode.MISSING_OPTION, "A PXE profile is mandatory for a set_pxe reboot")
        if kind == "recorded_env":
            if params.get("environment") is None or "deploy_partition" not in options:
                raise KadeployError(ErrorCode.MISSING_OPTION,
                                    "An environment and a deploy partition are mandatory for a recorded_env reboot")
            env = dict(params["environment"]) if isinstance(params["environment"], dict) else params["environment"]
            if isinstance(env, dict):
                env.setdefault("kind", "database")
            options["environment"] = await self._environment(identity, env)
            # reference 5.2: a node rebooted onto its cluster's prod partition runs its production env
            options["prod_env_nodes"] = tuple(sorted(
                node for name, nodes in common.nodes.items() for node in nodes
                if name in self.settings.clusters
                and self.settings.clusters[name].prod_partition == options["deploy_partition"]))
        elif params.get("environment") is not None:
            raise KadeployError(ErrorCode.CONFLICTING_OPTIONS, "An environment is only meaningful for recorded_env")
        if options["ssh_authorized_keys"] is not None and kind != "deploy_env":
            raise KadeployError(ErrorCode.CONFLICTING_OPTIONS, "A key can only be given with deploy_env reboots")
        options["timeout_reboot_classical"] = _check_timeout(params, "timeout_reboot_classical")
        await self.rights.check(identity, common.hostnames)
        op = common.operation(RebootRequest(**options))
        await self._resolve_vlan(op)
        return op

    async def power(self, identity: Identity, params: dict[str, Any], *, status_only: bool) -> Operation:
        common = self._common("power-status" if status_only else "power", identity, params)
        options = dict(common.options)
        if not status_only:
            status = as_str(params, "status")
            if status is None:
                raise KadeployError(ErrorCode.MISSING_OPTION, "No power status given (on, off)")
            if status not in ("on", "off"):
                raise KadeployError(ErrorCode.INVALID_OPTION, f"Invalid power status {status!r} (on, off)")
            level = as_str(params, "level", "soft")
            if level not in LEVELS:
                raise KadeployError(ErrorCode.INVALID_OPTION, f"Invalid level {level!r} (soft, hard, very_hard)")
            options.update(status=status, level=level)
        await self.rights.check(identity, common.hostnames)
        return common.operation(PowerRequest(**options))
