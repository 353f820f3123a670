"""Per-node results: success, reasons, truncated output, connection error texts."""

from __future__ import annotations

import asyncio
import socket

import asyncssh

from kadeploy.remote.connections import describe_connect_error
from kadeploy.remote.executor import _Capture
from kadeploy.remote.result import CommandResult


def test_ok_needs_status_zero_and_no_error():
    assert CommandResult("n", 0).ok
    assert not CommandResult("n", 1).ok
    assert not CommandResult("n", None, error="Connection refused").ok


def test_reason_prefers_the_error_then_stderr_then_status():
    assert CommandResult("n", None, stderr="x", error="Connection timeout").reason == "Connection timeout"
    assert CommandResult("n", 2, stderr="  mkfs: no such device\n").reason == "mkfs: no such device"
    assert CommandResult("n", 2).reason == "exit status 2"


def test_capture_keeps_the_limit_and_counts_the_rest():
    capture = _Capture(10)
    for chunk in (b"abcdef", b"ghijkl", b"mnop"):
        capture.feed(chunk)
    assert capture.text() == "abcdefghij\n[... 6 bytes truncated]"
    small = _Capture(100)
    small.feed(b"\xffok")
    assert small.text() == "\ufffdok"


def test_connection_errors_read_like_ssh_errors():
    assert describe_connect_error(ConnectionRefusedError()) == "Connection refused"
    assert describe_connect_error(asyncio.TimeoutError()) == "Connection timeout"
    assert describe_connect_error(asyncssh.PermissionDenied("no")).startswith("Authentication failed")
    assert describe_connect_error(OSError(113, "No route to host")) == "No route to host"
    assert describe_connect_error(socket.gaierror(-2, "Name or service not known")).startswith("Unknown host")
