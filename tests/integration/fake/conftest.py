"""Ports of the fake testbeds these tests bring up.

Fake nodes of every testbed on a host share the loopback addresses
127.1.x.y, so two test runs at once (or a test run beside a benchmark) need
distinct ports: `KADEPLOY_FAKE_SSH_PORT` and `KADEPLOY_FAKE_MARKER_PORT`
choose them (defaults: the testbed's own, 2222 and 25300). A module brings
up one testbed at a time, so one pair serves the whole session.
"""

from __future__ import annotations

import os

import pytest

from kadeploy_testbed.fake.settings import DEFAULT_MARKER_PORT, DEFAULT_SSH_PORT


@pytest.fixture(scope="session")
def fake_ports() -> dict[str, int]:
    """Keyword arguments for `harness.up`: `ssh_port` and `marker_port`."""
    return {"ssh_port": int(os.environ.get("KADEPLOY_FAKE_SSH_PORT", DEFAULT_SSH_PORT)),
            "marker_port": int(os.environ.get("KADEPLOY_FAKE_MARKER_PORT", DEFAULT_MARKER_PORT))}
