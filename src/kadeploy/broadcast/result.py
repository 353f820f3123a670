"""What a broadcast returns: which nodes have the image, which do not and why."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class BroadcastResult:
    """Per-node outcome of one broadcast.

    `digest` is the server's digest of the stream (hex); every node in `ok`
    reported the same one. `seconds` is the wall time of the data transfer,
    relays start-up included.
    """

    ok: list[str] = field(default_factory=list)
    ko: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    digest: str = ""
    node_cpu_seconds: float = 0.0  # CPU used by the relays and local pipelines of all nodes (benchmarks)

    def record(self, hostname: str, ok: bool, reason: str | None) -> None:
        """One node's outcome: in `ok`, or in `ko` with its reason (a node never decided did not complete)."""
        if ok:
            self.ok.append(hostname)
        else:
            self.ko[hostname] = reason or "Broadcast did not complete"
