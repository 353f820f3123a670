"""Fixtures of the engine tests (helpers live in engine_fakes)."""

from __future__ import annotations

import pytest
from engine_fakes import FakeLibrary, deploy

from kadeploy.engine import ListOutput, Workflow


@pytest.fixture
def output() -> ListOutput:
    return ListOutput()


@pytest.fixture
def make_workflow(output: ListOutput):
    def factory(library: FakeLibrary, macrosteps=None, **kwargs) -> Workflow:
        return Workflow("Deploy", "c1", macrosteps or deploy(), library, output, wid="D-test", **kwargs)
    return factory
