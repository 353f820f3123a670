"""kadeploy3 under a terminal (as through `ssh -tt`): no live display unless `--progress`, and the
result block always starts its lines, in the byte stream and on the screen (issue 20, point 6)."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import select
import struct
import sys
import termios
import threading

import pyte
import pytest

from kadeploy.cli import kadeploy3
from kadeploy.client import workflow as workflow_module
from kadeploy.client.progress import ProgressDisplay

HEADER = b"The deployment is successful on nodes"


def run_under_terminal(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, bytes]:
    """kadeploy3.main with stdin/stdout/stderr on a pseudo-terminal; everything the terminal received."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 60, 120, 0, 0))
    received = bytearray()
    finished = threading.Event()

    def drain() -> None:
        # the tool's ENTER reader keeps the terminal open: stop once it finished and all is read
        while True:
            readable, _, _ = select.select([master], [], [], 0.2)
            if not readable:
                if finished.is_set():
                    return
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:
                return
            if not chunk:
                return
            received.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    terminal_out = open(slave, "w", closefd=False, buffering=1)
    terminal_in = open(slave, "r", closefd=False)
    monkeypatch.setattr(sys, "stdout", terminal_out)
    monkeypatch.setattr(sys, "stderr", terminal_out)
    monkeypatch.setattr(sys, "stdin", terminal_in)
    try:
        status = kadeploy3.main(argv)
        terminal_out.flush()
    finally:
        monkeypatch.undo()
        finished.set()
        reader.join(5)
        os.close(slave)
        os.close(master)
    return status, bytes(received)


def screen_of(data: bytes) -> list[str]:
    screen = pyte.Screen(120, 60)
    stream = pyte.ByteStream(screen)
    stream.feed(data)
    return [line.rstrip() for line in screen.display]


@pytest.fixture
def terminal_server(fake_server, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(workflow_module, "POLL_INTERVAL", 0.05)
    return fake_server(["node-1.c1.testbed", "node-2.c1.testbed"], polls_before_done=6)


def test_no_escape_sequence_under_a_terminal_without_progress(terminal_server, monkeypatch) -> None:
    status, data = run_under_terminal(["-m", "node-[1-2].c1.testbed", "-e", "d"], monkeypatch)
    assert status == 0
    assert b"\x1b" not in data
    assert re.search(rb"(?m)^The deployment is successful on nodes\r?$", data)


def test_with_progress_the_result_headers_start_their_lines(terminal_server, monkeypatch) -> None:
    status, data = run_under_terminal(["-m", "node-[1-2].c1.testbed", "-e", "d", "--progress"], monkeypatch)
    assert status == 0
    assert b"Deployment progress" in data and b"\x1b[" in data  # the table was drawn
    lines = data.split(b"\n")
    headers = [line for line in lines if HEADER in line]
    assert headers and all(line.startswith(HEADER) for line in headers)
    for line in lines:  # every cursor movement ends before a newline: text never follows one
        if b"\x1b" in line:
            assert re.fullmatch(rb"(\x1b\[\d*[AJ])+\r?", line), line
    screen = screen_of(data)
    assert "The deployment is successful on nodes" in screen
    assert not any("Deployment progress" in line for line in screen)  # the table is gone at the end
    header_row = screen.index("The deployment is successful on nodes")
    assert screen[header_row + 1:header_row + 3] == ["node-1.c1.testbed", "node-2.c1.testbed"]


def test_text_printed_while_the_table_is_shown_goes_above_it_on_a_line_of_its_own() -> None:
    out = io.StringIO("Deployment #D-1 started\n")
    out.seek(0, io.SEEK_END)
    display = ProgressDisplay("Deployment", out, width=100)
    with display:
        display.update("site1", {"c1": {"BroadcastEnvKascade": {"send_environment": {
            "nodes": {"OK": ["a"], "KO": [], "**": ["b"]}, "time": 3}}}}, 5)
        display.print_line("Launching a deployment on node-1")
    data = out.getvalue().encode()
    assert re.search(rb"\n\x1b\[\d+A\x1b\[J\x1b\[1A\nLaunching a deployment on node-1\n", data)
    screen = screen_of(data.replace(b"\n", b"\r\n"))
    assert screen[:2] == ["Deployment #D-1 started", "Launching a deployment on node-1"]
    assert all(line == "" for line in screen[2:])
