"""cancel_and_wait: a task that swallows one cancellation still ends, and a stuck one does not block."""

from __future__ import annotations

import asyncio
import time

import pytest

from kadeploy import cancelling
from kadeploy.cancelling import cancel_and_wait


async def _swallows_the_first_cancel(ended: list[str]) -> None:
    # what Python 3.11's wait_for does when the cancel lands as its inner awaitable completes
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        pass
    try:
        await asyncio.sleep(3600)  # the next wait: only a second cancel ends it
    finally:
        ended.append("swallower")


async def _failed() -> None:
    raise RuntimeError("boom")


async def test_a_task_that_swallowed_the_cancel_is_cancelled_again_and_ends() -> None:
    ended: list[str] = []
    swallower = asyncio.ensure_future(_swallows_the_first_cancel(ended))
    failed = asyncio.ensure_future(_failed())
    await asyncio.sleep(0)
    started = time.monotonic()
    await asyncio.wait_for(cancel_and_wait([swallower, failed], "test task"), 5)
    assert ended == ["swallower"] and swallower.cancelled()
    # cancelled again after RECANCEL_AFTER (wait_for's 5 s bounds the whole, not the swallower's hour)
    assert time.monotonic() - started >= cancelling.RECANCEL_AFTER * 0.99
    assert isinstance(failed.exception(), RuntimeError)


async def test_a_task_that_never_ends_is_left_behind_after_the_give_up_delay(monkeypatch: pytest.MonkeyPatch,
                                                                            caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(cancelling, "RECANCEL_AFTER", 0.05)
    monkeypatch.setattr(cancelling, "GIVE_UP_AFTER", 0.2)
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                continue

    task = asyncio.ensure_future(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait([task], "stubborn task"), 5)
    assert not task.done()
    assert "1 stubborn task(s) still running" in caplog.text and "left behind" in caplog.text
    release.set()
    task.cancel()
    await asyncio.wait({task}, timeout=1)
    assert task.done()
