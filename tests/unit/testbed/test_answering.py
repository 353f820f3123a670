"""wait_answering: the one poll loop the harness and the tests start servers with."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from kadeploy_testbed.answering import NotAnswering, wait_answering


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/version"


def test_a_server_that_exits_is_reported_with_its_status_and_what_it_printed():
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(NotAnswering, match=r"exited with status 3: bad config"):
        wait_answering(closed_port_url(), process, 30, printed=lambda: "bad config")


def test_a_server_that_never_answers_times_out():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with pytest.raises(NotAnswering, match=r"did not answer on http://127\.0\.0\.1:\d+/version within 0\.5s"):
            wait_answering(closed_port_url(), process, 0.5)
    finally:
        process.kill()
        process.wait()
