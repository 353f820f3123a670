"""Micro-steps that write the environment's image onto the nodes.

Room: steps. `send_environment` streams the image to every node with the
broadcast method its BroadcastEnv implementation declares (`kadeploy.broadcast`'s
chain, kascade or tree, or the administrator's command for
BroadcastEnvCustom, declared here as the broadcast method `custom`); each
node unpacks it onto its partition as it arrives. `decompress_environment`
finishes the images that cannot be unpacked on the fly (fsa, stored files).
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Protocol

from kadeploy.boot.process import run_process
from kadeploy.broadcast import broadcast
from kadeploy.engine import MicroContext, StepResult
from kadeploy.errors import ErrorCode, KadeployError
from kadeploy.steps import commands
from kadeploy.steps.context import FileRef
from kadeploy.steps.macrosteps import deploy_implementation
from kadeploy.steps.micro.shared import NodeShell, microstep, remote
from kadeploy.steps.plan import DeployPlan
from kadeploy.vocabulary import REGISTRIES, Kind

#: BroadcastEnvCustom's method is the administrator's command, run here (`_custom_broadcast`).
REGISTRIES[Kind.BROADCAST].declare("custom", "server command",
                                   "the administrator's command (localops/broadcastenv/cmd), run on the server")


class ImageRun(NodeShell, Protocol):
    """What the image micro-steps read: the fetched image, the plan's sink, the topology, the custom command."""

    @property
    def plan(self) -> DeployPlan: ...
    @property
    def image(self) -> FileRef | None: ...
    @property
    def image_digest(self) -> str | None: ...
    @property
    def hosts(self) -> dict[str, str]:
        """hostname -> where it is reached now (the custom command's NODEFILE lists these)."""
    @property
    def topology(self) -> dict[str, str]:
        """hostname -> switch: the chain is ordered by switch."""
    @property
    def switch_parents(self) -> dict[str, str]: ...
    @property
    def custom_broadcast_cmd(self) -> str | None:
        """BroadcastEnvCustom's `localops/broadcastenv/cmd` template."""
    @property
    def connector(self) -> str:
        """The SSH connector the custom command may use (TAKTUK_CONNECTOR)."""

    async def relay_addresses(self, nodes: list[str]) -> tuple[list[tuple[str, str]], dict[str, str]]: ...


@microstep("send_environment", "broadcast the image to the nodes with the macro-step's method")
async def send_environment(run: ImageRun, ctx: MicroContext, nodes: list[str]) -> StepResult:
    if run.image is None:
        raise KadeployError(ErrorCode.INVALID_FILE, "No image to send")
    method = deploy_implementation(ctx.implementation).broadcast
    if method is None:
        raise KadeployError(ErrorCode.INVALID_OPTION, f"{ctx.implementation} declares no broadcast method")
    if method == "custom":
        return await _custom_broadcast(run, ctx, nodes)
    start = time.monotonic()
    relays, unresolved = await run.relay_addresses(nodes)
    result = await broadcast(run.image.path, relays,
                             commands.image_sink(run.plan), method=method, executor=run.executor,
                             timeout=ctx.timeout, digest=run.image_digest,
                             topology=run.topology or None, switch_parents=run.switch_parents or None,
                             store=run.plan.tmp_dir)
    ctx.debug(3, f"Broadcast time: {round(time.monotonic() - start)}s")
    return StepResult(ok=list(result.ok), ko={**unresolved, **result.ko})


async def _custom_broadcast(run: ImageRun, ctx: MicroContext, nodes: list[str]) -> StepResult:
    """BroadcastEnvCustom: the admin's command, run on the server (reference 3.3 `localops`).

    ENVFILE, NODEFILE, DECOMPRESS and TAKTUK_CONNECTOR are substituted; the
    command's exit status decides for every node, as in Kadeploy3.
    """
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
async def decompress_environment(run: ImageRun, ctx: MicroContext, nodes: list[str]) -> StepResult:
    return await remote(run, nodes, commands.decompress_stored_image(run.plan), timeout=ctx.timeout)
