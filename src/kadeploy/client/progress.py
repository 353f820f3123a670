"""Live progress on a terminal: per macro-step counts of nodes OK, KO and in progress.

Client room. Used only when stdout is a TTY (and not `--no-progress`): the
Kadeploy3 text still scrolls above, and a small rich table at the bottom shows,
per server and macro-step, how many nodes are done, failed or running, with
the elapsed time. Fed by the polling threads from `GET state` snapshots
(through a `StepTracker`, which keeps the macro-steps already passed) and
`GET status` ones (step times); from `GET status` alone when no states are given.
"""

from __future__ import annotations

import threading
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from kadeploy.client.output import MacroProgress, macro_progress
from kadeploy.client.tracker import StepTracker


class ProgressDisplay:
    """A rich Live table refreshed from the polling threads; log lines print above it."""

    def __init__(self, operation: str, console: Console | None = None) -> None:
        self.operation = operation
        self.console = console or Console()
        self._lock = threading.Lock()
        self._progress: dict[str, dict[str, MacroProgress]] = {}
        self._elapsed: dict[str, float] = {}
        self._trackers: dict[str, StepTracker] = {}
        self._live: Live | None = None

    def __enter__(self) -> ProgressDisplay:
        self._live = Live(self.render(), console=self.console, refresh_per_second=4, transient=True)
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None

    def print_line(self, text: str) -> None:
        """Sink for `Printer`: plain text above the live table (no markup interpretation)."""
        self.console.print(Text(text), soft_wrap=True)

    def update(self, server: str, status: dict[str, Any] | None, elapsed: float,
               states: dict[str, Any] | None = None) -> None:
        """One poll of a server's workflow: its /status, its elapsed time, its per-node /state if fetched."""
        with self._lock:
            if states is not None:
                tracker = self._trackers.setdefault(server, StepTracker())
                tracker.observe(states, status)
                self._progress[server] = tracker.progress()
            elif status:
                self._progress[server] = macro_progress(status)
            self._elapsed[server] = elapsed
        if self._live is not None:
            self._live.update(self.render())

    def render(self) -> Table:
        table = Table(title=f"{self.operation} progress", expand=False)
        table.add_column("Server")
        table.add_column("Macro-step")
        table.add_column("OK", justify="right", style="green")
        table.add_column("KO", justify="right", style="red")
        table.add_column("In progress", justify="right", style="yellow")
        table.add_column("Step time", justify="right")
        table.add_column("Elapsed", justify="right")
        with self._lock:
            for server, macros in self._progress.items():
                elapsed = f"{int(self._elapsed.get(server, 0))}s"
                for macro, counts in macros.items():
                    table.add_row(server, macro, str(counts.ok), str(counts.ko), str(counts.running),
                                  f"{int(counts.time)}s", elapsed)
            if not self._progress:
                for server, elapsed_s in self._elapsed.items():
                    table.add_row(server, "(starting)", "", "", "", "", f"{int(elapsed_s)}s")
        return table
