"""`-d` output and fd 3: only a descriptor the caller opened counts (Kadeploy3's convention).

Found by the e2e suite: fd 3 was checked when the first debug line came, by
which time it was the client's own HTTP socket, and the debug lines went to
the server as a garbled request.
"""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import socket
from kadeploy.client.run import open_debug_printer
own = socket.socket()          # takes the lowest free descriptor, 3 when the caller left it free
printer = open_debug_printer()
if printer is None:
    print("inline", own.fileno())
else:
    printer.line("to the caller's fd 3")
    print("fd3", own.fileno())
"""


def _run(redirect: str) -> list[str]:
    """The probe started by a shell that opens (or closes) fd 3 as the caller would."""
    script = f"exec {redirect}; exec \"$0\" -c \"$1\""
    return subprocess.run(["sh", "-c", script, sys.executable, PROBE], capture_output=True, text=True,
                          timeout=60, check=True).stdout.split()


def test_a_socket_that_became_fd_3_is_not_taken_for_the_debug_channel() -> None:
    assert _run("3>&-") == ["inline", "3"]


def test_fd_3_opened_by_the_caller_receives_the_debug_lines(tmp_path) -> None:
    debug = tmp_path / "debug"
    assert _run(f"3>{debug}")[0] == "fd3"
    assert "to the caller's fd 3" in debug.read_text()
