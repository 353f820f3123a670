"""Reboot detection against local TCP listeners on 127.0.0.x."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from kadeploy.boot.probe import UNREACHABLE, PortState, probe_port, wait_reboot


def free_port() -> int:
    """A port free on 127.0.0.2-6 (listeners for several 'nodes' share the ssh and marker ports)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.2", 0))
            port = s.getsockname()[1]
        try:
            for last in range(3, 7):
                with socket.socket() as other:
                    other.bind((f"127.0.0.{last}", port))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port")


class Listeners:
    """TCP listeners opened and closed by the test, accepting and dropping connections."""

    def __init__(self) -> None:
        self.servers: dict[tuple[str, int], asyncio.AbstractServer] = {}

    async def open(self, address: str, port: int) -> None:
        async def handle(reader, writer):
            writer.close()

        self.servers[(address, port)] = await asyncio.start_server(handle, address, port)

    async def close(self, address: str, port: int) -> None:
        server = self.servers.pop((address, port))
        server.close()
        await server.wait_closed()

    async def close_all(self) -> None:
        for key in list(self.servers):
            await self.close(*key)


@pytest.fixture
async def listeners():
    opened = Listeners()
    yield opened
    await opened.close_all()


@pytest.fixture
def ports():
    return free_port(), free_port()


async def test_probe_port_states(listeners, ports):
    ssh, _ = ports
    await listeners.open("127.0.0.2", ssh)
    assert await probe_port("127.0.0.2", ssh, 1.0) is PortState.OPEN
    assert await probe_port("127.0.0.3", ssh, 1.0) is PortState.REFUSED


async def test_deploy_env_needs_the_marker_port(listeners, ports):
    ssh, marker = ports
    await listeners.open("127.0.0.2", ssh)
    await listeners.open("127.0.0.2", marker)  # deployment environment
    await listeners.open("127.0.0.3", ssh)  # old system: no marker
    reached: list[str] = []
    result = await wait_reboot(
        {"n2": "127.0.0.2", "n3": "127.0.0.3", "n4": "127.0.0.4"},
        ssh_port=ssh, ports_up=[marker], timeout=0.6, initial_sleep=0, interval=0.2,
        on_reached=lambda host, seconds: reached.append(host),
    )
    assert result.ok == ["n2"] and reached == ["n2"]
    assert result.ko == {"n3": UNREACHABLE, "n4": UNREACHABLE}


async def test_user_env_requires_the_marker_port_closed(listeners, ports):
    ssh, marker = ports
    for address in ("127.0.0.2", "127.0.0.3"):
        await listeners.open(address, ssh)
    await listeners.open("127.0.0.3", marker)  # fell back into the deployment environment
    result = await wait_reboot(
        {"n2": "127.0.0.2", "n3": "127.0.0.3"},
        ssh_port=ssh, ports_down=[marker], timeout=0.6, initial_sleep=0, interval=0.2,
    )
    assert result.ok == ["n2"] and result.ko == {"n3": UNREACHABLE}


async def test_node_coming_up_late_is_reached_at_a_later_round(listeners, ports):
    ssh, _ = ports
    seen: dict[str, float] = {}
    interval = 1.0
    started = time.monotonic()
    opened: list[float] = []

    async def boot_later():
        await asyncio.sleep(0.5)  # after the first probe, at 0.1 s
        await listeners.open("127.0.0.5", ssh)
        opened.append(time.monotonic() - started)

    booting = asyncio.create_task(boot_later())
    result = await wait_reboot(
        {"n5": "127.0.0.5"}, ssh_port=ssh, timeout=5, initial_sleep=0.1, interval=interval,
        on_reached=lambda host, seconds: seen.setdefault(host, seconds),
    )
    await booting
    assert result.ok == ["n5"]
    # reached by a later round: after the node came up, and within one interval of it
    # (bounds relative to the moment the node came up, so a slow machine shifts both)
    assert opened[0] <= seen["n5"] < opened[0] + interval, (opened, seen)
    assert seen["n5"] >= 0.1 + interval


async def test_initial_sleep_delays_the_first_probe(listeners, ports):
    ssh, _ = ports
    await listeners.open("127.0.0.2", ssh)
    initial_sleep, interval = 0.4, 5
    started = time.monotonic()
    result = await wait_reboot({"n2": "127.0.0.2"}, ssh_port=ssh, timeout=10, initial_sleep=initial_sleep,
                               interval=interval)
    elapsed = time.monotonic() - started
    # reached by the first probe, after the initial sleep: the second would come an interval later
    assert result.ok == ["n2"] and initial_sleep <= elapsed < initial_sleep + interval


async def test_timeout_bounds_the_wait(ports):
    ssh, _ = ports
    timeout, interval = 0.8, 5
    started = time.monotonic()
    result = await wait_reboot({"n6": "127.0.0.6"}, ssh_port=ssh, timeout=timeout, initial_sleep=0.2,
                               interval=interval)
    elapsed = time.monotonic() - started
    assert result.ko == {"n6": UNREACHABLE} and result.ok == []
    # ended at the timeout, not at the end of the pause before the next round
    assert timeout <= elapsed < interval


async def test_window_bounds_concurrent_probes(listeners, ports, monkeypatch):
    import kadeploy.boot.probe as probe

    active = peak = 0
    original = probe.probe_node

    async def counting(*args, **kwargs):
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.05)
        try:
            return await original(*args, **kwargs)
        finally:
            active -= 1

    monkeypatch.setattr(probe, "probe_node", counting)
    ssh, _ = ports
    await listeners.open("127.0.0.2", ssh)
    hosts = {f"n{i}": "127.0.0.2" for i in range(10)}
    result = await wait_reboot(hosts, ssh_port=ssh, timeout=3, initial_sleep=0, window=3)
    assert len(result.ok) == 10 and peak == 3
