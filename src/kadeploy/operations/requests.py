"""What a user asked for, typed: the options of a deployment, a reboot, a power operation, a console.

The server (`server/requests.py`) builds these frozen objects from the
request's JSON, once, with every value checked and Kadeploy3's error codes;
the runner reads their attributes. Names are the API's (`block_device`,
`deploy_partition`, `timeout_reboot_classical`...), so that a field, the
`kadeploy3` option and the API parameter share one word.

Room `operations`; imports `catalog` and `config` only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from kadeploy.catalog.resolved import ResolvedEnvironment
from kadeploy.config.automata import ImplementationConf

RebootKind = Literal["simple", "set_pxe", "deploy_env", "recorded_env"]
Level = Literal["soft", "hard", "very_hard"]
REBOOT_KINDS: tuple[RebootKind, ...] = ("simple", "set_pxe", "deploy_env", "recorded_env")
LEVELS: tuple[Level, ...] = ("soft", "hard", "very_hard")


@dataclass(frozen=True)
class PxeRequest:
    """`pxe`: a user's PXE profile (`kareboot3 -w`), per-node singularities and the files it needs."""

    profile: str
    singularities: Mapping[str, str] = field(default_factory=dict)
    files: tuple[str, ...] = ()


@dataclass(frozen=True)
class ResumeFrom:
    """Where a resumed deployment starts a node again (recorded by the deployment it resumes)."""

    macro_index: int
    macro: str
    implementation: str | None = None
    micro: str | None = None


@dataclass(frozen=True, kw_only=True)
class WorkflowRequest:
    """Options every workflow request carries (Kadeploy3's common parameters).

    `custom_operations` is kept as the user wrote it: it is checked against
    the macro-steps of each cluster's deployment, which only the steps know
    (`kadeploy.steps.customops`).
    """

    hook: bool = False
    custom_operations: Mapping[str, Any] | None = None
    ssh_authorized_keys: str | None = None
    vlan: str | None = None
    pxe: PxeRequest | None = None
    block_device: str | None = None
    deploy_partition: int | None = None

    @property
    def whole_disk(self) -> bool:
        """A block device without a partition: the image goes onto the whole disk (dd images only)."""
        return self.block_device is not None and self.deploy_partition is None


@dataclass(frozen=True, kw_only=True)
class DeployRequest(WorkflowRequest):
    """POST /deployment (`kadeploy3`)."""

    environment: ResolvedEnvironment
    boot_partition: int | None = None
    timeout_reboot_classical: str | None = None
    timeout_reboot_kexec: str | None = None
    disable_bootloader_install: bool = False
    disable_disk_partitioning: bool = False
    disable_kexec: bool = False
    reformat_tmp_partition: str | None = None
    #: `--force-steps`: the automaton to run instead of the cluster's
    automata: Mapping[str, list[ImplementationConf]] | None = None
    #: beyond Kadeploy3: rounds of automatic redeployment of the failed nodes, and the success ratio to reach
    retry_failed: int = 0
    min_success: float | None = None
    #: `kadeploy3 --resume WID`: where each node starts again (None for a new deployment)
    resume_points: Mapping[str, ResumeFrom] | None = None


@dataclass(frozen=True, kw_only=True)
class RebootRequest(WorkflowRequest):
    """POST /reboot (`kareboot3`)."""

    kind: RebootKind
    level: Level = "soft"
    check_destructive: bool = False
    #: `recorded_env` reboots only: the environment to boot, and the nodes whose target is their prod partition
    environment: ResolvedEnvironment | None = None
    prod_env_nodes: tuple[str, ...] = ()
    timeout_reboot_classical: str | None = None


@dataclass(frozen=True, kw_only=True)
class PowerRequest(WorkflowRequest):
    """PUT /power (`kapower3 --on/--off`) and GET /power (`--status`: `status` is None)."""

    status: Literal["on", "off"] | None = None
    level: Level = "soft"


@dataclass(frozen=True)
class ConsoleRequest:
    """POST /console (`kaconsole3`): open `node`'s console for `user` as workflow `wid`."""

    wid: str
    node: str
    user: str
