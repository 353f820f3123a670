"""Local commands die with their whole process group on timeout or cancellation (issue 15, point 3).

The commands and the /proc checks are tests/processgroups.py's.
"""

from __future__ import annotations

import asyncio

from kadeploy.boot.process import run_process
from tests.processgroups import CHILD_AND_WAIT, group_of, live_members, survivors


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
