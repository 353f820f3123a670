"""Under CI=true a missing requirement fails, naming it; elsewhere it skips; the category table precedes the closing line.

A real pytest runs in a subprocess on a small test file, with tests/conftest.py
loaded as a plugin and PATH emptied (so ipmitool is missing whatever the
machine has), once with CI=true and once without.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.categories import category_of, check_floor, count_by_category, read_floor, table
from tests.requirements import REQUIREMENTS, require

ROOT = Path(__file__).resolve().parents[2]

PROBE = '''
from tests.requirements import optional, require, requires


def test_needs_ipmitool():
    require("ipmitool")


@requires("ipmitool")
def test_marked_ipmitool():
    pass


def test_optional_is_skipped_even_under_ci():
    optional("a check this machine may not support")


def test_needs_nothing():
    pass
'''


# loaded before tests/conftest.py, it makes the probe run count as a full run of tests/
FULL_RUN_PLUGIN = """
import tests.categories
tests.categories.full_run = lambda config: True
"""


def _run(tmp_path: Path, ci: bool, *plugins: str) -> subprocess.CompletedProcess[str]:
    probe = tmp_path / "test_probe_requirements.py"
    probe.write_text(PROBE)
    empty = tmp_path / "empty-bin"
    empty.mkdir(exist_ok=True)
    env = {key: value for key, value in os.environ.items() if key != "CI"}
    env.update(PATH=str(empty), PYTHONPATH=f"{tmp_path}:{ROOT}", PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    if ci:
        env["CI"] = "true"
    loaded = [argument for plugin in plugins for argument in ("-p", plugin)]
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-ra", "-p", "no:cacheprovider", *loaded,
                           "-p", "tests.conftest", "--rootdir", str(tmp_path), str(probe)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_under_ci_a_missing_tool_fails_naming_it_and_elsewhere_skips(tmp_path: Path) -> None:
    ci = _run(tmp_path, ci=True)
    lines = ci.stdout.strip().splitlines()
    assert ci.returncode == 1, ci.stdout + ci.stderr
    assert "CI=true: needs ipmitool: ipmitool not on PATH (remedy: ./scripts/install.sh (ipmitool))" in ci.stdout
    assert lines[-1].startswith("1 failed, 1 passed, 1 skipped, 1 error"), lines[-1]   # the closing line stays last
    table_at = lines.index(next(line for line in lines if "tests per category" in line))
    assert table_at < len(lines) - 1 and lines[table_at + 1].split() == ["category", "passed", "failed", "skipped"]
    assert next(line for line in lines if line.startswith("other")).split() == ["other", "1", "2", "1"]
    assert "optional: a check this machine may not support" in ci.stdout

    local = _run(tmp_path, ci=False)
    assert local.returncode == 0, local.stdout + local.stderr
    assert local.stdout.strip().splitlines()[-1].startswith("1 passed, 3 skipped"), local.stdout
    assert "needs ipmitool: ipmitool not on PATH" in local.stdout and "CI=true" not in local.stdout


SKIPPING = {("pytest", "skip"), ("pytest", "importorskip"), ("mark", "skip"), ("mark", "skipif")}
# the one home, and the conftest's local-only KADEPLOY_TEST_QEMU=0 opt-out (refused under CI)
SKIP_HOMES = {ROOT / "tests" / "requirements.py", ROOT / "tests" / "conftest.py"}


def test_no_test_skips_except_through_tests_requirements() -> None:
    """A bare pytest.skip/skipif/importorskip would skip under CI too: new tests use require/requires/optional."""
    found = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        if path in SKIP_HOMES:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, (ast.Name, ast.Attribute)):
                owner = node.value.id if isinstance(node.value, ast.Name) else node.value.attr
                if (owner, node.attr) in SKIPPING:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {owner}.{node.attr}")
    assert not found, "skip through tests/requirements.py (require, requires, unmet, optional) instead:\n" + \
        "\n".join(found)


def test_a_full_ci_run_below_the_floor_fails_and_its_closing_line_says_so(tmp_path: Path) -> None:
    (tmp_path / "cihollow_full_run.py").write_text(FULL_RUN_PLUGIN)
    # hypothesis's plugin reads every stats entry's __dict__ at the end: loaded to show they coexist
    ci = _run(tmp_path, True, "cihollow_full_run", "_hypothesis_pytestplugin")
    lines = ci.stdout.strip().splitlines()
    assert ci.returncode == 1 and "Traceback" not in ci.stdout + ci.stderr, ci.stdout + ci.stderr
    assert "CI=true: unit: 0 tests passed, below the floor of" in ci.stdout
    assert lines[-1].startswith("1 failed, 1 passed, 1 skipped, 1 error, 6 below floor"), lines[-1]


def test_an_undeclared_requirement_is_refused_naming_the_table() -> None:
    with pytest.raises(ValueError, match="unknown test requirement 'ipmi-tool': declare it in tests/requirements.py"):
        require("ipmi-tool")


def test_the_components_of_the_issue_are_declared() -> None:
    for name in ("root", "mariadb", "postgresql", "tftpd", "ipmitool", "qemu", "images", "sshd", "ruby", "aria2",
                 "taktuk", "snmpset", "sushy-tools"):
        assert name in REQUIREMENTS, name


class _Report:
    def __init__(self, nodeid: str) -> None:
        self.nodeid = nodeid


def test_categories_come_from_the_directory_and_a_test_counts_once_at_its_worst() -> None:
    assert category_of("tests/unit/boot/test_power.py::test_x[a]") == "unit"
    assert category_of("tests/qemu/test_qemu_unit.py::test_y") == "qemu"
    assert category_of("tests/processgroups.py::test_z") == "other"
    stats = {"passed": [_Report("tests/unit/a.py::t1"), _Report("tests/unit/a.py::t2")],
             "error": [_Report("tests/unit/a.py::t2")],          # passed, then its teardown errored
             "skipped": [_Report("tests/e2e/b.py::t3")], "": [_Report("tests/unit/a.py::t1")]}
    counts = count_by_category(stats)
    assert counts == {"unit": Counter(passed=1, failed=1), "e2e": Counter(skipped=1)}
    lines = table(counts)
    assert lines[1].split() == ["unit", "1", "1", "0"] and lines[-1].split() == ["total", "1", "1", "1"]
    assert [line.split()[0] for line in lines[1:-1]] == ["unit", "integration", "testbed", "e2e", "qemu", "security"]


def test_the_floor_fails_a_category_that_shrank_and_refuses_a_malformed_line(tmp_path: Path) -> None:
    floor_file = tmp_path / "floor.txt"
    floor_file.write_text("# minimum passed\nunit 2\nqemu 1  # the deployments\n")
    floor = read_floor(floor_file)
    assert floor == {"unit": 2, "qemu": 1}
    shortfalls = check_floor({"unit": Counter(passed=2), "qemu": Counter(skipped=3)}, floor)
    assert shortfalls == ["qemu: 0 tests passed, below the floor of 1 (category_floor.txt)"]
    floor_file.write_text("unit 2\nqemmu 1\n")
    with pytest.raises(ValueError, match=r"floor.txt:2: expected .* got 'qemmu 1'"):
        read_floor(floor_file)
    assert set(read_floor()) == {"unit", "integration", "testbed", "e2e", "qemu", "security"}
