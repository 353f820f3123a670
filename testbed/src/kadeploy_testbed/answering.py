"""Waiting for a started kadeploy3d to answer (room testbed: the harness and the tests start servers).

One poll loop for every place that starts a server and must know it is up:
the fake testbed's harness, the tests' daemons (dummy or real), the TLS lab,
the end-to-end site and the BMC burst bed.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

import httpx


class NotAnswering(RuntimeError):
    """The server exited, or did not answer in time; the message says which, with what it printed."""


def wait_answering(url: str, process: subprocess.Popen, timeout: float, *, verify: bool = True,
                   printed: Callable[[], str] = lambda: "") -> None:
    """Poll `url` until it answers 200; `NotAnswering` if `process` exits first or `timeout` passes.

    `printed` gives what the server wrote (its stderr or log), added to the message.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise NotAnswering(f"kadeploy3d exited with status {process.returncode}: {printed()}")
        try:
            if httpx.get(url, timeout=1, verify=verify).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise NotAnswering(f"kadeploy3d did not answer on {url} within {timeout:g}s: {printed()}")
