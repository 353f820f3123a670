"""Shared pytest configuration.

* What a test needs (`requires(...)` marks, and root for the tests marked
  `root`, `testbed` or `e2e`) is checked before its fixtures run, through
  tests/requirements.py: under CI=true a missing requirement fails the test,
  elsewhere it skips.
* The run ends with a count of tests per category (the directory under
  tests/: unit, integration, testbed, e2e, qemu, security), printed before
  pytest's closing line; under CI a full run fails if a category passes fewer
  tests than tests/category_floor.txt says (see `categories.py`).
* A netns testbed left behind by a killed run (its daemon dead, its bridge
  `ktb0` still there) is taken down before the session, so that a crashed
  session does not make the next test run fail; a live testbed is left alone
  and the tests that need the bridge say so.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

# the `tests.*` helpers import from the checkout's root, however pytest was started (`python -m pytest` adds it)
if str(Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.categories import (  # noqa: E402
    Shortfall,
    check_floor,
    collected_table,
    count_by_category,
    full_run,
    read_floor,
    table,
)
from tests.requirements import require, under_ci  # noqa: E402

KNOWN_TESTBED_DIRS = (Path("/var/lib/kadeploy-testbed-e2e"), Path("/var/lib/kadeploy-testbed"))


def _bridge_exists() -> bool:
    return Path("/sys/class/net/ktb0").exists()


def _testbed_daemon_running() -> bool:
    """A live netns testbed daemon, whatever its directory (tests bring theirs up in tmp dirs)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"kadeploy_testbed.daemon" in argv:
            return True
    return False


def _reclaim_stale_testbed() -> None:
    if _testbed_daemon_running():
        return
    directories = [d for d in KNOWN_TESTBED_DIRS if (d / "state.json").exists()]
    for directory in directories:
        alive = subprocess.run(["kadeploy-testbed", "--dir", str(directory), "status"], capture_output=True,
                               timeout=30).returncode == 0
        if alive:
            return
    for directory in directories:
        subprocess.run(["kadeploy-testbed", "--dir", str(directory), "down"], capture_output=True, timeout=120)
    if _bridge_exists() and not directories:
        subprocess.run(["kadeploy-testbed", "down"], capture_output=True, timeout=120)


SESSION = pytest.StashKey[pytest.Session]()
QEMU_DEPLOYMENTS = ("tests/qemu/test_qemu_deploy.py",)


def _qemu_deployment(item: pytest.Item) -> bool:
    return any(path in str(item.fspath) for path in QEMU_DEPLOYMENTS)


def pytest_configure(config):
    config.addinivalue_line("markers", "requires(*names): needs these components (tests/requirements.py)")


def pytest_sessionstart(session):
    session.config.stash[SESSION] = session
    if os.geteuid() == 0 and _bridge_exists():
        try:
            _reclaim_stale_testbed()
        except (OSError, subprocess.SubprocessError):
            pass


def pytest_collection_modifyitems(config, items):
    # QEMU under software emulation on 2 cores: each PXE method boots the deployment kernel
    # in about a minute, the four deployments take about 10 minutes. They run every time;
    # KADEPLOY_TEST_QEMU=0 skips the deployments for a quicker local run (refused under CI).
    if os.environ.get("KADEPLOY_TEST_QEMU") == "0" and not under_ci():
        skip_qemu = pytest.mark.skip(reason="QEMU deployment tests skipped (KADEPLOY_TEST_QEMU=0)")
        for item in items:
            if _qemu_deployment(item):
                item.add_marker(skip_qemu)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    if under_ci() and os.environ.get("KADEPLOY_TEST_QEMU") == "0" and _qemu_deployment(item):
        pytest.fail("CI=true: KADEPLOY_TEST_QEMU=0 would skip the QEMU deployments; unset it in CI", pytrace=False)
    names = [name for mark in item.iter_markers("requires") for name in mark.args]
    if any(keyword in item.keywords for keyword in ("root", "testbed", "e2e")):
        names.insert(0, "root")
    if names:
        require(*dict.fromkeys(names))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """The per-category table, before pytest's own closing line (which stays the last line)."""
    session = config.stash.get(SESSION, None)
    if config.option.collectonly:
        if session is not None:
            terminalreporter.write_sep("=", "tests collected per category")
            for line in collected_table(item.nodeid for item in session.items):
                terminalreporter.write_line(line)
        return
    counts = count_by_category(terminalreporter.stats)
    terminalreporter.write_sep("=", "tests per category")
    for line in table(counts):
        terminalreporter.write_line(line)
    if not (under_ci() and full_run(config)):
        return
    if session is not None and (session.shouldstop or session.shouldfail):
        return
    shortfalls = check_floor(counts, read_floor())
    for shortfall in shortfalls:
        terminalreporter.write_line(f"CI=true: {shortfall}", red=True)
        terminalreporter.stats.setdefault("below floor", []).append(Shortfall(shortfall))
    if shortfalls and session is not None:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
