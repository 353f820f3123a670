"""Every tool answers --help and --version (exit 0, no traceback), and bash loads its --completion script."""

from __future__ import annotations

import importlib
import shutil
import subprocess

import pytest

from tests.requirements import requires

TOOLS = ("kadeploy3", "kareboot3", "kapower3", "kaconsole3", "kanodes3", "kaenv3", "kastat3", "karights3")


@pytest.mark.parametrize("tool", TOOLS)
@pytest.mark.parametrize("spelling", ["--help", "-h", "--he"])
def test_help_exits_0_with_the_usage(tool: str, spelling: str, capsys) -> None:
    module = importlib.import_module(f"kadeploy.cli.{tool}")
    with pytest.raises(SystemExit) as finished:
        module.main([spelling])
    assert finished.value.code == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"usage: {tool}") and "Traceback" not in captured.out + captured.err


@pytest.mark.parametrize("tool", TOOLS)
def test_help_wins_over_the_options_after_it(tool: str, capsys) -> None:
    module = importlib.import_module(f"kadeploy.cli.{tool}")
    with pytest.raises(SystemExit) as finished:
        module.main(["--help", "--no-such-option"])   # OptionParser prints the help when it reads --help
    assert finished.value.code == 0 and "usage:" in capsys.readouterr().out


@pytest.mark.parametrize("tool", TOOLS)
@pytest.mark.parametrize("spelling", ["--version", "-v", "--vers"])
def test_version_asks_the_server(tool: str, spelling: str, fake_server, capsys) -> None:
    fake_server(["n1.c1"])
    assert importlib.import_module(f"kadeploy.cli.{tool}").main([spelling]) == 0
    captured = capsys.readouterr()
    assert captured.out == "Kadeploy version: 3.3.11.stable\n" and captured.err == ""


@pytest.mark.parametrize("tool", TOOLS)
def test_version_without_a_server_from_kadeploy3_version(tool: str, monkeypatch, capsys) -> None:
    monkeypatch.setenv("KADEPLOY3_VERSION", "3.3.11.stable")   # client.rb l. 778-782
    monkeypatch.setenv("KADEPLOY3_CONFIG_DIR", "/nonexistent")
    assert importlib.import_module(f"kadeploy.cli.{tool}").main(["-v"]) == 0
    assert capsys.readouterr().out == "3.3.11.stable\n"


@requires("bash")
@pytest.mark.parametrize("tool", TOOLS)
def test_bash_loads_the_completion_script(tool: str) -> None:
    assert shutil.which(tool), f"{tool} is not installed (pip install -e .)"
    loaded = subprocess.run(
        ["bash", "-c", f"source <({tool} --completion bash) && complete -p {tool} && "
                       f"COMP_WORDS=({tool} --he); COMP_CWORD=1; _{tool}; echo \"${{COMPREPLY[@]}}\""],
        capture_output=True, text=True, timeout=60,
    )
    assert loaded.returncode == 0, loaded.stderr
    lines = loaded.stdout.splitlines()
    assert lines[0] == f"complete -o default -F _{tool} {tool}"
    assert lines[1] == "--help"
    assert loaded.stderr == ""


def test_kadeploy_capture_answers_help_and_version_without_its_required_options(fake_server, capsys) -> None:
    """Our own tool too: -m and -o are required for a capture, not for --help or --version."""
    from kadeploy.cli import capture

    with pytest.raises(SystemExit) as finished:
        capture.main(["--help"])
    assert finished.value.code == 0 and capsys.readouterr().out.startswith("usage: kadeploy-capture")
    fake_server(["n1.c1"])
    assert capture.main(["--version"]) == 0
    assert capsys.readouterr().out == "Kadeploy version: 3.3.11.stable\n"
    assert capture.main(["-m", "n1.c1"]) != 0
    assert "-o/--output" in capsys.readouterr().err
