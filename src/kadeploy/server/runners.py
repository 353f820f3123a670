"""Choosing the operation runner at server start (room `server`).

The real runner (engine + steps) is provided by `kadeploy.steps.runner`
as `create_runner(cfg) -> OperationRunner` once it exists. `DummyRunner` is
used when the environment variable `KADEPLOY3_RUNNER=dummy` is set (tests,
demos) or when every macro-step of every cluster is a `Dummy` implementation;
`KADEPLOY3_DUMMY_DELAY` (seconds) slows it down, for crash and cancel tests.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from kadeploy.errors import ConfigError
from kadeploy.server.operations import DummyRunner, OperationRunner
from kadeploy.server.settings import ServerSettings

log = logging.getLogger("kadeploy.server")


def _all_dummy(settings: ServerSettings) -> bool:
    return bool(settings.clusters) and all(
        impl.name.endswith("Dummy") for cluster in settings.clusters.values()
        for impls in cluster.automata.values() for impl in impls)


def select_runner(cfg: Any, settings: ServerSettings) -> OperationRunner:
    """The runner for this server process."""
    delay_text = os.environ.get("KADEPLOY3_DUMMY_DELAY", "0")
    try:
        delay = float(delay_text)
    except ValueError:
        raise ConfigError(f"KADEPLOY3_DUMMY_DELAY: expected a number of seconds, got {delay_text!r}") from None
    if os.environ.get("KADEPLOY3_RUNNER", "") == "dummy" or _all_dummy(settings):
        return DummyRunner(delay=delay)
    try:
        from kadeploy.steps.runner import create_runner  # type: ignore[import-not-found]
    except ImportError:
        log.warning("kadeploy.steps.runner is not available: operations run with the Dummy runner")
        return DummyRunner(delay=delay)
    return create_runner(cfg)
