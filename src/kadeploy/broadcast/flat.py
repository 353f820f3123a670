"""The flat method: one SSH stream per node, the baseline the pipelines are measured against.

Every node runs the relay in stdin mode (so it reports the same digest and
pipeline status as in a chain); the server sends the image N times, bounded by
the executor's window.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

from kadeploy.broadcast.pipeline import PipelineOptions, relay_command
from kadeploy.broadcast.result import BroadcastResult
from kadeploy.broadcast.source import file_digest
from kadeploy.remote import Executor


async def flat_broadcast(image: Path, total: int, order: Sequence[tuple[str, str]], sink_command: str, *,
                         executor: Executor, timeout: float | None, options: PipelineOptions,
                         digest: str | None = None) -> BroadcastResult:
    started = time.monotonic()
    expected = digest or await file_digest(image, options.digest)
    config = {"total": total, "sink": sink_command, "digest": options.digest, "mode": "stdin",
              "ring": min(options.ring, 64 * 1024 * 1024)}
    results = await executor.run(dict(order), relay_command(config), input=image, timeout=timeout)
    outcome = BroadcastResult(seconds=0.0, digest=expected)
    for hostname, _address in order:
        result = results[hostname]
        event: dict[str, object] = {}
        for line in reversed(result.stdout.splitlines()):
            try:
                event = json.loads(line)
                break
            except ValueError:
                continue
        if not result.ok:
            outcome.ko[hostname] = result.reason
        elif event.get("ev") != "done":
            outcome.ko[hostname] = f"No report from the node: {result.stderr.strip() or result.stdout.strip()}"
        elif event.get("received") != total:
            outcome.ko[hostname] = f"Incomplete stream: {event.get('received')} of {total} bytes"
        elif event.get("digest") != expected:
            outcome.ko[hostname] = f"Digest mismatch: the node computed {event.get('digest')}, the server {expected}"
        elif event.get("sink_status") != 0:
            outcome.ko[hostname] = (f"Local pipeline failed (exit status {event.get('sink_status')}): "
                                    f"{event.get('sink_error') or 'no error output'}")
        else:
            outcome.ok.append(hostname)
        outcome.node_cpu_seconds += float(event.get("cpu", 0.0) or 0.0)  # type: ignore[arg-type]
    outcome.seconds = time.monotonic() - started
    return outcome
