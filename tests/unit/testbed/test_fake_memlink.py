"""The in-process link between fake relays: the signals FakeRelay relies on (EOF, reset, back-pressure)."""

from __future__ import annotations

import asyncio

import pytest

from kadeploy_testbed.fake.memlink import LINK_BUFFER, link_pair


async def test_bytes_cross_in_both_directions_and_close_ends_the_stream() -> None:
    (up_reader, up_writer), (down_reader, down_writer) = link_pair()
    down_writer.write(b"\0" * 8)
    assert await up_reader.readexactly(8) == b"\0" * 8
    up_writer.write(b"hello ")
    up_writer.write(memoryview(b"world"))
    await up_writer.drain()
    assert await down_reader.readexactly(11) == b"hello world"
    up_writer.close()
    assert await down_reader.read(10) == b""
    with pytest.raises(asyncio.IncompleteReadError):
        await down_reader.readexactly(1)


async def test_writing_to_a_closed_peer_fails_like_a_socket() -> None:
    (_up_reader, up_writer), (_down_reader, down_writer) = link_pair()
    down_writer.close()
    with pytest.raises(ConnectionResetError):
        up_writer.write(b"x")


async def test_abort_wakes_a_blocked_reader_with_a_reset() -> None:
    (up_reader, up_writer), _accepted = link_pair()
    pending = asyncio.ensure_future(up_reader.read(10))
    await asyncio.sleep(0)
    up_writer.transport.abort()
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(pending, 1)


async def test_drain_waits_while_the_reader_is_stalled() -> None:
    (_up_reader, up_writer), (down_reader, _down_writer) = link_pair()
    up_writer.write(b"x" * LINK_BUFFER)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(up_writer.drain(), 0.1)  # the stall detection of FakeRelay rests on this
    assert len(await down_reader.read(LINK_BUFFER)) == LINK_BUFFER
    await asyncio.wait_for(up_writer.drain(), 1)
