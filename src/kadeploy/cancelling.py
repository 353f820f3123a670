"""Cancelling tasks so that they really end, and waiting for them, bounded.

Why: Python 3.11's `asyncio.wait_for` swallows a cancellation that arrives
in the loop iteration where its inner awaitable completes (fixed in 3.12).
A task cancelled that way goes on to its next wait, and a `gather` of the
cancelled tasks can wait forever. Seen twice: a fake node's relay powered
off mid-stream, and a broadcast whose relays all had the whole stream and
were never told to quit (the server waited for its cancelled tasks before
stopping them). Cancelling again whatever is still pending after a moment
ends such a task at its next wait; past GIVE_UP_AFTER it is left behind and
logged, so that what comes after the wait (stopping relays, powering a node
off) still happens. Stdlib only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger("kadeploy")

#: how long a cancelled task may take to end before it is cancelled again
RECANCEL_AFTER = 0.5
#: after this, stuck tasks are left behind (and logged) rather than blocking their caller for ever
GIVE_UP_AFTER = 10.0


async def cancel_and_wait(tasks: Iterable[asyncio.Future[Any]], what: str = "task") -> None:
    """Cancel `tasks` and wait until they are done, cancelling again those that swallowed it."""
    tasks = list(tasks)
    for task in tasks:  # those already over: their exception is retrieved, as gather(return_exceptions=True) did
        if task.done() and not task.cancelled():
            task.exception()
    pending = {task for task in tasks if not task.done()}
    waited = 0.0
    while pending:
        for task in pending:
            task.cancel()
        if waited >= GIVE_UP_AFTER:
            log.error("%d %s(s) still running %gs after being cancelled: left behind", len(pending), what, waited)
            return
        done, pending = await asyncio.wait(pending, timeout=RECANCEL_AFTER)
        for task in done:
            if not task.cancelled():
                task.exception()
        waited += RECANCEL_AFTER
        if pending:
            log.info("%d %s(s) still running %gs after being cancelled: cancelling again", len(pending), what, waited)
