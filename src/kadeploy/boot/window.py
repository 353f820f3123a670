"""Server-wide limits on power commands: the reboot window and the per-BMC interval gate.

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
    """Commands to one BMC run one at a time, `seconds` apart (end of one to start of next).

    Many BMCs drop or mishandle a request that follows the previous one too
    closely; this spaces them without slowing down commands to other BMCs.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = max(0.0, seconds)
        self._locks: dict[str, asyncio.Lock] = {}
        self._last_end: dict[str, float] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            last = self._last_end.get(key)
            if last is not None:
                delay = last + self.seconds - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            try:
                yield
            finally:
                self._last_end[key] = time.monotonic()
