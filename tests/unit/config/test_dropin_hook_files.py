"""server.conf `hooks`: each command's program checked at load as Kadeploy3's config.rb checks it
(`:type => 'file', :command => true, :readable => true, :executable => true`, configparser.rb
`customcheck_file`), the error naming server.conf and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from kadeploy.config.server import ServerConfig
from kadeploy.config.validation import validate_model
from kadeploy.errors import ConfigError

MINIMAL = {
    "authentication": {"acl": {"whitelist": ["127.0.0.1"]}},
    "cache": {"size": 1000},
    "pxe": {"dhcp": {"repository": "/srv/tftp"}},
}


def load(hooks: dict) -> ServerConfig:
    return validate_model(ServerConfig, {**MINIMAL, "hooks": hooks}, "server.conf",
                          context={"config_dir": Path("/etc/kadeploy3")})[0]


def script(path: Path, mode: int) -> Path:
    path.write_text("#!/bin/sh\necho \"$1\" >> /dev/null\n")
    path.chmod(mode)
    return path


@pytest.mark.parametrize("key", ["end_of_deployment", "end_of_reboot", "end_of_power"])
def test_a_hook_that_is_not_executable_is_refused_naming_the_key_and_the_file(tmp_path, key) -> None:
    hook = script(tmp_path / "hook.sh", 0o644)
    with pytest.raises(ConfigError) as info:
        load({key: f"{hook} WORKFLOW_ID"})
    assert f"server.conf: hooks/{key}" in info.value.message
    assert f"The file '{hook}' is not executable" in info.value.message


@pytest.mark.parametrize("make, words", [
    (lambda d: d / "missing.sh", "does not exist"),
    (lambda d: d, "is not a regular file"),
])
def test_a_hook_path_that_is_no_file_is_refused(tmp_path, make, words) -> None:
    with pytest.raises(ConfigError, match=words):
        load({"end_of_power": f"{make(tmp_path)} WORKFLOW_ID"})


def test_runnable_hooks_and_words_left_to_the_shell_are_accepted(tmp_path) -> None:
    hook = script(tmp_path / "hook.sh", 0o755)
    loaded = load({"end_of_deployment": f"{hook} WORKFLOW_ID",
                   "end_of_reboot": "echo WORKFLOW_ID",                  # found on PATH: checked, fine
                   "end_of_power": "no-such-program-on-path WORKFLOW_ID"})  # `which` fails: not checked
    assert loaded.hooks.end_of_deployment == f"{hook} WORKFLOW_ID"
    assert loaded.hooks.end_of_power == "no-such-program-on-path WORKFLOW_ID"

