"""Fake relays of one daemon linked in-process (memlink): a chain delivers, and repairs around a killed relay.

The server side is played by hand with the real protocol: a TCP connection to
the first relay's listener (8-byte offset in, stream out, 8-byte ack back) and
the JSON `start`/`dead` commands on each relay's channel.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import struct

from kadeploy_testbed.fake import relay as fake_relay
from kadeploy_testbed.fake.relay import FakeRelay
from kadeploy_testbed.fake.sinks import ImageSink

OFFSET = struct.Struct("!Q")
SIZE = 6 * 1024 * 1024


class Channel:
    """The relay's SSH channel: commands in, JSON events out."""

    def __init__(self) -> None:
        self.commands: asyncio.Queue[bytes] = asyncio.Queue()
        self.events: list[dict] = []
        self.ready = asyncio.Event()

    def emit(self, line: str) -> None:
        self.events.append(json.loads(line))
        if self.events[-1]["ev"] == "ready":
            self.ready.set()

    async def readline(self) -> bytes:
        return await self.commands.get()

    async def read(self, _count: int) -> bytes:
        return b""

    def send(self, command: dict) -> None:
        self.commands.put_nowait(json.dumps(command).encode() + b"\n")

    def event(self, name: str) -> dict | None:
        return next((event for event in self.events if event["ev"] == name), None)


async def _chain(count: int, data: bytes, *, kill: int | None = None, limit_rate: float = 0.0):
    config = {"total": len(data), "digest": "sha256", "stall": 5, "connect_timeout": 2}
    channels = [Channel() for _ in range(count)]
    relays = [FakeRelay("127.0.0.1", {**config, "limit_rate": limit_rate if index == 0 else 0},
                        ImageSink("none", "raw", inspect=False), channel.emit, buffer=2 * 1024 * 1024)
              for index, channel in enumerate(channels)]
    runs = [asyncio.ensure_future(relay.run(channel.readline, channel.read))
            for relay, channel in zip(relays, channels)]
    await asyncio.wait_for(asyncio.gather(*(channel.ready.wait() for channel in channels)), 5)
    ports = [channel.event("ready")["port"] for channel in channels]
    assert all(("127.0.0.1", port) in fake_relay._LISTENING for port in ports)
    for index, channel in enumerate(channels[:-1]):
        # kascade: each relay gets its successors in order, the first one live is fed
        targets = [[f"n{later}", "127.0.0.1", ports[later]] for later in range(index + 1, count)]
        channel.send({"op": "start", "repair": True, "children": [targets]})
    reader, writer = await asyncio.open_connection("127.0.0.1", ports[0])
    offset = OFFSET.unpack(await reader.readexactly(OFFSET.size))[0]
    writer.write(data[offset:])
    await writer.drain()
    if kill is not None:
        await asyncio.sleep(0.3)
        assert 0 < relays[kill].received < len(data), "kill the relay mid-stream"
        runs[kill].cancel()
        for channel in channels[:kill]:
            channel.send({"op": "dead", "host": f"n{kill}"})
    assert OFFSET.unpack(await asyncio.wait_for(reader.readexactly(OFFSET.size), 10))[0] == len(data)
    writer.close()
    survivors = [index for index in range(count) if index != kill]
    await asyncio.wait_for(asyncio.gather(*(relays[index].sink_done.wait() for index in survivors)), 10)
    for channel, run in zip(channels, runs):
        channel.commands.put_nowait(b"")
    await asyncio.gather(*runs, return_exceptions=True)
    return relays, channels


async def test_chain_of_fake_relays_delivers_through_memlinks() -> None:
    data = os.urandom(SIZE)
    relays, channels = await _chain(4, data)
    expected = hashlib.sha256(data).hexdigest()
    assert [channel.event("done")["digest"] for channel in channels] == [expected] * 4
    assert not fake_relay._LISTENING  # every relay unregistered on exit


async def test_killed_fake_relay_is_bypassed_and_its_successors_complete() -> None:
    data = os.urandom(SIZE)
    relays, channels = await _chain(4, data, kill=1, limit_rate=8 * 1024 * 1024)
    expected = hashlib.sha256(data).hexdigest()
    for index in (0, 2, 3):
        assert channels[index].event("done")["digest"] == expected, index
    assert channels[1].event("done") is None
    assert "n1" in relays[0].dead  # told by the "server"; it moved on to n2 at n2's offset


async def test_a_relay_ends_even_when_its_forwarding_task_swallows_the_cancellation(monkeypatch) -> None:
    # Python 3.11's asyncio.wait_for returns instead of raising when it is cancelled in the loop
    # iteration where its inner awaitable completes: here the node is powered off (its relay's run
    # cancelled) while drain() on the link to its successor completes. Before the fix the forwarding
    # task then waited for data for ever and the power-off never ended.
    armed: dict[str, asyncio.Task] = {}
    real_link_pair = fake_relay.link_pair

    def link_pair():
        (reader, writer), accepted = real_link_pair()
        real_drain = writer.drain

        async def drain() -> None:
            run = armed.pop("run", None)
            if run is not None:
                run.cancel()
                await asyncio.sleep(0)
            await real_drain()

        writer.drain = drain
        return (reader, writer), accepted

    monkeypatch.setattr(fake_relay, "link_pair", link_pair)
    chunk = os.urandom(64 * 1024)
    config = {"total": 4 * len(chunk), "digest": "sha256", "stall": 5, "connect_timeout": 2}
    channels = [Channel(), Channel()]
    relays = [FakeRelay("127.0.0.1", config, ImageSink("none", "raw", inspect=False), channel.emit)
              for channel in channels]
    runs = [asyncio.ensure_future(relay.run(channel.readline, channel.read))
            for relay, channel in zip(relays, channels)]
    await asyncio.wait_for(asyncio.gather(*(channel.ready.wait() for channel in channels)), 5)
    ports = [channel.event("ready")["port"] for channel in channels]
    channels[0].send({"op": "start", "repair": True, "children": [[["n1", "127.0.0.1", ports[1]]]]})
    reader, writer = await asyncio.open_connection("127.0.0.1", ports[0])
    assert OFFSET.unpack(await reader.readexactly(OFFSET.size))[0] == 0
    writer.write(chunk)
    await writer.drain()
    deadline = asyncio.get_running_loop().time() + 5
    while relays[1].received < len(chunk):
        assert asyncio.get_running_loop().time() < deadline, "the first chunk reached the successor"
        await asyncio.sleep(0.01)
    armed["run"] = runs[0]
    writer.write(chunk)  # forwarded, and drain() completes as the head's run is cancelled
    await writer.drain()
    done, _pending = await asyncio.wait([runs[0]], timeout=5)
    assert done, "the cancelled relay did not end"
    writer.close()
    channels[1].commands.put_nowait(b"")
    await asyncio.wait_for(asyncio.gather(*runs, return_exceptions=True), 5)
