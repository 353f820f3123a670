"""server.conf `external/taktuk/{tree_arity, auto_propagate, outputs_size}`: Kadeploy3's keys shape the executor."""

from __future__ import annotations

from pathlib import Path

import pytest

from kadeploy.config import ServerConfig
from kadeploy.config.validation import validate_model
from kadeploy.errors import ConfigError
from kadeploy.remote.tree import DEFAULT_ARITY
from kadeploy.steps.runner import EngineRunner

MINIMAL = {
    "authentication": {"acl": {"whitelist": ["127.0.0.1"]}},
    "cache": {"size": 1000},
    "pxe": {"dhcp": {"repository": "/srv/tftp"}},
}


def _server(taktuk: dict) -> ServerConfig:
    server, _ = validate_model(ServerConfig, {**MINIMAL, "external": {"taktuk": taktuk}}, "server.conf",
                               context={"config_dir": Path("/etc/kadeploy3")})
    return server


def test_kadeploy3_defaults():
    taktuk = _server({}).external.taktuk
    assert (taktuk.tree_arity, taktuk.auto_propagate, taktuk.outputs_size) == (0, True, 20000)


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("tree_arity", -1, "must be >= 0 (got -1)"),
    ("outputs_size", 0, "must be >= 1 (got 0)"),
    ("auto_propagate", "sometimes", "bool"),
])
def test_bad_values_name_the_key(key, value, expected):
    with pytest.raises(ConfigError) as error:
        _server({key: value})
    assert f"external/taktuk/{key}" in error.value.message and expected in error.value.message


class _Config:
    def __init__(self, server: ServerConfig) -> None:
        self.server = server


@pytest.mark.parametrize(("taktuk", "arity", "limit"), [
    ({}, DEFAULT_ARITY, 20000),                       # 0: Kadeploy3's "dynamic" is our default arity
    ({"tree_arity": 3, "outputs_size": 512}, 3, 512),
    ({"auto_propagate": False}, None, 20000),         # nothing sent to the nodes: always flat
])
def test_the_engine_executor_follows_the_keys(taktuk, arity, limit, monkeypatch):
    import kadeploy.steps.runner as runner_module
    captured = {}

    def recording(*args, **kwargs):
        captured.update(kwargs)
        raise _Stop  # the rest of the runner (PXE, BMC gate, cache) is not this test's business

    monkeypatch.setattr(runner_module, "Executor", recording)
    with pytest.raises(_Stop):
        EngineRunner(_Config(_server(taktuk)))
    assert captured["output_limit"] == limit
    tree = captured["tree"]
    assert (tree.arity if tree is not None else None) == arity


class _Stop(Exception):
    pass
