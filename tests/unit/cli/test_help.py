"""Every tool's --help prints (no traceback on a `%` in a help text) and says what --dry-run does."""

from __future__ import annotations

import importlib

import pytest

TOOLS = ("kadeploy3", "kareboot3", "kapower3", "kaenv3", "karights3", "kastat3", "kanodes3", "kaconsole3")


@pytest.mark.parametrize("tool", TOOLS)
def test_help_prints_and_explains_dry_run(tool, capsys) -> None:
    module = importlib.import_module(f"kadeploy.cli.{tool}")
    with pytest.raises(SystemExit) as finished:
        module.build_parser().parse_args(["--help"])
    assert finished.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--dry-run" in text and "changes nothing" in text and "nothing is printed" in text
