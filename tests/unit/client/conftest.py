"""Fixtures for client and CLI tests: a fake kadeploy3d and a client.conf pointing at it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from client.fakeserver import FakeKadeploy


@pytest.fixture
def fake_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., FakeKadeploy]]:
    """Start fake servers; each call adds one to a client.conf in KADEPLOY3_CONFIG_DIR."""
    started: list[FakeKadeploy] = []
    entries: list[str] = []

    def start(nodes: list[str], name: str = "site1", **kw: object) -> FakeKadeploy:
        fake = FakeKadeploy(nodes, **kw).__enter__()
        started.append(fake)
        entries.append(f"- {{name: {name}, hostname: 127.0.0.1, port: {fake.port}, secure: false}}")
        default = entries[0].split("name: ")[1].split(",")[0]
        (tmp_path / "client.conf").write_text(f"default: {default}\nservers:\n" + "\n".join(entries) + "\n")
        return fake

    monkeypatch.setenv("KADEPLOY3_CONFIG_DIR", str(tmp_path))
    monkeypatch.setenv("USER", "tester")
    yield start
    for fake in started:
        fake.__exit__(None, None, None)
