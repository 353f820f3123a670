"""Tests per category (the directory under tests/), and the floor a full CI run must reach.

A category is the first directory under tests/ (unit, integration, testbed,
e2e, qemu, security): the count is derived from where a test lives, so a new
test is counted without being declared. tests/category_floor.txt holds the
fewest tests each category must pass in a full CI run: a shrinking count
(tests deleted, or skipped by some path that bypasses tests/requirements.py)
then fails the run instead of going unnoticed. Raise a floor when tests are
added; lower one only with the reason in the commit message.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
FLOOR_FILE = TESTS / "category_floor.txt"
CATEGORIES = ("unit", "integration", "testbed", "e2e", "qemu", "security")
OUTCOMES = ("passed", "failed", "skipped")
# the worst outcome of a test's phases is its outcome: a pass whose teardown errored is a failure
_RANK = {"passed": 0, "skipped": 1, "failed": 2}
_OUTCOME_OF_STAT = {"passed": "passed", "xpassed": "passed", "failed": "failed", "error": "failed",
                    "skipped": "skipped", "xfailed": "skipped"}


@dataclass
class Shortfall:
    """A category below its floor, as an entry of pytest's stats: the closing line then says
    `N below floor` (other plugins read every entry's __dict__, so not a bare string)."""

    message: str


def category_of(nodeid: str) -> str:
    """`tests/unit/boot/test_power.py::test_x` -> `unit`; anything else -> `other`."""
    parts = nodeid.split("::", 1)[0].split("/")
    if len(parts) >= 3 and parts[0] == "tests" and parts[1] in CATEGORIES:
        return parts[1]
    return "other"


def count_by_category(stats: Mapping[str, Iterable[object]]) -> dict[str, Counter[str]]:
    """Per category, how many tests passed, failed (failures and errors) and were skipped."""
    outcome_of: dict[str, str] = {}
    for stat, outcome in _OUTCOME_OF_STAT.items():
        for report in stats.get(stat, ()):
            nodeid = getattr(report, "nodeid", None)
            if nodeid is None:
                continue
            if _RANK[outcome] >= _RANK[outcome_of.get(nodeid, "passed")]:
                outcome_of[nodeid] = outcome
    counts: dict[str, Counter[str]] = {}
    for nodeid, outcome in outcome_of.items():
        counts.setdefault(category_of(nodeid), Counter())[outcome] += 1
    return counts


def table(counts: Mapping[str, Counter[str]]) -> list[str]:
    """The lines of the category table, every category listed (a category at 0 shows as 0)."""
    names = list(CATEGORIES) + sorted(set(counts) - set(CATEGORIES))
    lines = [f"{'category':<12}" + "".join(f"{outcome:>9}" for outcome in OUTCOMES)]
    total: Counter[str] = Counter()
    for name in names:
        row = counts.get(name, Counter())
        total.update(row)
        lines.append(f"{name:<12}" + "".join(f"{row[outcome]:>9}" for outcome in OUTCOMES))
    lines.append(f"{'total':<12}" + "".join(f"{total[outcome]:>9}" for outcome in OUTCOMES))
    return lines


def collected_table(nodeids: Iterable[str]) -> list[str]:
    """Under --collect-only: how many tests each category holds."""
    counts = Counter(category_of(nodeid) for nodeid in nodeids)
    names = list(CATEGORIES) + sorted(set(counts) - set(CATEGORIES))
    return [f"{'category':<12}{'collected':>10}", *(f"{name:<12}{counts[name]:>10}" for name in names),
            f"{'total':<12}{sum(counts.values()):>10}"]


def read_floor(path: Path = FLOOR_FILE) -> dict[str, int]:
    """`category minimum` lines (# comments allowed); a malformed line is an error naming it."""
    floor: dict[str, int] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) != 2 or fields[0] not in CATEGORIES or not fields[1].isdigit():
            raise ValueError(f"{path}:{number}: expected `<{'|'.join(CATEGORIES)}> <count>`, got {raw!r}")
        floor[fields[0]] = int(fields[1])
    return floor


def check_floor(counts: Mapping[str, Counter[str]], floor: Mapping[str, int]) -> list[str]:
    """One message per category that passed fewer tests than its floor."""
    return [f"{name}: {counts.get(name, Counter())['passed']} tests passed, below the floor of {minimum} "
            f"({FLOOR_FILE.name})"
            for name, minimum in floor.items() if counts.get(name, Counter())["passed"] < minimum]


def full_run(config: pytest.Config) -> bool:
    """The whole tests/ directory, nothing deselected: only then is a floor meaningful."""
    option = config.option
    if option.keyword or option.markexpr or getattr(option, "deselect", None) or getattr(option, "ignore", None) \
            or getattr(option, "ignore_glob", None) or getattr(option, "lf", False) \
            or getattr(option, "collectonly", False):
        return False
    paths = {(Path(config.invocation_params.dir) / arg).resolve() for arg in config.args}
    return paths == {TESTS}
