"""The tests' shared helpers: stop_process (tests/processgroups.py) and free_port (tests/ports.py)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import pytest

from tests.ports import free_port
from tests.processgroups import stop_process

IGNORES_TERM = ("import signal, sys, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                "print('ready', flush=True)\ntime.sleep(300)\n")


def test_stop_process_ends_a_polite_process_with_sigterm() -> None:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    stop_process(process, timeout=10)
    assert process.returncode == -signal.SIGTERM


def test_stop_process_kills_a_process_that_ignores_sigterm() -> None:
    process = subprocess.Popen([sys.executable, "-c", IGNORES_TERM], stdout=subprocess.PIPE)
    assert process.stdout is not None and process.stdout.readline() == b"ready\n"  # SIGTERM is ignored from now on
    stop_process(process, timeout=0.5)
    assert process.returncode == -signal.SIGKILL
    process.stdout.close()


def test_stop_process_leaves_an_ended_process_alone() -> None:
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    process.wait(timeout=30)
    stop_process(process)
    assert process.returncode == 3


@pytest.mark.parametrize("kind", [socket.SOCK_STREAM, socket.SOCK_DGRAM])
def test_free_port_can_be_bound_by_its_user(kind: int) -> None:
    port = free_port(kind)
    assert 0 < port < 65536
    with socket.socket(socket.AF_INET, kind) as server:
        server.bind(("127.0.0.1", port))
        assert server.getsockname()[1] == port
