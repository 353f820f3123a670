"""kaconsole3 through a pseudo-terminal: the node's serial console shows up; a client that
connects to the console port without the workflow's one-time token gets nothing.
"""

from __future__ import annotations

import os
import pty
import socket
import subprocess

import pytest

from tests.ptyconsole import detach, read_until, reap

pytestmark = [pytest.mark.e2e, pytest.mark.root, pytest.mark.testbed]


def test_kaconsole_shows_the_node_console_through_a_pty(site) -> None:
    node = site.nodes[0]
    # a node that has printed something: powered on, its firmware writes on the serial line
    site.tool("kapower3", "--on", "-m", node)
    pid, fd = pty.fork()
    if pid == 0:  # the child: kaconsole3 on a terminal, as a user runs it
        os.execvpe("kaconsole3", ["kaconsole3", "-m", node], dict(site.env, USER="root", TERM="dumb"))
    try:
        # `kadeploy-testbed console` replays the serial log: the firmware's first words
        output = read_until(fd, b"BIOS: " + node.split(".")[0].encode(), 60)
        assert b"BIOS: " + node.split(".")[0].encode() in output, output[-2000:]
        exit_code = detach(pid, fd, 20)
        assert exit_code is not None, "kaconsole3 did not end on the escape sequence"
        assert exit_code == 0
    finally:
        reap(pid, fd)


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
