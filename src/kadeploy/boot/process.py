"""Run one local command (a reboot script, ipmitool, a VLAN or broadcast command, a hook) with a hard timeout.

The one helper for commands the server runs on itself: power and reboot
templates (boot), `set_vlan` and BroadcastEnvCustom (steps), the end hooks
(server); the console (boot/console.py) kills its command with `kill_group`.
Commands run in their own process group so that a timeout or a cancellation
kills the whole tree (a script that started ssh or ipmitool), not just the shell.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass
class ProcessResult:
    """How a local command ended; `exit_status` is None when it was killed at its timeout."""

    exit_status: int | None
    stdout: str
    stderr: str
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_status == 0 and not self.timed_out


def use_pidfd_child_watcher() -> bool:
    """On Python 3.11, reap children with pidfds instead of one waiting thread each.

    Why: a deployment runs a power command per node (reboot, power on/off); the
    default watcher of 3.11 starts a thread per child, which showed in the
    server's profile at 1,000 nodes. 3.12 already uses pidfds when the kernel has
    them. Call before the event loop starts; returns whether pidfds are used.
    """
    if sys.version_info >= (3, 12) or not hasattr(asyncio, "PidfdChildWatcher") or not hasattr(os, "pidfd_open"):
        return False
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:  # old kernel, or pidfd_open filtered by a seccomp policy
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        asyncio.set_child_watcher(asyncio.PidfdChildWatcher())
    return True


def kill_group(process: asyncio.subprocess.Process) -> None:
    """SIGKILL the process group of `process` (it was started with its own session).

    Even when `process` itself has ended: a shell that exited may have left
    children in its group (`cmd &`), still holding its pipes. The group id
    cannot be reused while one of them lives; an empty group is ESRCH.
    """
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


async def run_process(
    command: str | Sequence[str],
    timeout: float | None,
    *,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    capture: bool = True,
) -> ProcessResult:
    """Run `command` (a string goes through `/bin/sh -c`, a list is exec'ed) for at most `timeout` s.

    `timeout` None: no limit but cancellation. `capture` False sends stdout and
    stderr to /dev/null (a hook's output nobody reads must not fill memory).
    Whatever happens (timeout, cancellation), the command's process group is
    killed before this returns or raises.
    """
    full_env = {**os.environ, **env} if env else None
    if isinstance(command, str):
        argv: Sequence[str] = ("/bin/sh", "-c", command)
    else:
        argv = command
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE if capture else asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE if capture else asyncio.subprocess.DEVNULL,
        env=full_env,
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(timeout):
            stdout, stderr = await process.communicate(stdin)
    except TimeoutError:
        kill_group(process)
        await _reap(process)
        return ProcessResult(None, "", "", timed_out=True)
    except BaseException:
        kill_group(process)
        await asyncio.shield(_reap(process))
        raise
    return ProcessResult(process.returncode, (stdout or b"").decode(errors="replace"),
                         (stderr or b"").decode(errors="replace"))


async def _reap(process: asyncio.subprocess.Process) -> None:
    """Wait for a killed process; bounded, since a process in D state may linger."""
    try:
        await asyncio.wait_for(process.wait(), 5.0)
    except asyncio.TimeoutError:
        pass
