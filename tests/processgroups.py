"""Process checks shared by the tests: process groups of local commands, and stopping a started server.

A command under test writes its shell's pid (its process group id: it is started
in its own session) and starts a child, as a command template that runs `ssh`
or `ipmitool` in the background would; afterwards /proc must hold no live
process of that group. `stop_process` is how a test ends a server it started
(kadeploy3d...): politely first, surely in the end, never waiting forever.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

CHILD_AND_WAIT = "echo $$ > {pidfile}; sleep 300 & sleep 300"


async def survivors(pgid: int) -> list[int]:
    """Live members of group `pgid` once SIGKILL had time to land (an orphan dies a moment after its shell)."""
    for _ in range(50):
        members = live_members(pgid)
        if not members:
            return []
        await asyncio.sleep(0.05)
    return members


def live_members(pgid: int) -> list[int]:
    """Pids of processes of group `pgid` that are not zombies (a zombie is dead, only not reaped yet)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state != "Z":
            members.append(int(stat.parent.name))
    return members


async def group_of(pidfile: Path) -> int:
    """The group id the command wrote, once its shell had a moment to start its child."""
    for _ in range(200):
        if pidfile.exists() and pidfile.read_text().strip():
            await asyncio.sleep(0.1)
            return int(pidfile.read_text())
        await asyncio.sleep(0.02)
    raise AssertionError("the command never started")


def stop_process(process: subprocess.Popen, timeout: float = 30.0) -> None:
    """End `process`: SIGTERM, wait up to `timeout`; if it is still there, SIGKILL and wait again.

    Why: a server stopped by a test gets its chance to clean up (SIGTERM), but a
    hung one must not hold the test or leak (SIGKILL); each wait is bounded."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)
