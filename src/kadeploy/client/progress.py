"""Live progress on a terminal, when asked for (`--progress`): per macro-step counts of nodes OK, KO and in progress.

Client room. Off unless the user asks for it, and only on a terminal: Kadeploy3
has no such display, and scripts run the tools through `ssh -tt` (a terminal)
and read the output with patterns anchored at the start of a line
(`^The deployment is successful on nodes`). So the table is drawn under the
Kadeploy3 text in plain ASCII, and every redraw or removal ends its cursor
movements with a newline: whatever text follows starts a line of its own in
the byte stream, not only on the screen. Fed by the polling threads from
`GET state` snapshots (through a `StepTracker`, which keeps the macro-steps
already passed) and `GET status` ones (step times); from `GET status` alone
when no states are given.
"""

from __future__ import annotations

import io
import os
import sys
import threading
from typing import Any, TextIO

from rich import box
from rich.console import Console
from rich.table import Table

from kadeploy.client.output import MacroProgress, macro_progress
from kadeploy.client.tracker import StepTracker

# Erase the table and come back to its first line through a newline: up to the
# table's first line, clear to the end of the screen, up to the line above,
# then a newline lands on the first line again, at column 0.
_ERASE = "\x1b[{height}A\x1b[J\x1b[1A\n"


class ProgressDisplay:
    """A table kept under the text lines; text goes above it through `print_line`."""

    def __init__(self, operation: str, stream: TextIO | None = None, width: int | None = None) -> None:
        self.operation = operation
        self.stream = stream or sys.stdout
        self.width = width or _terminal_width(self.stream)
        self._lock = threading.RLock()
        self._progress: dict[str, dict[str, MacroProgress]] = {}
        self._elapsed: dict[str, float] = {}
        self._trackers: dict[str, StepTracker] = {}
        self._height = 0          # lines of the table now on the screen
        self._active = False

    def __enter__(self) -> ProgressDisplay:
        with self._lock:
            self._active = True
            self._draw()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._erase()
            self._active = False
            self.stream.flush()

    def print_line(self, text: str) -> None:
        """Sink for `Printer`: one text line above the table (the table is redrawn under it)."""
        with self._lock:
            self._erase()
            self.stream.write(text + "\n")
            self._draw()
            self.stream.flush()

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
            if self._active:
                self._erase()
                self._draw()
                self.stream.flush()

    def render(self) -> Table:
        table = Table(title=f"{self.operation} progress", expand=False, box=box.ASCII)
        table.add_column("Server")
        table.add_column("Macro-step")
        table.add_column("OK", justify="right")
        table.add_column("KO", justify="right")
        table.add_column("In progress", justify="right")
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

    def lines(self) -> list[str]:
        """The table as plain text lines (no escapes), each shorter than the terminal (no wrapping)."""
        console = Console(file=io.StringIO(), width=max(20, self.width - 1), color_system=None,
                          force_terminal=False, highlight=False, emoji=False)
        console.print(self.render())
        return [line.rstrip()[: self.width - 1] for line in console.file.getvalue().splitlines()]

    def _draw(self) -> None:
        if not self._active:
            return
        lines = self.lines()
        self.stream.write("".join(line + "\n" for line in lines))
        self._height = len(lines)

    def _erase(self) -> None:
        if self._height:
            self.stream.write(_ERASE.format(height=self._height))
            self._height = 0


def _terminal_width(stream: TextIO) -> int:
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        columns = 0
    return columns if columns > 0 else 80  # a terminal of unknown size says 0
