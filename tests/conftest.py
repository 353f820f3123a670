"""Shared pytest configuration.

* Tests marked `root`, `testbed` or `e2e` are skipped when not root.
* A netns testbed left behind by a killed run (its daemon dead, its bridge
  `ktb0` still there) is taken down before the session, so that a crashed
  session does not make the next test run fail; a live testbed is left alone
  and the tests that need the bridge say so.
"""

import os
import subprocess
from pathlib import Path

import pytest

KNOWN_TESTBED_DIRS = (Path("/var/lib/kadeploy-testbed-e2e"), Path("/var/lib/kadeploy-testbed"))


def _bridge_exists() -> bool:
    return subprocess.run(["ip", "link", "show", "ktb0"], capture_output=True).returncode == 0


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


def pytest_sessionstart(session):
    if os.geteuid() == 0 and _bridge_exists():
        try:
            _reclaim_stale_testbed()
        except (OSError, subprocess.SubprocessError):
            pass


def pytest_collection_modifyitems(config, items):
    # QEMU under software emulation on 2 cores: each PXE method boots the deployment kernel
    # in about a minute, the two deployments take about 12 minutes. They run every time;
    # KADEPLOY_TEST_QEMU=0 skips the deployments for a quicker local run.
    if os.environ.get("KADEPLOY_TEST_QEMU") == "0":
        skip_qemu = pytest.mark.skip(reason="QEMU deployment tests skipped (KADEPLOY_TEST_QEMU=0)")
        for item in items:
            if "tests/qemu/test_qemu_deploy.py" in str(item.fspath):
                item.add_marker(skip_qemu)
    if os.geteuid() == 0:
        return
    skip_root = pytest.mark.skip(reason="needs root")
    for item in items:
        if "root" in item.keywords or "testbed" in item.keywords or "e2e" in item.keywords:
            item.add_marker(skip_root)
