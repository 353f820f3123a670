"""Quoting and the process-group wrapper, checked by running them in a local sh."""

from __future__ import annotations

import os
import subprocess

import pytest

from kadeploy.errors import KadeployError
from kadeploy.remote.shell import PGID_MARKER, env_prefix, kill_command, parse_pgid, wrap_command

HOSTILE = ["'; rm -rf / #", '$(id) `id` "x" \\', "a\nb", "", "--", "*"]


def _sh(line: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", line], capture_output=True, text=True, timeout=10)


@pytest.mark.parametrize("value", HOSTILE)
def test_env_values_reach_the_command_literally(value):
    # as in wrap_command: the prefix exports the variable to the program it precedes
    line = env_prefix({"KADEPLOY_ENV": value}) + """sh -c 'printf "%s" "$KADEPLOY_ENV"'"""
    assert _sh(line).stdout == value


def test_variable_names_that_are_not_identifiers_are_refused():
    for name in ["A B", "A;B", "1A", "", "A=B"]:
        with pytest.raises(KadeployError, match="Invalid environment variable name"):
            env_prefix({name: "x"})


def test_wrapper_reports_the_process_group_and_runs_the_command_with_its_env():
    completed = _sh(wrap_command('printf "%s|" "$X"; ps -o pgid= -p $$', {"X": "'; echo injected"}))
    first, *rest = completed.stderr.splitlines()
    pgid = parse_pgid(first.encode())
    assert pgid is not None and pgid != os.getpgid(0)
    value, reported = completed.stdout.split("|")
    assert value == "'; echo injected"
    assert int(reported) == pgid  # the command runs in the group the marker names
    assert rest == []


def test_wrapper_keeps_the_exit_status_of_the_command():
    assert _sh(wrap_command("exit 7")).returncode == 7


def test_wrapper_does_not_interpret_the_command_text_twice():
    assert _sh(wrap_command("echo '$HOME' \"a b\"")).stdout == "$HOME a b\n"


def test_kill_command_refuses_dangerous_groups():
    for pgid in (0, 1, -5):
        with pytest.raises(ValueError):
            kill_command(pgid)
    assert kill_command(4242) == "kill -s KILL -- -4242 2>/dev/null; exit 0"


def test_kill_command_kills_a_whole_group():
    completed = subprocess.Popen(["sh", "-c", wrap_command("sleep 61 & sleep 62")],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert completed.stderr is not None
    pgid = parse_pgid(completed.stderr.readline())
    assert pgid is not None
    assert _sh(kill_command(pgid)).returncode == 0
    assert completed.wait(timeout=5) != 0
    states = subprocess.run(["ps", "-o", "stat=", "-g", str(pgid)], capture_output=True, text=True).stdout.split()
    assert [state for state in states if not state.startswith("Z")] == []  # zombies await their reaper


def test_parse_pgid_ignores_ordinary_stderr():
    assert parse_pgid(f"{PGID_MARKER} 123\n".encode()) == 123
    assert parse_pgid(b"bash: warning\n") is None
    assert parse_pgid(f"{PGID_MARKER} x\n".encode()) is None
