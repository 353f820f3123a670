"""Every key a model refuses (`ConfigModel.unsupported_keys`) is refused in its file, naming file and key.

The keys are found by walking the models from the file's root model, so a key
added to `unsupported_keys` anywhere is tested here without a new line.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator

import pytest
from pydantic import BaseModel

from kadeploy.config import load_config
from kadeploy.config.cluster import ClusterConfig
from kadeploy.config.server import ServerConfig
from kadeploy.config.validation import ConfigModel
from kadeploy.errors import ConfigError


def _models_in(annotation: object) -> Iterator[type[ConfigModel]]:
    """The ConfigModel classes an annotation holds directly or in an Optional (not in lists)."""
    if isinstance(annotation, type) and issubclass(annotation, ConfigModel):
        yield annotation
    elif typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for argument in typing.get_args(annotation):
            yield from _models_in(argument)


def refused_keys(model: type[BaseModel], path: str = "") -> Iterator[tuple[str, str]]:
    """(`section/path`, key) of every refused key reachable from `model` through nested sections."""
    for key in getattr(model, "unsupported_keys", {}):
        yield path, key
    for name, field in model.model_fields.items():
        for nested in _models_in(field.annotation):
            yield from refused_keys(nested, f"{path}/{field.alias or name}".lstrip("/"))


SERVER_KEYS = sorted(set(refused_keys(ServerConfig)))
CLUSTER_KEYS = sorted(set(refused_keys(ClusterConfig)))


def test_the_walk_finds_the_keys_kadeploy3_reads_and_we_refuse():
    found = {f"{path}/{key}" for path, key in SERVER_KEYS}
    assert {"external/kascade", "security/force_secure_client",
            "network/tcp_buffer_size", "pxe/dhcp/userfiles/concurrency_level"} <= found
    assert {f"{path}/{key}" for path, key in CLUSTER_KEYS} >= {"boot/kernels/nfsroot",
                                                               "boot/kernels/deploy/drivers"}


@pytest.mark.parametrize(("section", "key"), SERVER_KEYS, ids=[f"{s}/{k}" for s, k in SERVER_KEYS])
def test_server_conf_refuses(config_dir, section: str, key: str):
    config_dir.edit("server.conf", f"{section}/{key}", 1)
    with pytest.raises(ConfigError) as error:
        load_config(config_dir.path)
    assert f"server.conf: {section}/{key}: not supported by this Kadeploy (" in error.value.message
    assert error.value.message.rstrip().endswith("remove this key")


@pytest.mark.parametrize(("section", "key"), CLUSTER_KEYS, ids=[f"{s}/{k}" for s, k in CLUSTER_KEYS])
def test_cluster_file_refuses(config_dir, section: str, key: str):
    config_dir.edit("graphene.conf", f"{section}/{key}", 1)
    with pytest.raises(ConfigError) as error:
        load_config(config_dir.path)
    assert f"graphene.conf: {section}/{key}: not supported by this Kadeploy (" in error.value.message
