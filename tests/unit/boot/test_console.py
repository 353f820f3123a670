"""The console bridge: token first, data both ways through a PTY, one client, escape, close."""

from __future__ import annotations

import asyncio
import os

import pytest

from kadeploy.boot.console import ALREADY_ATTACHED, ESCAPE, ConsoleSession, new_token


async def read_until(reader: asyncio.StreamReader, needle: bytes, timeout: float = 5.0) -> bytes:
    data = b""
    async def loop():
        nonlocal data
        while needle not in data:
            chunk = await reader.read(1024)
            if not chunk:
                break
            data += chunk
    await asyncio.wait_for(loop(), timeout)
    return data


@pytest.fixture
async def session():
    sessions: list[ConsoleSession] = []

    async def make(command: str, **kw) -> ConsoleSession:
        console = ConsoleSession(command, kw.pop("token", "s3cret-token"), bind="127.0.0.1", **kw)
        await console.start()
        sessions.append(console)
        return console

    yield make
    for console in sessions:
        await console.close()


async def test_data_flows_both_ways_after_the_token(session):
    console = await session("echo hello from the node; cat")
    reader, writer = await asyncio.open_connection("127.0.0.1", console.port)
    writer.write(b"s3cret-token\n")
    assert b"hello from the node" in await read_until(reader, b"hello from the node")
    assert console.attached
    writer.write(b"ping-42\n")
    await writer.drain()
    assert b"ping-42" in await read_until(reader, b"ping-42")
    writer.close()
    await console.wait_closed(5)
    assert not console.attached


async def test_wrong_token_gets_nothing_and_starts_nothing(session, tmp_path):
    marker = tmp_path / "started"
    console = await session(f"touch {marker}; echo secret-output; cat")
    reader, writer = await asyncio.open_connection("127.0.0.1", console.port)
    writer.write(b"guess\n")
    received = await asyncio.wait_for(reader.read(), 5)
    assert b"secret-output" not in received and b"invalid token" in received
    assert not marker.exists() and not console.attached and not console.closed
    # the owner can still attach afterwards
    reader, writer = await asyncio.open_connection("127.0.0.1", console.port)
    writer.write(b"s3cret-token\n")
    assert b"secret-output" in await read_until(reader, b"secret-output")
    writer.close()


async def test_client_sending_nothing_is_dropped(session):
    console = await session("echo leaked", token_timeout=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", console.port)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_second_client_is_refused(session):
    console = await session("cat")
    reader1, writer1 = await asyncio.open_connection("127.0.0.1", console.port)
    writer1.write(b"s3cret-token\n")
    await writer1.drain()
    for _ in range(50):
        if console.attached:
            break
        await asyncio.sleep(0.02)
    reader2, writer2 = await asyncio.open_connection("127.0.0.1", console.port)
    assert await asyncio.wait_for(reader2.read(), 5) == ALREADY_ATTACHED
    writer2.close()
    writer1.write(b"still-mine\n")
    assert b"still-mine" in await read_until(reader1, b"still-mine")
    writer1.close()


async def test_four_escapes_end_the_session_and_kill_the_command(session, tmp_path):
    pidfile = tmp_path / "pid"
    console = await session(f"echo $$ > {pidfile}; echo ready; exec cat")
    reader, writer = await asyncio.open_connection("127.0.0.1", console.port)
    writer.write(b"s3cret-token\n")
    await read_until(reader, b"ready")
    writer.write(b"ab" + ESCAPE[:2])
    await writer.drain()
    await asyncio.sleep(0.1)
    assert not console.closed  # two ESCs are just input
    writer.write(ESCAPE[2:])
    await writer.drain()
    await console.wait_closed(5)
    pid = int(pidfile.read_text())
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    # the token was used once: nobody can attach again
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", console.port)


async def test_command_exit_closes_the_client(session):
    console = await session("echo bye")
    reader, writer = await asyncio.open_connection("127.0.0.1", console.port)
    writer.write(b"s3cret-token\n")
    data = await asyncio.wait_for(reader.read(), 5)
    assert b"bye" in data
    await console.wait_closed(5)


def test_tokens_are_unique_and_long():
    assert len({new_token() for _ in range(20)}) == 20 and len(new_token()) >= 40
