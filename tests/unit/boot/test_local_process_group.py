"""Local commands die with their whole process group on timeout or cancellation (issue 15, point 3).

Each command writes its shell's pid (= its process group id, it is started in
its own session) and starts a child, as a command template that runs `ssh` or
`ipmitool` in the background would. Afterwards /proc must hold no live process
of that group.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from kadeploy.boot.process import run_process

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
    for _ in range(200):
        if pidfile.exists() and pidfile.read_text().strip():
            return int(pidfile.read_text())
        await asyncio.sleep(0.02)
    raise AssertionError("the command never started")


async def test_a_timed_out_command_leaves_no_process_of_its_group(tmp_path):
    pidfile = tmp_path / "pid"
    outcome = await run_process(CHILD_AND_WAIT.format(pidfile=pidfile), 0.5)
    assert outcome.timed_out and not outcome.ok
    pgid = int(pidfile.read_text())
    assert await survivors(pgid) == []


async def test_a_cancelled_command_leaves_no_process_of_its_group(tmp_path):
    pidfile = tmp_path / "pid"
    task = asyncio.create_task(run_process(CHILD_AND_WAIT.format(pidfile=pidfile), 60))
    pgid = await group_of(pidfile)
    await asyncio.sleep(0.1)
    assert len(live_members(pgid)) >= 2  # the shell and its background child
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    assert await survivors(pgid) == []


async def test_children_of_a_shell_that_already_exited_are_killed_at_the_timeout(tmp_path):
    """The shell is gone but its child still holds the output pipe: the group is killed all the same."""
    pidfile = tmp_path / "pid"
    outcome = await run_process(f"echo $$ > {pidfile}; sleep 300 & exit 0", 0.5)
    assert outcome.timed_out
    assert await survivors(int(pidfile.read_text())) == []


async def test_without_capture_the_output_goes_nowhere_and_the_status_is_kept(tmp_path):
    outcome = await run_process("echo out; echo err >&2; exit 4", 5, capture=False)
    assert (outcome.exit_status, outcome.stdout, outcome.stderr) == (4, "", "")
