"""`kastat3 --steps` and `--plot`: where deployments spend their time (CLI room; beyond Kadeploy3).

The server answers `GET /stats[/:operation]?kind=steps` with, per macro-step
implementation and per `implementation/micro-step`, the count, median, p90
and max of the recorded durations over the selected records. This module
prints them as two aligned tables and draws them as a PNG (matplotlib is an
optional dependency: `pip install matplotlib`; without it `--plot` is refused
with that advice, nothing else changes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kadeploy.cli.common import OptionError

COLUMNS = ("count", "median", "p90", "max")


def _number(value: Any) -> str:
    number = float(value)
    return str(int(number)) if number.is_integer() else f"{number:.1f}"


def step_table(stats: dict[str, Any]) -> list[str]:
    """Two tables (macro-steps, micro-steps): name, count, median, p90, max in seconds."""
    lines: list[str] = []
    for title, key in (("Macro-step", "macro"), ("Micro-step", "micro")):
        rows = stats.get(key) or {}
        if not rows:
            continue
        width = max(len(title), *(len(name) for name in rows))
        if lines:
            lines.append("")
        lines.append(f"{title:<{width}}  {'count':>6}  {'median':>8}  {'p90':>8}  {'max':>8}")
        for name, values in rows.items():
            lines.append(f"{name:<{width}}  {int(values['count']):>6}  {_number(values['median']) + 's':>8}  "
                         f"{_number(values['p90']) + 's':>8}  {_number(values['max']) + 's':>8}")
    return lines or ["No statistics have been found"]


def plot_steps(stats: dict[str, Any], path: Path, title: str = "Kadeploy step durations") -> None:
    """Horizontal bars of median, p90 and max per macro-step and per micro-step, saved as PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed: kastat3 runs on frontends over SSH
        import matplotlib.pyplot as plt
    except ImportError:
        raise OptionError("--plot needs matplotlib (pip install matplotlib)") from None
    if path.suffix.lower() != ".png":
        raise OptionError(f"--plot writes a PNG file: give a name ending in .png (got {path})")
    sections = [(label, stats.get(key) or {}) for label, key in (("Macro-steps", "macro"), ("Micro-steps", "micro"))]
    sections = [(label, rows) for label, rows in sections if rows]
    if not sections:
        raise OptionError("No statistics have been found: nothing to plot")
    heights = [max(len(rows), 1) * 0.45 + 1.2 for _label, rows in sections]
    figure, axes = plt.subplots(len(sections), 1, figsize=(11, sum(heights)), squeeze=False,
                                gridspec_kw={"height_ratios": heights})
    for axis, (label, rows) in zip(axes[:, 0], sections):
        names = list(rows)[::-1]  # first step on top
        positions = range(len(names))
        bar = 0.26
        for offset, column, colour in ((-bar, "median", "#4c72b0"), (0.0, "p90", "#dd8452"), (bar, "max", "#c44e52")):
            axis.barh([p + offset for p in positions], [float(rows[n][column]) for n in names], height=bar,
                      color=colour, label=column)
        axis.set_yticks(list(positions))
        axis.set_yticklabels([f"{n} (n={int(rows[n]['count'])})" for n in names], fontsize=8)
        axis.set_xlabel("seconds")
        axis.set_title(label)
        axis.grid(axis="x", alpha=0.3)
        axis.legend(loc="lower right", fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    try:
        figure.savefig(path, format="png", dpi=100)
    except OSError as exc:
        raise OptionError(f"Cannot write {path}: {exc.strerror}") from None
    finally:
        plt.close(figure)
