"""Operations and the pluggable runner that executes them (room `operations`).

The server validates a request into an `Operation` and hands it to an
`OperationRunner`; the runner reports progress through a `WorkflowSink` and
returns an `OperationOutcome`. The product has one runner, the engine +
steps runner (`kadeploy.steps.runner.create_services`), which the daemon
builds at start and passes to the server in `Services`; a runner that
pretends (the tests' `DummyRunner`) lives in the testbed distribution, never
here.

This room sits below both the server and the steps: each imports it, it
imports neither (only `catalog`, `config` and `states`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from kadeploy.catalog.resolved import ResolvedEnvironment
from kadeploy.operations.requests import ConsoleRequest, DeployRequest, PowerRequest, RebootRequest
from kadeploy.states import SUCCEEDED, NodeState

if TYPE_CHECKING:
    from kadeploy.catalog.files import FileFetcher

OperationKind = Literal["deploy", "reboot", "power", "power-status"]
#: how an operation ended for a node: NodeState.OK, KO or BRK
NodeVerdict = NodeState

WID_PREFIX: dict[str, str] = {"deploy": "D-", "reboot": "R-", "power": "P-", "power-status": "P-", "console": "C-"}


@dataclass
class Operation:
    """A validated request, ready to run.

    `nodes` are the nodes this workflow holds (claims already taken), grouped
    by cluster; `addresses` maps each hostname to its clusters.conf address,
    `vlan_addresses` to its address in the requested VLAN (`options.vlan`,
    resolved with the request). `options` holds the kind's typed, validated
    options (`DeployRequest` for a deployment, `RebootRequest`,
    `PowerRequest` for power and power-status operations).
    """

    wid: str
    kind: OperationKind
    user: str
    nodes: dict[str, list[str]]
    options: DeployRequest | RebootRequest | PowerRequest
    addresses: dict[str, str] = field(default_factory=dict)
    vlan_addresses: dict[str, str] = field(default_factory=dict)
    verbose_level: int = 3
    debug: bool = False
    force: bool = False
    breakpoint: str | None = None
    client: str | None = None
    #: the request parameters as received (JSON-safe), kept so that a deployment can be resumed
    request: dict[str, Any] = field(default_factory=dict)

    @property
    def hostnames(self) -> list[str]:
        """All nodes of the operation, cluster by cluster."""
        return [node for nodes in self.nodes.values() for node in nodes]

    @property
    def environment(self) -> ResolvedEnvironment | None:
        """The environment deployed (or booted by a `recorded_env` reboot), None for other operations."""
        if isinstance(self.options, (DeployRequest, RebootRequest)):
            return self.options.environment
        return None


class WorkflowSink(Protocol):
    """Where a runner reports progress; the server timestamps and stores it for polling."""

    def log(self, cluster: str | None, level: int, text: str) -> None:
        """One output line (Kadeploy3 text), shown when `level` <= the client's verbose level."""

    def debug(self, node: str, text: str) -> None:
        """One debug line of a node (commands, stdout, stderr), kept only when `debug` was asked."""

    def node_state(self, hostname: str, macro: str, micro: str, state: str,
                   error: str | None = None, out: str | None = None) -> None:
        """The node's current step and state (`ok`, `ko`, `reboot_in_progress`, `brk`...)."""

    def set_status_provider(self, provider: Callable[[], dict[str, Any]]) -> None:
        """A function giving the live per-cluster, per-step status (for GET .../status)."""


@dataclass
class NodeOutcome:
    """How the operation ended for one node."""

    state: NodeVerdict
    error: str = ""
    out: str | None = None


@dataclass
class OperationOutcome:
    """Per-node verdicts and stats records (reference section 8 field names)."""

    nodes: dict[str, NodeOutcome]
    stats: list[dict[str, Any]] = field(default_factory=list)
    #: per failed or breakpointed node, where a resumed deployment starts it again
    #: ({"macro_index", "macro", "implementation", "micro"}: stored with the workflow as JSON)
    resume: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def ok(self) -> list[str]:
        """Succeeded and breakpointed nodes (Kadeploy3 counts both as ok)."""
        return [host for host, outcome in self.nodes.items() if outcome.state in SUCCEEDED]

    @property
    def ko(self) -> list[str]:
        """Failed nodes."""
        return [host for host, outcome in self.nodes.items() if outcome.state == NodeState.KO]


class OperationRunner(Protocol):
    """Runs an operation; cancelling the task that awaits `run` is the kill switch."""

    async def run(self, op: Operation, sink: WorkflowSink) -> OperationOutcome:
        """Execute `op`, reporting through `sink`."""


class ConsoleSession(Protocol):
    """An open console: a TCP endpoint bridged to the node's console command."""

    uri: str                      # tcp://<server>:<port>

    @property
    def attached(self) -> bool:
        """A client is connected."""

    @property
    def error(self) -> str | None:
        """Why the console ended, if it failed."""

    async def close(self) -> None:
        """Kill the console command's process tree and stop listening."""


class ConsoleFactory(Protocol):
    """Opens consoles (POST /console); the product's is `kadeploy.steps.console.ConsoleFactory`."""

    def check(self, node: str) -> object:
        """Raise the KadeployError `open` would raise for `node` (no console command...); open nothing."""

    async def open(self, request: ConsoleRequest) -> ConsoleSession:
        """Start listening for the node's console; KadeployError if no console command exists."""


@dataclass(frozen=True)
class Services:
    """What the server runs operations with, built once at start by the daemon's factory.

    One object instead of attributes probed with `hasattr`: the runner, the
    file fetcher it grabs environments with (the catalogue uses the same one
    for recorded environments' checksums) and the console opener, which needs
    the runner's per-cluster command tables.
    """

    runner: OperationRunner
    fetcher: FileFetcher
    console_factory: ConsoleFactory | None = None
