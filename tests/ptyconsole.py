"""kaconsole3 in a pseudo-terminal: reading what it shows, detaching, and cleaning up.

Shared by the netns e2e console test and the QEMU console test.
"""

from __future__ import annotations

import os
import select
import signal
import time

ESCAPE = b"\x1b" * 4  # kaconsole3's detach sequence


def read_until(fd: int, needle: bytes, timeout: float) -> bytes:
    """What the terminal shows until `needle` appears, the client ends, or `timeout` s pass."""
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


def detach(pid: int, fd: int, timeout: float) -> int | None:
    """Type the escape sequence; the client's exit code, or None if it still runs after `timeout` s."""
    os.write(fd, ESCAPE)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        finished, status = os.waitpid(pid, os.WNOHANG)
        if finished:
            return os.waitstatus_to_exitcode(status)
        read_until(fd, b"\0", 0.5)  # keep the terminal drained
    return None


def reap(pid: int, fd: int) -> None:
    """Kill the client if it still runs and close its terminal."""
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass
    os.close(fd)
