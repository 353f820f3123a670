"""Prometheus metrics of kadeploy3d (room `server`).

Written by hand in the text exposition format (version 0.0.4) rather than
with prometheus_client, to keep dependencies few: three families are enough
for operators: workflows running per kind, nodes per state (read from the
`nodes` table at scrape time) and a histogram of macro-step durations fed by
each finished operation's stats records.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

BUCKETS = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 3600.0, float("inf"))


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _bound(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(value)


class Metrics:
    """Counters kept in memory; `render` produces the /metrics document."""

    def __init__(self) -> None:
        self.running: dict[str, int] = {}
        self.started: dict[str, int] = {}
        self.step_buckets: dict[str, list[int]] = {}
        self.step_sum: dict[str, float] = {}
        self.step_count: dict[str, int] = {}

    def workflow_started(self, kind: str) -> None:
        self.running[kind] = self.running.get(kind, 0) + 1
        self.started[kind] = self.started.get(kind, 0) + 1

    def workflow_finished(self, kind: str) -> None:
        self.running[kind] = max(0, self.running.get(kind, 0) - 1)

    def observe_step(self, step: str, seconds: float) -> None:
        buckets = self.step_buckets.setdefault(step, [0] * len(BUCKETS))
        for index, bound in enumerate(BUCKETS):
            if seconds <= bound:
                buckets[index] += 1
        self.step_sum[step] = self.step_sum.get(step, 0.0) + seconds
        self.step_count[step] = self.step_count.get(step, 0) + 1

    def observe_stats(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Feed the step histogram from stats records (stepN name, stepN_duration)."""
        for record in records:
            for index in (1, 2, 3):
                step = record.get(f"step{index}")
                if step:
                    self.observe_step(str(step), float(record.get(f"step{index}_duration", 0) or 0))

    def render(self, node_states: Mapping[str, int]) -> str:
        lines = ["# HELP kadeploy_workflows_running Operations currently running, by kind.",
                 "# TYPE kadeploy_workflows_running gauge"]
        for kind in sorted(set(self.running) | {"deploy", "reboot", "power"}):
            lines.append(f'kadeploy_workflows_running{{kind="{_label(kind)}"}} {self.running.get(kind, 0)}')
        lines += ["# HELP kadeploy_workflows_started_total Operations started since the server started.",
                  "# TYPE kadeploy_workflows_started_total counter"]
        for kind, count in sorted(self.started.items()):
            lines.append(f'kadeploy_workflows_started_total{{kind="{_label(kind)}"}} {count}')
        lines += ["# HELP kadeploy_nodes Nodes per last known state.", "# TYPE kadeploy_nodes gauge"]
        for state, count in sorted(node_states.items()):
            lines.append(f'kadeploy_nodes{{state="{_label(state)}"}} {count}')
        lines += ["# HELP kadeploy_step_duration_seconds Duration of macro-step implementations per node.",
                  "# TYPE kadeploy_step_duration_seconds histogram"]
        for step in sorted(self.step_buckets):
            label = _label(step)
            for bound, count in zip(BUCKETS, self.step_buckets[step]):
                lines.append(f'kadeploy_step_duration_seconds_bucket{{step="{label}",le="{_bound(bound)}"}} {count}')
            lines.append(f'kadeploy_step_duration_seconds_sum{{step="{label}"}} {self.step_sum[step]}')
            lines.append(f'kadeploy_step_duration_seconds_count{{step="{label}"}} {self.step_count[step]}')
        return "\n".join(lines) + "\n"
