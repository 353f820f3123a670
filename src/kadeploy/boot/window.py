"""Server-wide limits on power commands: the reboot window and the per-BMC gate.

The reboot window caps how many reboot/power commands run at once across all
workflows of the server (power peaks, TFTP storms). Kadeploy3 polls a counter
and sleeps `sleep_time` whenever it is full; here it is a semaphore, so a slot
is reused the moment a command ends. Counters are kept live so that tests and
the server's status can observe the real concurrency.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from kadeploy.boot.bmcsession import NO_RETRY, SessionRetry


class RebootWindow:
    """At most `size` commands at once, server-wide; one instance per server."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"reboot window size must be at least 1, not {size}")
        self.size = size
        self._semaphore = asyncio.Semaphore(size)
        self.current = 0  # commands running now
        self.peak = 0  # highest `current` ever seen
        self.total = 0  # commands started since creation

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one slot of the window for the duration of the `async with` block."""
        async with self._semaphore:
            self.current += 1
            self.total += 1
            self.peak = max(self.peak, self.current)
            try:
                yield
            finally:
                self.current -= 1

    def reset_peak(self) -> None:
        self.peak = self.current


class MinIntervalGate:
    """Per-BMC pacing: at most `sessions` commands to one BMC at once, `seconds` apart
    (end of the last one to start of the next), and the retry policy for refused sessions.

    Many BMCs drop or mishandle a request that follows the previous one too
    closely, and all of them limit concurrent sessions; this spaces the commands
    to one BMC without slowing down commands to other BMCs. `retry` says how a
    command whose session the BMC refused is run again (`kadeploy.boot.power`
    waits outside the gate and the reboot window, then queues again).
    Configured by server.conf `windows/bmc`.
    """

    def __init__(self, seconds: float, sessions: int = 1, retry: SessionRetry = NO_RETRY) -> None:
        if sessions < 1:
            raise ValueError(f"sessions per BMC must be at least 1, not {sessions}")
        self.seconds = max(0.0, seconds)
        self.sessions = sessions
        self.retry = retry
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._last_end: dict[str, float] = {}
        self.current: dict[str, int] = {}  # commands running now, per BMC
        self.peak = 0  # most commands ever seen running at once on one BMC

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        slots = self._slots.setdefault(key, asyncio.Semaphore(self.sessions))
        async with slots:
            while True:  # another holder may end (and move the last end) while we sleep
                last = self._last_end.get(key)
                delay = 0.0 if last is None else last + self.seconds - time.monotonic()
                if delay <= 0:
                    break
                await asyncio.sleep(delay)
            self.current[key] = self.current.get(key, 0) + 1
            self.peak = max(self.peak, self.current[key])
            try:
                yield
            finally:
                self.current[key] -= 1
                self._last_end[key] = time.monotonic()
