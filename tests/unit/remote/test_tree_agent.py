"""The tree agent (remote/agent.py) on its own: protocol pieces, and one agent run as a local process.

The local runs use arity 0 (no children, so no ssh): the agent's own command,
its result, its timeout, that its command dies when it is killed (the
watchdog) or when, cut off from its parent, nobody adopts it in time, and an
orphan's adoption through a second agent started for the same run and node
(what a relay's parent does when it grants a lost relay again).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kadeploy.remote import agent
from kadeploy.remote.executor import _Capture
from kadeploy.remote.tree import agent_source


def test_the_capture_truncates_as_the_flat_executor_does():
    for chunks in ([b"abc", b"defgh", b"ij"], [b"x" * 10], [b"\xc3", b"\xa9t\xc3\xa9"]):
        ours, flat = agent.Capture(4), _Capture(4)
        for chunk in chunks:
            ours.feed(chunk)
            flat.feed(chunk)
        assert ours.text() == flat.text()


def test_ssh_failures_get_the_flat_executors_texts():
    stderr = b"ssh: connect to host 10.0.0.9 port 22: Connection refused\r\n"
    assert agent.describe_ssh_failure(stderr, 255) == "Connection refused"
    assert agent.describe_ssh_failure(b"root@x: Permission denied (publickey).\n", 255) == \
        "Authentication failed (permission denied)"
    assert agent.describe_ssh_failure(b"sh: 1: exec: python3: not found\n", 127) == \
        "Agent did not start: sh: 1: exec: python3: not found"
    assert agent.describe_ssh_failure(b"", 255) == "Agent did not start: ssh exited with status 255"


def test_ssh_preferences_reorder_the_nodes_defaults_and_remove_nothing():
    assert agent.preferred_first(["b", "x"], ["a", "b", "c"]) == ["b", "a", "c"]
    options = agent.ssh_preferences(["ssh"], {"kexalgorithms": ["curve25519-sha256"],
                                              "ciphers": ["aes128-gcm@openssh.com"]})
    defaults = subprocess.run(["ssh", "-G", "kadeploy-probe"], capture_output=True, text=True).stdout
    for key, first in (("kexalgorithms", "curve25519-sha256"), ("ciphers", "aes128-gcm@openssh.com")):
        default = next(line.split(" ", 1)[1].split(",") for line in defaults.splitlines()
                       if line.startswith(key + " "))
        given = [option for option in options if option.startswith(key + "=")]
        if default[0] == first:
            assert not given
        else:
            ordered = given[0].split("=", 1)[1].split(",")
            assert ordered[0] == first and sorted(ordered) == sorted(default)
    assert agent.ssh_preferences(["/nonexistent/ssh"], {"ciphers": ["x"]}) == []


def test_lines_are_split_and_bounded():
    lines = agent.LineBuffer(limit=8)
    assert lines.feed(b'{"a"') == []
    assert lines.feed(b':1}\n{"b":2}\n{') == [b'{"a":1}', b'{"b":2}']
    with pytest.raises(ValueError):
        lines.feed(b"123456789")


def test_the_lock_admits_one_agent_per_run_and_node(tmp_path):
    first = agent.lock_path("run1", "node-1", str(tmp_path))
    assert agent.take_lock(first) and not agent.take_lock(first)
    assert agent.take_lock(agent.lock_path("run2", "node-1", str(tmp_path)))
    assert agent.take_lock(agent.lock_path("run1", "node-2; rm -rf /", str(tmp_path)))


def test_the_agent_uses_only_the_standard_library():
    source = agent_source()
    assert "kadeploy" not in "".join(line for line in source.splitlines()
                                     if line.startswith(("import ", "from ")))


def _start(tmp_path: Path, line: str, **config) -> subprocess.Popen[bytes]:
    settings = {"host": "self", "run": "r1", "line": line, "timeout": None, "input": None, "arity": 0,
                "outputs_size": 1000, "heartbeat": 0.2, "stall": 5.0, "orphan": 0.5, "connect_timeout": 5.0,
                "ssh": ["false"], "python": sys.executable, "source": "", "lock_dir": str(tmp_path)}
    settings.update(config)
    process = subprocess.Popen([sys.executable, "-c", agent_source()], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE)
    process.stdin.write((json.dumps(settings) + "\n").encode())
    process.stdin.flush()
    return process


def _events(process: subprocess.Popen[bytes], until: str) -> list[dict]:
    events = []
    while True:
        line = process.stdout.readline()
        assert line, f"agent ended before {until}: {events}"
        event = json.loads(line)
        if event["ev"] != "beat":
            events.append(event)
        if event["ev"] == until:
            return events


def test_the_agent_reports_started_then_the_result_with_stdin_and_truncation(tmp_path):
    import base64
    process = _start(tmp_path, 'cat; printf "%02000d" 0; echo err >&2; exit 4',
                     input=base64.b64encode(b"stdin!").decode())
    events = _events(process, "result")
    process.stdin.write(b'{"op":"quit"}\n')
    process.stdin.flush()
    assert process.wait(10) == 0
    assert [event["ev"] for event in events] == ["hello", "started", "result"]
    result = events[-1]
    assert result["status"] == 4 and result["stderr"] == "err\n" and result["error"] is None
    assert result["stdout"].startswith("stdin!000") and result["stdout"].endswith("[... 1006 bytes truncated]")


def test_an_agent_started_where_the_runs_agent_died_says_gone_and_runs_nothing(tmp_path):
    process = _start(tmp_path, "true")
    assert [event["ev"] for event in _events(process, "result")] == ["hello", "started", "result"]
    process.send_signal(signal.SIGKILL)  # dies holding the run's lock (its socket stays, refusing)
    process.wait(10)
    second = _start(tmp_path, "touch ran-twice")
    assert _events(second, "gone") == [{"ev": "gone", "host": "self", "error": agent.GONE_ERROR}]
    assert second.wait(10) == 0 and not (tmp_path / "ran-twice").exists()


def test_the_timeout_kills_the_command_group(tmp_path):
    marker = f"sleep 7{os.getpid() % 100}1"
    process = _start(tmp_path, f"{marker} & {marker}", timeout=0.5)
    result = _events(process, "result")[-1]
    process.stdin.close()
    process.wait(10)
    assert result["error"] == "Command timeout after 0.5s" and result["status"] is None
    assert _gone(marker)


@pytest.mark.parametrize("how", ["eof", "sigkill"])
def test_the_command_dies_with_its_agent_or_its_parent(tmp_path, how):
    marker = f"sleep 8{os.getpid() % 100}{len(how)}"
    process = _start(tmp_path, f"{marker} & {marker}")
    _events(process, "started")
    assert _appeared(marker, 5)
    if how == "eof":
        process.stdin.close()  # the parent went away and nobody adopts the orphan (0.5 s): it kills its command
    else:
        process.send_signal(signal.SIGKILL)  # the agent dies: its watchdog kills the command
    process.wait(10)
    assert _gone(marker)


def _pids(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip() == text:
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def _appeared(text: str, timeout: float) -> list[int]:
    """The pids of the processes whose command line is `text`, once there are any (or [] at `timeout`)."""
    deadline = time.monotonic() + timeout
    while not _pids(text) and time.monotonic() < deadline:
        time.sleep(0.02)
    return _pids(text)


def _gone(text: str, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while _pids(text) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _pids(text)


def _send(process: subprocess.Popen[bytes], message: dict) -> None:
    process.stdin.write((json.dumps(message) + "\n").encode())
    process.stdin.flush()


def test_a_stream_run_forwards_stdin_and_output_as_they_come_then_exit(tmp_path):
    import base64
    # the node's own argument is appended shell-quoted: quotes and spaces arrive intact
    process = _start(tmp_path, 'f() { read line; echo "got $line [$1]"; echo warn >&2; cat; exit 3; }; f',
                     stream=True, arg="it's mine")
    _events(process, "started")
    _send(process, {"op": "in", "to": "self", "data": base64.b64encode(b"first\n").decode()})
    out = _events(process, "out")[-1]
    assert out["fd"] in (1, 2)
    outputs = {1: b"", 2: b""}
    outputs[out["fd"]] += base64.b64decode(out["data"])
    _send(process, {"op": "in", "to": "self", "data": base64.b64encode(b"rest").decode()})
    _send(process, {"op": "eof", "to": "self"})
    events = _events(process, "exit")
    for event in events:
        if event["ev"] == "out":
            outputs[event["fd"]] += base64.b64decode(event["data"])
    _send(process, {"op": "quit"})
    assert process.wait(10) == 0
    assert outputs[1] == b"got first [it's mine]\nrest" and outputs[2] == b"warn\n"
    assert events[-1] == {"ev": "exit", "host": "self", "status": 3, "signal": None, "error": None}
    assert not any(event["ev"] == "result" for event in events)


def test_a_stream_runs_kill_ends_its_command_only(tmp_path):
    marker = f"sleep 9{os.getpid() % 100}1"
    process = _start(tmp_path, f"{marker} & {marker}", stream=True)
    _events(process, "started")
    _appeared(marker, 5)
    _send(process, {"op": "kill", "to": "self"})
    end = _events(process, "exit")[-1]
    assert end["status"] is None and end["signal"] == "KILL" and end["error"] == "Killed by signal KILL"
    assert _gone(marker)
    assert process.poll() is None  # the agent stays, for its subtree, until quit
    _send(process, {"op": "quit"})
    assert process.wait(10) == 0


def test_a_stream_command_not_reading_its_stdin_does_not_block_its_agent(tmp_path):
    import base64
    payload = os.urandom(512 * 1024)  # far more than a pipe holds
    process = _start(tmp_path, "sleep 1; cat", stream=True)
    _events(process, "started")
    sent = time.monotonic()
    _send(process, {"op": "in", "to": "self", "data": base64.b64encode(payload).decode()})
    _send(process, {"op": "eof", "to": "self"})
    beats_before_output = 0
    received = b""
    while True:
        line = process.stdout.readline()
        assert line
        event = json.loads(line)
        if event["ev"] == "beat" and not received and time.monotonic() - sent < 0.9:
            beats_before_output += 1
        elif event["ev"] == "out":
            received += base64.b64decode(event["data"])
        elif event["ev"] == "exit":
            break
    _send(process, {"op": "quit"})
    assert process.wait(10) == 0
    assert beats_before_output >= 2  # the agent kept beating while its command did not read
    assert received == payload and event["status"] == 0


def test_an_orphan_keeps_its_command_and_is_adopted_by_the_next_agent_of_its_run(tmp_path):
    import base64
    first = _start(tmp_path, 'read a; echo "one $a"; read b; echo "two $b"', stream=True, orphan=30.0)
    _events(first, "started")
    first.stdin.close()                                   # its parent link ends: an orphan now
    time.sleep(0.3)
    assert first.poll() is None                           # ... that keeps its command
    second = _start(tmp_path, "touch ran-twice", stream=True, orphan=30.0)
    hello = _events(second, "hello")[-1]                  # through the second, a mere proxy
    assert hello["adopted"] is True and hello["subtree"] == ["self"]
    _send(second, {"op": "in", "to": "self", "data": base64.b64encode(b"A\nB\n").decode()})
    events = _events(second, "exit")
    kinds = [event["ev"] for event in events]
    assert kinds[0] == "started" and "synced" in kinds   # the journal replayed, then synced
    output = b"".join(base64.b64decode(event["data"]) for event in events if event["ev"] == "out")
    assert output == b"one A\ntwo B\n" and events[-1]["status"] == 0
    _send(second, {"op": "quit"})
    assert first.wait(10) == 0 and second.wait(10) == 0
    assert not (tmp_path / "ran-twice").exists()          # the second agent ran nothing itself
    config = {"run": "r1", "host": "self", "lock_dir": str(tmp_path)}
    assert agent.connect_orphan(config) is None           # its socket went with it


def test_a_parent_that_stops_reading_does_not_freeze_its_agent(tmp_path):
    marker = f"sleep 6{os.getpid() % 100}3"
    # 2 MB of output (30 pipes' worth) that nobody reads, then a long sleep
    process = _start(tmp_path, f"head -c 2000000 /dev/zero; {marker}", stream=True)
    _events(process, "started")
    assert _appeared(marker, 10), "the command did not get past its output"
    _send(process, {"op": "kill", "to": "self"})  # read and obeyed although its output waits
    assert _gone(marker)
    events = _events(process, "exit")             # nothing was lost meanwhile
    import base64
    size = sum(len(base64.b64decode(event["data"])) for event in events if event["ev"] == "out")
    assert size == 2000000 and events[-1]["signal"] == "KILL"
    _send(process, {"op": "quit"})
    assert process.wait(10) == 0
