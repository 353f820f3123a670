"""Fixtures of the config tests: a writable copy of the sample configuration."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

SAMPLES = Path(__file__).parent / "samples"


class ConfigDir:
    """A copy of `samples/` in a temporary directory, with helpers to edit its files."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self, name: str) -> dict:
        return yaml.safe_load((self.path / name).read_text())

    def write(self, name: str, data: object) -> None:
        text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
        (self.path / name).write_text(text)

    def edit(self, name: str, keys: str, value: object) -> None:
        """Set `a/b/c` in a YAML file; value `...` (Ellipsis) deletes the key."""
        data = self.read(name)
        node = data
        *parents, last = keys.split("/")
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
        if value is ...:
            del node[last]
        else:
            node[last] = value
        self.write(name, data)


@pytest.fixture
def config_dir(tmp_path: Path) -> ConfigDir:
    target = tmp_path / "etc"
    shutil.copytree(SAMPLES, target)
    return ConfigDir(target)
