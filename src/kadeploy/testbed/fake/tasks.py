"""testbed.fake room: cancelling a node's tasks so that they really end.

Why: Python 3.11's `asyncio.wait_for` swallows a cancellation that arrives
in the loop iteration where its inner awaitable completes (fixed in 3.12).
A relay's forwarding task cancelled that way while `drain()` returned goes
on to wait for data that its cancelled upstream will never send, and the
`gather` that powers the node off waits forever: seen when a node was
powered off mid-stream. Cancelling again whatever is still pending after a
moment ends such a task at its next wait. Stdlib only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger("kadeploy.testbed.fake")

#: how long a cancelled task may take to end before it is cancelled again
RECANCEL_AFTER = 0.5
#: after this, stuck tasks are left behind (and logged) rather than blocking a power-off for ever
GIVE_UP_AFTER = 10.0


async def cancel_and_wait(tasks: Iterable[asyncio.Future[Any]], what: str = "task") -> None:
    """Cancel `tasks` and wait until they are done, cancelling again those that swallowed it."""
    pending = {task for task in tasks if not task.done()}
    waited = 0.0
    while pending:
        for task in pending:
            task.cancel()
        if waited >= GIVE_UP_AFTER:
            log.error("%d %s(s) still running %gs after being cancelled: left behind", len(pending), what, waited)
            return
        _done, pending = await asyncio.wait(pending, timeout=RECANCEL_AFTER)
        waited += RECANCEL_AFTER
        if pending:
            log.info("%d %s(s) still running %gs after being cancelled: cancelling again", len(pending), what, waited)
