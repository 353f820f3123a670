"""Process-group checks shared by the tests of local commands (boot.process and the steps that use it).

A command under test writes its shell's pid (its process group id: it is started
in its own session) and starts a child, as a command template that runs `ssh`
or `ipmitool` in the background would; afterwards /proc must hold no live
process of that group.
"""

from __future__ import annotations

import asyncio
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
