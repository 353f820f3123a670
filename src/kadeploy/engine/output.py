"""Where a workflow's text and node states go, and the Kadeploy3 wording they use.

The engine writes the very lines Kadeploy3 prints (reference 2.3, 5.11) with a
verbosity level 0-5; the sink (the server's per-workflow log, or `ListOutput`
in tests) timestamps, filters by the client's level and stores them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

KINDS = ("Deploy", "Reboot", "Power")

# Kadeploy3's `opname`: "End of deployment for ...", "Reboot failed for ...".
OPERATION_NAMES = {"Deploy": "deployment", "Reboot": "reboot", "Power": "power operation"}


class OutputSink(Protocol):
    """Receives a workflow's output lines and per-node state changes."""

    def log(self, level: int, text: str, nodeset_id: str | None = None) -> None:
        """One output line, already prefixed with `[<nodeset id>] ` when node sets have split."""

    def node_state(self, hostname: str, macro: str | None, micro: str | None,
                   state: str, error: str | None = None) -> None:
        """A node's `/state` entry changed (`ok`, `ko`, `brk`, `aborted` or an in-progress state)."""


@dataclass
class LogLine:
    level: int
    text: str
    nodeset_id: str | None


@dataclass
class StateChange:
    hostname: str
    macro: str | None
    micro: str | None
    state: str
    error: str | None


@dataclass
class ListOutput:
    """An `OutputSink` that keeps everything in memory (tests, dry runs)."""

    lines: list[LogLine] = field(default_factory=list)
    states: list[StateChange] = field(default_factory=list)

    def log(self, level: int, text: str, nodeset_id: str | None = None) -> None:
        self.lines.append(LogLine(level, text, nodeset_id))

    def node_state(self, hostname: str, macro: str | None, micro: str | None,
                   state: str, error: str | None = None) -> None:
        self.states.append(StateChange(hostname, macro, micro, state, error))

    def texts(self, verbosity: int = 5) -> list[str]:
        """The lines a client at this verbosity level would see."""
        return [line.text for line in self.lines if line.level <= verbosity]

    def last_state(self, hostname: str) -> StateChange | None:
        for change in reversed(self.states):
            if change.hostname == hostname:
                return change
        return None


def nodeset_label(nodeset_id: int | None, cluster_prefix: str | None) -> str | None:
    """`3`, `c0.3`, `c0` or None: the id shown between brackets (Kadeploy3 `Debug.prefix`).

    The first node set (id 0) is not labelled on a single-cluster operation, so
    that output is unprefixed until a node set splits.
    """
    shown = nodeset_id if nodeset_id is not None and nodeset_id > 0 else None
    if cluster_prefix:
        return cluster_prefix if shown is None else f"{cluster_prefix}.{shown}"
    return None if shown is None else str(shown)


def line_prefix(nodeset_id: int | None, cluster_prefix: str | None) -> str:
    label = nodeset_label(nodeset_id, cluster_prefix)
    return f"[{label}] " if label else ""
