"""Operations and the pluggable runner that executes them (room `server`).

The HTTP layer validates a request into an `Operation` and hands it to an
`OperationRunner`; the runner reports progress through a `WorkflowSink` and
returns an `OperationOutcome`. The server ships `DummyRunner` (every node
waits a configurable time then succeeds), used by tests and by the `Dummy`
automaton names; the real engine + steps runner is plugged in by whoever
builds the app (`create_app(..., runner=...)`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

OperationKind = Literal["deploy", "reboot", "power", "power-status"]
NodeVerdict = Literal["ok", "ko", "brk"]

WID_PREFIX: dict[str, str] = {"deploy": "D-", "reboot": "R-", "power": "P-", "power-status": "P-", "console": "C-"}
# Node states written in the DB when an operation starts / ends (reference 1.8).
START_STATE: dict[str, str] = {"deploy": "deploying", "reboot": "rebooting", "power": "powering"}
END_STATE: dict[str, tuple[str, str]] = {"deploy": ("deployed", "deploy_failed"),
                                         "reboot": ("rebooted", "reboot_failed"),
                                         "power": ("powered", "power_failed")}


@dataclass
class Operation:
    """A validated request, ready to run.

    `nodes` are the nodes this workflow holds (claims already taken), grouped
    by cluster; `addresses` maps each hostname to its clusters.conf address,
    `vlan_addresses` to its address in the requested VLAN (`vlan`, resolved
    with the request).
    `params` holds the kind-specific validated parameters (environment hash,
    block_device, deploy_partition, reboot kind and level, power status,
    automata, custom_operations, pxe, vlan, timeouts...), named as in the API.
    """

    wid: str
    kind: OperationKind
    user: str
    nodes: dict[str, list[str]]
    addresses: dict[str, str] = field(default_factory=dict)
    vlan_addresses: dict[str, str] = field(default_factory=dict)
    environment: dict[str, Any] | None = None
    params: dict[str, Any] = field(default_factory=dict)
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
    #: ({"macro_index", "macro", "implementation", "micro"})
    resume: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def ok(self) -> list[str]:
        """Succeeded and breakpointed nodes (Kadeploy3 counts both as ok)."""
        return [host for host, outcome in self.nodes.items() if outcome.state in ("ok", "brk")]

    @property
    def ko(self) -> list[str]:
        """Failed nodes."""
        return [host for host, outcome in self.nodes.items() if outcome.state == "ko"]


class OperationRunner(Protocol):
    """Runs an operation; cancelling the task that awaits `run` is the kill switch."""

    async def run(self, op: Operation, sink: WorkflowSink) -> OperationOutcome:
        """Execute `op`, reporting through `sink`."""


_DUMMY_STEPS = {"deploy": ("SetDeploymentEnvDummy", "BroadcastEnvDummy", "BootNewEnvDummy"),
                "reboot": ("SetDeploymentEnvDummy", "", ""), "power": ("PowerDummy", "", ""),
                "power-status": ("PowerDummy", "", "")}
_TITLE = {"deploy": "deployment", "reboot": "reboot", "power": "power operation", "power-status": "power operation"}


class DummyRunner:
    """Every node waits `delay` seconds then succeeds (or fails if listed in `failing`)."""

    def __init__(self, delay: float = 0.0, failing: dict[str, str] | None = None, fetcher: Any = None) -> None:
        self.delay = delay
        self.failing = dict(failing or {})
        # with a `kadeploy.catalog.files.FileFetcher`, deployments grab and check the environment's
        # files as the engine runner does (checksums, cache references), then pretend to deploy
        self.fetcher = fetcher

    async def run(self, op: Operation, sink: WorkflowSink) -> OperationOutcome:
        """Run each cluster concurrently; one macro-step named after the operation kind."""
        if self.fetcher is None or op.kind != "deploy" or not op.environment:
            return await self._run(op, sink)
        from kadeploy.catalog.grab import grab_environment

        try:
            files = await grab_environment(self.fetcher, op.environment, client=op.client, wid=op.wid)
            outcome = await self._run(op, sink)
            for record in outcome.stats:
                record["md5"] = files.image.checksum  # as the engine runner records it
            return outcome
        finally:
            self.fetcher.release(op.wid)

    async def _run(self, op: Operation, sink: WorkflowSink) -> OperationOutcome:
        import time

        start = time.time()
        macro = _DUMMY_STEPS[op.kind][0]
        status: dict[str, Any] = {}
        sink.set_status_provider(lambda: status)

        async def one_cluster(cluster: str, nodes: list[str]) -> dict[str, NodeOutcome]:
            sink.log(cluster, 0, f"Launching a {_TITLE[op.kind]} on {', '.join(nodes)}")
            sink.log(cluster, 1, f"Performing a {macro} step")
            status[cluster] = {macro: {"dummy": {"nodes": {"OK": [], "KO": [], "**": list(nodes)}, "time": 0}}}
            for node in nodes:
                sink.node_state(node, macro, "dummy", "processing")
            await asyncio.sleep(self.delay)
            outcomes: dict[str, NodeOutcome] = {}
            for node in nodes:
                error = self.failing.get(node)
                if error is not None:
                    outcomes[node] = NodeOutcome("ko", f"{macro}-dummy: {error}")
                    sink.node_state(node, macro, "dummy", "ko", outcomes[node].error)
                else:
                    out = "on" if op.kind == "power-status" else None
                    outcomes[node] = NodeOutcome("ok", out=out)
                    sink.node_state(node, macro, "dummy", "ok", out=out)
                    if out is not None:
                        sink.log(cluster, 0, f"{node}: {out}")
                sink.debug(node, f"dummy step on {node}: {outcomes[node].state}")
            status[cluster][macro]["dummy"] = {"nodes": {"OK": [n for n in nodes if outcomes[n].state == "ok"],
                                                         "KO": [n for n in nodes if outcomes[n].state == "ko"],
                                                         "**": []}, "time": round(time.time() - start)}
            sink.log(cluster, 1, f"End of step {macro} after {round(time.time() - start)}s")
            sink.log(cluster, 0, f"End of {_TITLE[op.kind]} on cluster {cluster} after {round(time.time() - start)}s")
            return outcomes

        results = await asyncio.gather(*(one_cluster(c, n) for c, n in op.nodes.items()))
        outcomes = {node: outcome for result in results for node, outcome in result.items()}
        env = op.environment or {}
        steps = _DUMMY_STEPS[op.kind]
        duration = int(time.time() - start)
        stats = [{"wid": op.wid, "user": op.user, "hostname": node, "step1": steps[0], "step2": steps[1],
                  "step3": steps[2], "start": int(start), "step1_duration": duration,
                  "env": f"{env.get('name', '')}:{env.get('version', '')}" if env else "",
                  "anonymous_env": bool(env) and "id" not in env,
                  "success": outcome.state != "ko", "error": outcome.error,
                  "micro_steps": [[steps[0], "dummy", round(time.time() - start, 3)]]}
                 for node, outcome in outcomes.items()]
        return OperationOutcome(outcomes, stats)
