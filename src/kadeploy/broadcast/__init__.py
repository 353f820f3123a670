"""broadcast room: sending an image to many nodes, decompressed on the fly.

Imports `kadeploy.remote`, `kadeploy.nodeset` and `kadeploy.errors` only.
Methods (docs/contracts.md, "broadcast"): `kascade` (fault-tolerant pipelined
chain, the default), `chain` (plain chain, Kastafior semantics), `tree`
(fan-out k tree of relays), `flat` (one SSH stream per node, the baseline).
The node side is `relay.py`, one stdlib-only file sent over SSH.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kadeploy.broadcast.bittorrent import BittorrentBroadcast, BittorrentOptions
from kadeploy.broadcast.flat import flat_broadcast
from kadeploy.broadcast.pipeline import DEFAULT_RING, Pipeline, PipelineOptions
from kadeploy.broadcast.result import BroadcastResult
from kadeploy.broadcast.topology import chain_order
from kadeploy.errors import ErrorCode, KadeployError
from kadeploy.remote import Executor
from kadeploy.vocabulary import REGISTRIES, Kind

#: The broadcast methods of this room, declared once; `BroadcastEnv*` implementations
#: name theirs (kadeploy.steps.macrosteps) and the vocabulary checks the names.
METHODS = REGISTRIES[Kind.BROADCAST]
METHODS.declare("kascade", "pipeline", "fault-tolerant pipelined chain: a dead or stalled node is bypassed")
METHODS.declare("chain", "pipeline", "pipelined chain of relays (Kastafior's method)")
METHODS.declare("tree", "pipeline", "tree of relays of arity k; a dead node's children are adopted")
METHODS.declare("flat", "flat", "one SSH stream per node from the server (the baseline)")
METHODS.declare("bittorrent", "bittorrent",
                "BitTorrent swarm: aria2c on every node, a private torrent, opentracker and a seed on the server")


async def broadcast(image: Path, hosts: Sequence[tuple[str, str]], sink_command: str, *,
                    method: str = "kascade", executor: Executor, timeout: float | None = None,
                    tree_arity: int = 2, topology: Mapping[str, str] | None = None,
                    switch_parents: Mapping[str, str] | None = None, digest: str | None = None,
                    stall: float = 30.0, ring: int = DEFAULT_RING, start_timeout: float = 30.0,
                    relay_options: Mapping[str, Mapping[str, Any]] | None = None,
                    digest_algorithm: str = PipelineOptions.digest,
                    store: str = BittorrentOptions.store) -> BroadcastResult:
    """Send `image` to every `(hostname, address)` and feed it to `sink_command` there.

    Never raises for a node failure: each node ends in `ok` or in `ko` with its
    reason. Raises KadeployError before touching any node when the image cannot
    be read or the method is unknown. `topology` (hostname -> switch) and
    `switch_parents` order the chain switch by switch; `digest` (hex) skips
    hashing the image on the server when the cache already knows it;
    `relay_options` adds per-host relay settings (test hooks such as `corrupt_at`);
    `digest_algorithm` is the stream check every node computes (a hashlib name or "crc32");
    `store` is where each node keeps the image for `bittorrent` (its tmp partition).
    """
    try:
        engine = METHODS.get(method)
    except ValueError as exc:
        raise KadeployError(ErrorCode.INVALID_OPTION, str(exc)) from None
    if engine not in ("pipeline", "flat", "bittorrent"):
        raise KadeployError(ErrorCode.INVALID_OPTION, f"the broadcast method {method!r} runs outside this room")
    if tree_arity < 1:
        raise KadeployError(ErrorCode.INVALID_OPTION, f"Invalid tree arity {tree_arity}: must be at least 1")
    total = _readable_size(Path(image))
    addresses = dict(hosts)
    order = [(hostname, addresses[hostname]) for hostname in chain_order(list(addresses), topology, switch_parents)]
    if not order:
        return BroadcastResult(digest=digest or "")
    options = PipelineOptions(stall=stall, ring=ring, start_timeout=start_timeout, digest=digest_algorithm,
                              relay_options=dict(relay_options or {}))
    if engine == "bittorrent":
        swarm = BittorrentBroadcast(Path(image), total, order, sink_command, executor=executor, digest=digest,
                                    options=BittorrentOptions(store=store, stall=stall, start_timeout=start_timeout,
                                                              digest=digest_algorithm,
                                                              node_options=dict(relay_options or {})))
        return await swarm.run(timeout)
    if engine == "flat":
        return await flat_broadcast(Path(image), total, order, sink_command, executor=executor,
                                    timeout=timeout, options=options, digest=digest)
    pipeline = Pipeline(Path(image), total, order, sink_command, executor=executor, method=method,
                        tree_arity=tree_arity, options=options, digest=digest)
    return await pipeline.run(timeout)


def _readable_size(image: Path) -> int:
    """Size of the image, or a clear error if the server cannot read it."""
    try:
        with open(image, "rb") as source:
            source.read(1)
            return os.fstat(source.fileno()).st_size
    except OSError as exc:
        raise KadeployError(ErrorCode.INVALID_FILE,
                            f"Cannot read the environment image {image}: {exc.strerror or exc}") from None


__all__ = ["METHODS", "BroadcastResult", "PipelineOptions", "broadcast"]
