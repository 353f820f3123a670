"""Fixtures for the remote integration tests: real sshd nodes in network namespaces."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from sshnodes import SshLab, acquire_shared, release_shared  # noqa: E402

from kadeploy.remote import Executor  # noqa: E402
from tests.requirements import require  # noqa: E402


@pytest.fixture(scope="session")
def ssh_lab() -> Iterator[SshLab]:
    require("root", "sshd")
    lab = acquire_shared(8)
    try:
        yield lab
    finally:
        release_shared()


@pytest.fixture
async def executor(ssh_lab: SshLab) -> Executor:
    executor = Executor(ssh_lab.private_key, connect_timeout=5)
    yield executor
    await executor.close()
