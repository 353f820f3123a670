"""A kadeploy3d whose runner touches no node: the server's API, catalogue and logs under test.

Room: testbed (a test double, outside the product on purpose: `kadeploy3d`
has no way to pretend). `python -m kadeploy_testbed.dummy` is `kadeploy3d`
with the same options, configuration and environment variables, except that
every operation is run by `DummyRunner`: each node waits
`KADEPLOY3_DUMMY_DELAY` seconds (0 by default) then succeeds. With
`KADEPLOY3_DUMMY_GRAB=1`, deployments first grab and check the environment's
files with the server's real fetcher (checksums, cache references), so that
the catalogue's file handling is what the tests see. Tests of the HTTP layer build `create_app(..., DummyRunner())`
directly.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

from kadeploy.catalog.files import FileFetcher, fetcher_from_config
from kadeploy.catalog.grab import grab_environment
from kadeploy.errors import ConfigError
from kadeploy.server.daemon import main as daemon_main
from kadeploy.operations import NodeOutcome, Operation, OperationOutcome, Services, WorkflowSink
from kadeploy.server.settings import ServerSettings

_DUMMY_STEPS = {"deploy": ("SetDeploymentEnvDummy", "BroadcastEnvDummy", "BootNewEnvDummy"),
                "reboot": ("SetDeploymentEnvDummy", "", ""), "power": ("PowerDummy", "", ""),
                "power-status": ("PowerDummy", "", "")}
_TITLE = {"deploy": "deployment", "reboot": "reboot", "power": "power operation", "power-status": "power operation"}


class DummyRunner:
    """Every node waits `delay` seconds then succeeds (or fails if listed in `failing`)."""

    def __init__(self, delay: float = 0.0, failing: dict[str, str] | None = None,
                 fetcher: FileFetcher | None = None) -> None:
        self.delay = delay
        self.failing = dict(failing or {})
        # with a `kadeploy.catalog.files.FileFetcher`, deployments grab and check the environment's
        # files as the engine runner does (checksums, cache references), then pretend to deploy
        self.fetcher = fetcher

    async def run(self, op: Operation, sink: WorkflowSink) -> OperationOutcome:
        """Run each cluster concurrently; one macro-step named after the operation kind."""
        if self.fetcher is None or op.kind != "deploy" or op.environment is None:
            return await self._run(op, sink)
        try:
            files = await grab_environment(self.fetcher, op.environment, client=op.client, wid=op.wid)
            outcome = await self._run(op, sink)
            for record in outcome.stats:
                record["md5"] = files.image.checksum  # as the engine runner records it
            return outcome
        finally:
            self.fetcher.release(op.wid)

    async def _run(self, op: Operation, sink: WorkflowSink) -> OperationOutcome:
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
        env = op.environment
        steps = _DUMMY_STEPS[op.kind]
        duration = int(time.time() - start)
        stats = [{"wid": op.wid, "user": op.user, "hostname": node, "step1": steps[0], "step2": steps[1],
                  "step3": steps[2], "start": int(start), "step1_duration": duration,
                  "env": env.label if env is not None else "",
                  "anonymous_env": env is not None and not env.is_recorded,
                  "success": outcome.state != "ko", "error": outcome.error,
                  "micro_steps": [[steps[0], "dummy", round(time.time() - start, 3)]]}
                 for node, outcome in outcomes.items()]
        return OperationOutcome(outcomes, stats)


def dummy_services(cfg: Any, _settings: ServerSettings) -> Services:
    """The daemon's services with `DummyRunner`; the delay comes from KADEPLOY3_DUMMY_DELAY."""
    text = os.environ.get("KADEPLOY3_DUMMY_DELAY", "0")
    try:
        delay = float(text)
    except ValueError:
        raise ConfigError(f"KADEPLOY3_DUMMY_DELAY: expected a number of seconds, got {text!r}") from None
    fetcher = fetcher_from_config(cfg)
    grab = os.environ.get("KADEPLOY3_DUMMY_GRAB") == "1"
    return Services(DummyRunner(delay=delay, fetcher=fetcher if grab else None), fetcher)


def main(argv: list[str] | None = None) -> int:
    return daemon_main(argv, services_factory=dummy_services)


if __name__ == "__main__":
    sys.exit(main())
