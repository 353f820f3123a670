"""The testbed BMCs answer real ipmitool lanplus commands and drive a PowerControl."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from kadeploy.errors import KadeployError
from kadeploy_testbed.bmc import BMCServer, BMCSpec, LoopPower, SimplePower, start_bmcs
from tests.requirements import requires

pytestmark = [
    pytest.mark.root,
    requires("ipmitool"),
]

BMC_A = "127.0.0.51"
BMC_B = "127.0.0.52"


def ipmitool(host: str, *command: str, password: str = "ADMIN", user: str = "ADMIN",
             retries: int = 4, timeout_s: int = 2) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ipmitool", "-I", "lanplus", "-H", host, "-U", user, "-P", password,
         "-N", str(timeout_s), "-R", str(retries), *command],
        capture_output=True, text=True, timeout=30, check=False,
    )


class FailingPower(SimplePower):
    def power_off(self) -> None:
        raise RuntimeError("supervisor is broken")


@pytest.fixture
def bmcs() -> Iterator[tuple[BMCServer, SimplePower, SimplePower]]:
    power_a, power_b = SimplePower(on=False), SimplePower(on=True)
    server = start_bmcs([
        BMCSpec(BMC_A, power_a, name="node-1-bmc"),
        BMCSpec(BMC_B, power_b, user="root", password="s3cret", name="node-2-bmc"),
    ])
    yield server, power_a, power_b
    server.stop()


def test_power_status_follows_power_on_and_off(bmcs) -> None:
    _, power_a, _ = bmcs
    assert ipmitool(BMC_A, "chassis", "power", "status").stdout.strip() == "Chassis Power is off"
    on = ipmitool(BMC_A, "chassis", "power", "on")
    assert on.returncode == 0, on.stderr
    assert ipmitool(BMC_A, "chassis", "power", "status").stdout.strip() == "Chassis Power is on"
    assert ipmitool(BMC_A, "chassis", "power", "off").returncode == 0
    assert ipmitool(BMC_A, "chassis", "power", "status").stdout.strip() == "Chassis Power is off"
    assert power_a.calls == ["on", "off"]


def test_cycle_and_reset_reach_only_their_own_node(bmcs) -> None:
    _, power_a, power_b = bmcs
    cycle = ipmitool(BMC_B, "chassis", "power", "cycle", user="root", password="s3cret")
    assert cycle.returncode == 0, cycle.stderr
    assert "Cycle" in cycle.stdout
    assert ipmitool(BMC_B, "chassis", "power", "reset", user="root",
                    password="s3cret").returncode == 0
    assert power_b.calls == ["cycle", "reset"]
    assert power_a.calls == []


def test_wrong_password_is_rejected(bmcs) -> None:
    _, _, power_b = bmcs
    result = ipmitool(BMC_B, "chassis", "power", "off", user="root", password="wrong")
    assert result.returncode != 0
    assert "Unable to establish" in result.stderr
    assert power_b.calls == [] and power_b.on


def test_silent_bmc_makes_ipmitool_time_out(bmcs) -> None:
    server, _, _ = bmcs
    server.set_silent(BMC_A, True)
    started = time.monotonic()
    result = ipmitool(BMC_A, "chassis", "power", "status", timeout_s=1, retries=1)
    elapsed = time.monotonic() - started
    assert result.returncode != 0
    assert elapsed < 15
    server.set_silent(BMC_A, False)
    assert ipmitool(BMC_A, "chassis", "power", "status").returncode == 0


def test_failing_power_action_is_an_ipmi_error_not_a_dead_bmc() -> None:
    power = FailingPower(on=True)
    with start_bmcs([BMCSpec(BMC_A, power)]):
        assert ipmitool(BMC_A, "chassis", "power", "off").returncode != 0
        status = ipmitool(BMC_A, "chassis", "power", "status")
        assert status.stdout.strip() == "Chassis Power is on"


def test_stopped_bmc_stops_answering_and_address_can_be_reused() -> None:
    server = start_bmcs([BMCSpec(BMC_A, SimplePower())])
    assert ipmitool(BMC_A, "chassis", "power", "status").returncode == 0
    server.stop()
    assert ipmitool(BMC_A, "chassis", "power", "status", timeout_s=1, retries=1).returncode != 0
    # Restarting on the same address right away must work every time: a socket
    # closed while pyghmi's select() watched it used to stay bound for minutes.
    for attempt in range(5):
        with start_bmcs([BMCSpec(BMC_A, SimplePower(on=attempt % 2 == 1))]):
            expected = "on" if attempt % 2 == 1 else "off"
            status = ipmitool(BMC_A, "chassis", "power", "status")
            assert status.stdout.strip() == f"Chassis Power is {expected}"


def test_binding_a_missing_address_is_a_clear_error() -> None:
    with pytest.raises(KadeployError, match="192.0.2.77"):
        start_bmcs([BMCSpec("192.0.2.77", SimplePower())])


def test_duplicate_address_is_refused(bmcs) -> None:
    server, _, _ = bmcs
    with pytest.raises(KadeployError, match="already listens"):
        server.add(BMCSpec(BMC_A, SimplePower()))


def test_thirty_two_bmcs_in_one_process_answer_concurrently() -> None:
    powers = [SimplePower() for _ in range(32)]
    addresses = [f"127.0.1.{i + 10}" for i in range(32)]
    before = threading.active_count()
    with start_bmcs(BMCSpec(a, p) for a, p in zip(addresses, powers, strict=True)):
        # No thread per BMC: pyghmi's I/O thread and our dispatch thread at most.
        assert threading.active_count() - before <= 2
        procs = [subprocess.Popen(
            ["ipmitool", "-I", "lanplus", "-H", a, "-U", "ADMIN", "-P", "ADMIN",
             "-N", "5", "-R", "6", "chassis", "power", "on"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for a in addresses]
        for proc in procs:
            proc.wait(timeout=120)
            assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    assert all(p.calls == ["on"] for p in powers)


class AsyncSupervisor:
    """Stands for the testbed's node supervisor: async actions in the event loop."""

    def __init__(self) -> None:
        self.on = False
        self.loop_thread: list[bool] = []

    async def power_on(self) -> None:
        self.loop_thread.append(threading.current_thread() is threading.main_thread())
        await asyncio.sleep(0.05)
        self.on = True

    def power_off(self) -> None:
        self.on = False

    def power_cycle(self) -> None:
        self.on = True

    def power_reset(self) -> None:
        pass

    def power_state(self) -> bool:
        return self.on


async def ipmitool_async(host: str, *command: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "ipmitool", "-I", "lanplus", "-H", host, "-U", "ADMIN", "-P", "ADMIN",
        "-N", "2", "-R", "4", *command,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
    return proc.returncode or 0, out.decode().strip()


async def test_loop_power_runs_actions_in_the_event_loop_before_answering() -> None:
    supervisor = AsyncSupervisor()
    power = LoopPower(asyncio.get_running_loop(), supervisor)
    with start_bmcs([BMCSpec(BMC_A, power)]):
        assert await ipmitool_async(BMC_A, "chassis", "power", "status") == \
            (0, "Chassis Power is off")
        code, _ = await ipmitool_async(BMC_A, "chassis", "power", "on")
        assert code == 0
        # The action ran in the loop (main thread) and had finished when ipmitool returned.
        assert supervisor.loop_thread == [True]
        assert await ipmitool_async(BMC_A, "chassis", "power", "status") == \
            (0, "Chassis Power is on")


class HangingSupervisor(AsyncSupervisor):
    async def power_on(self) -> None:
        await asyncio.sleep(3600)


async def test_loop_power_action_that_hangs_is_an_ipmi_error_within_its_timeout() -> None:
    supervisor = HangingSupervisor()
    power = LoopPower(asyncio.get_running_loop(), supervisor, timeout=0.5)
    with start_bmcs([BMCSpec(BMC_A, power)]):
        code, _ = await ipmitool_async(BMC_A, "chassis", "power", "on")
        assert code != 0
        # The hung action was cancelled and the BMC still answers.
        assert await ipmitool_async(BMC_A, "chassis", "power", "status") == \
            (0, "Chassis Power is off")


# -- sessions: bounded as on a real BMC (issue 20, point 7) ----------------------------------

def hold_session(host: str) -> subprocess.Popen[str]:
    """An `ipmitool shell` that has opened its session (first command answered) and keeps it."""
    holder = subprocess.Popen(["ipmitool", "-I", "lanplus", "-H", host, "-U", "ADMIN", "-P", "ADMIN", "shell"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert holder.stdin is not None and holder.stdout is not None
    holder.stdin.write("chassis power status\n")
    holder.stdin.flush()
    line = holder.stdout.readline()
    while line and "Chassis Power is" not in line:
        line = holder.stdout.readline()
    assert "Chassis Power is" in line, "the holder could not open its session"
    return holder


def release(holder: subprocess.Popen[str]) -> None:
    """`exit`: ipmitool sends Close Session."""
    assert holder.stdin is not None
    holder.stdin.write("exit\n")
    holder.stdin.close()
    holder.wait(timeout=10)


def test_a_full_bmc_answers_insufficient_resources_until_a_session_is_closed() -> None:
    power = SimplePower()
    with start_bmcs([BMCSpec(BMC_A, power, max_sessions=2)]) as server:
        bmc = server.bmcs[BMC_A]
        holders = [hold_session(BMC_A), hold_session(BMC_A)]
        try:
            assert len(bmc.sessions) == 2
            refused = ipmitool(BMC_A, "chassis", "power", "on", retries=1, timeout_s=1)
            assert refused.returncode != 0
            assert "Error in open session response message : insufficient resources for session" in refused.stderr
            assert "Unable to establish IPMI v2 / RMCP+ session" in refused.stderr
            assert bmc.refused_sessions == 1 and power.calls == []
            release(holders.pop())
            # Close Session freed the slot (the BMC thread may drop it just after answering ipmitool):
            # seconds, where the session timeout would take 60
            deadline = time.monotonic() + 5
            while len(bmc.sessions) != 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(bmc.sessions) == 1
            on = ipmitool(BMC_A, "chassis", "power", "on")
            assert on.returncode == 0, on.stderr
            assert power.calls == ["on"]
        finally:
            for holder in holders:
                release(holder)
        assert len(bmc.sessions) == 0


def test_an_abandoned_session_holds_its_slot_until_it_times_out() -> None:
    with start_bmcs([BMCSpec(BMC_A, SimplePower(), max_sessions=1, session_timeout=2.0)]) as server:
        holder = hold_session(BMC_A)
        holder.kill()  # no Close Session: the BMC only sees silence
        holder.wait()
        started = time.monotonic()
        assert "insufficient resources" in ipmitool(BMC_A, "chassis", "power", "status", retries=1,
                                                    timeout_s=1).stderr
        while time.monotonic() - started < 2.5:
            time.sleep(0.2)
        status = ipmitool(BMC_A, "chassis", "power", "status")
        assert status.returncode == 0, status.stderr
        assert len(server.bmcs[BMC_A].sessions) == 0


def _open_session_request(console_id: bytes, tag: int = 1) -> bytes:
    payload = bytes([tag, 4, 0, 0]) + console_id + bytes([0, 0, 0, 8, 1, 0, 0, 0, 1, 0, 0, 8, 1, 0, 0, 0,
                                                          2, 0, 0, 8, 1, 0, 0, 0])
    return bytes([6, 0, 0xFF, 7, 6, 0x10]) + bytes(8) + len(payload).to_bytes(2, "little") + payload


def test_a_retransmitted_open_session_request_gets_the_same_session() -> None:
    """A client that timed out resends its request; new keys for it would break the handshake."""
    import socket

    with start_bmcs([BMCSpec(BMC_A, SimplePower(), max_sessions=1)]) as server:
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.settimeout(5)
        try:
            answers = []
            for _ in range(2):
                client.sendto(_open_session_request(b"\x11\x22\x33\x44"), (BMC_A, 623))
                answers.append(client.recvfrom(200)[0])
            assert answers[0][17] == 0 and answers[1][17] == 0  # status: no error
            assert answers[0][24:28] == answers[1][24:28]  # the same managed session ID
            assert len(server.bmcs[BMC_A].sessions) == 1
            other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            other.settimeout(5)
            try:
                other.sendto(_open_session_request(b"\x55\x66\x77\x88", tag=9), (BMC_A, 623))
                refused = other.recvfrom(200)[0]
            finally:
                other.close()
            assert refused[5] == 0x11 and refused[16] == 9 and refused[17] == 0x01  # insufficient resources
            assert refused[20:24] == b"\x55\x66\x77\x88"
        finally:
            client.close()


def test_reading_a_bmc_socket_never_blocks_whatever_its_mode() -> None:
    """pyghmi's I/O thread read with setblocking(0) + recvfrom while a send in the dispatch thread
    set the socket back to blocking: the I/O thread then blocked on one BMC's socket and every BMC
    of the process went silent for seconds. The socket below is set back to blocking the moment
    non-blocking mode is asked for, as that send did; a read must still return at once."""
    import socket

    import pyghmi.ipmi.private.session as ipmi_session

    class SetBackToBlocking(socket.socket):
        def setblocking(self, flag: bool) -> None:
            super().setblocking(True)

    sock = SetBackToBlocking(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    result: list[object] = []
    reader = threading.Thread(target=lambda: result.append(ipmi_session._io_recvfrom(sock, 100)), daemon=True)
    reader.start()
    reader.join(2)
    blocked = reader.is_alive()
    if blocked:  # unblock the reader before failing
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", sock.getsockname())
        reader.join(2)
    sock.close()
    assert not blocked and result == [None]
