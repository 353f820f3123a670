"""A kadeploy3d per test module (Dummy runner; `DUMMY_DELAY` s per operation, 1 by default), see kadeploy3d.py."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from kadeploy3d import Kadeploy3d  # noqa: E402


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kadeploy3d]:
    delay = float(getattr(request.module, "DUMMY_DELAY", 1.0))
    daemon = Kadeploy3d(tmp_path_factory.mktemp("kadeploy3d"), delay=delay)
    daemon.start()
    yield daemon
    daemon.stop()
