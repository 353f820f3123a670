"""kaconsole3 through a pseudo-terminal: the node's serial console shows up; a client that
connects to the console port without the workflow's one-time token gets nothing.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import socket
import subprocess
import time

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.root, pytest.mark.testbed]

ESCAPE = b"\x1b" * 4


def _read_until(fd: int, needle: bytes, timeout: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    return seen


def test_kaconsole_shows_the_node_console_through_a_pty(site) -> None:
    node = site.nodes[0]
    # a node that has printed something: powered on, its firmware writes on the serial line
    site.tool("kapower3", "--on", "-m", node)
    pid, fd = pty.fork()
    if pid == 0:  # the child: kaconsole3 on a terminal, as a user runs it
        os.execvpe("kaconsole3", ["kaconsole3", "-m", node], dict(site.env, USER="root", TERM="dumb"))
    try:
        # `kadeploy-testbed console` replays the serial log: the firmware's first words
        output = _read_until(fd, b"BIOS: " + node.split(".")[0].encode(), 60)
        assert b"BIOS: " + node.split(".")[0].encode() in output, output[-2000:]
        os.write(fd, ESCAPE)
        end = time.monotonic() + 20
        while time.monotonic() < end:
            finished, status = os.waitpid(pid, os.WNOHANG)
            if finished:
                break
            _read_until(fd, b"\0", 0.5)
        else:
            pytest.fail("kaconsole3 did not end on the escape sequence")
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(fd)


def test_console_port_refuses_a_client_without_the_token(site) -> None:
    node = site.nodes[1]
    response = site.api("POST", "/console", json={"node": node})
    assert response.status_code == 200, response.text
    opened = response.json()
    try:
        host, port = opened["resources"]["console"].removeprefix("tcp://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as intruder:
            intruder.sendall(b"not-the-token\n")
            intruder.settimeout(10)
            received = b""
            while True:
                chunk = intruder.recv(4096)
                if not chunk:
                    break
                received += chunk
        assert b"BIOS" not in received
        assert b"invalid token" in received
    finally:
        site.api("DELETE", f"/console/{opened['wid']}")
    listing = subprocess.run(["kanodes3", "-c"], capture_output=True, text=True, env=site.env, timeout=60, check=False)
    assert opened["wid"] not in listing.stdout
