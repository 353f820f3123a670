"""`StepResult`: what any operation on a set of nodes returns, shared by every room.

The engine consumes it, and the boot, remote and broadcast rooms produce it,
so it lives below all of them. Imports nothing from other rooms.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class StepResult:
    """Nodes that succeeded, and the error text of each node that failed.

    `ko` holds the raw error text (usually the last stderr); the engine adds the
    `<Implementation>-<micro>: ` prefix. A node in both lists counts as failed,
    a node in neither fails with "no result".
    """

    ok: list[str] = field(default_factory=list)
    ko: dict[str, str] = field(default_factory=dict)
