"""Fixtures for the broadcast integration tests: the same sshd lab as the remote tests."""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "remote"))

from sshnodes import SshLab, acquire_shared, release_shared  # noqa: E402

from kadeploy.remote import Executor  # noqa: E402
from tests.integration.broadcast.broadcastlab import IMAGE_SIZE  # noqa: E402
from tests.requirements import require  # noqa: E402


@pytest.fixture(scope="session")
def broadcast_lab() -> Iterator[SshLab]:
    require("root", "sshd")
    lab = acquire_shared(8)
    try:
        yield lab
    finally:
        release_shared()


@pytest.fixture
async def broadcast_executor(broadcast_lab: SshLab) -> Executor:
    executor = Executor(broadcast_lab.private_key, connect_timeout=5)
    yield executor
    await executor.close()


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> tuple[Path, str]:
    """A random image of IMAGE_SIZE bytes and its sha256, one per test module."""
    path = tmp_path_factory.mktemp("image") / "image.bin"
    data = os.urandom(IMAGE_SIZE)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


@pytest.fixture
def lab(broadcast_lab: SshLab) -> SshLab:
    """The lab with no node's output nor failure switch left by an earlier test."""
    for node in broadcast_lab.nodes:
        for name in ("out", "fail"):
            (node.directory / name).unlink(missing_ok=True)
    return broadcast_lab
