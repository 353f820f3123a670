"""Testbed BMCs: IPMI v2.0 RMCP+ (lanplus) endpoints, one per node, on UDP 623.

Room: testbed. Imports only the standard library and pyghmi.

Why: Kadeploy's reboot and power commands on the testbed are the same
`ipmitool -I lanplus -H <bmc> -U <user> -P <password> chassis power ...` lines
as on Grid'5000, so each node gets a BMC that speaks real IPMI on an address
of its own, and the power actions reach the node supervisor.

Public API::

    class PowerControl(Protocol):          # implemented by the node supervisor
        def power_on(self) -> None
        def power_off(self) -> None
        def power_cycle(self) -> None      # off then on
        def power_reset(self) -> None      # hard reset (no power loss)
        def power_state(self) -> bool      # True when powered on
    @dataclass BMCSpec(address: str, power: PowerControl, user: str = "ADMIN",
                       password: str = "ADMIN", port: int = 623, name: str = "",
                       max_sessions: int = 4, session_timeout: float = 60.0)
    class LoopPower(loop, target: PowerControl, timeout=5.0)   # PowerControl that runs
        # target's (sync or async) methods inside an asyncio loop and waits for them
    class SimplePower(on=False)            # records calls; for tests
    start_bmcs(specs: Iterable[BMCSpec]) -> BMCServer
    class BMCServer:
        bmcs: dict[str, TestbedBMC]        # address -> BMC
        def add(self, spec: BMCSpec) -> TestbedBMC
        def remove(self, address: str) -> None
        def set_silent(self, address: str, silent: bool) -> None   # fault: BMC stops answering
        def stop(self) -> None             # closes every socket; idempotent

Threads: pyghmi runs one shared I/O thread (a select() over every BMC socket,
started by pyghmi itself) and this module runs one dispatch thread that drives
pyghmi's session loop for all BMCs of the process; there is no thread per BMC.
**PowerControl callbacks run in that dispatch thread**: they must be quick and
thread-safe. An asyncio supervisor wraps itself in `LoopPower(loop, supervisor)`,
which runs each action inside the loop and waits for it (5 s at most), so that
a `power status` right after `power on` sees the new state; the supervisor's
methods must only start things (a task), not wait for the boot. A callback
that raises or times out makes the BMC answer with an IPMI error completion
code (ipmitool then fails) and never kills the dispatch thread.

Sessions as a real BMC keeps them: at most `max_sessions` RMCP+ sessions at
once per BMC (4 by default, as common BMCs); one more Open Session Request is
answered with RMCP+ status 0x01, which ipmitool prints as "Error in open session
response message : insufficient resources for session". A slot is freed by
Close Session (ipmitool always sends it), after `session_timeout` seconds
without a packet, or when its client's address starts a new conversation. A
retransmitted Open Session Request or RAKP 1 (a client that timed out waiting)
gets the same answer again instead of new session keys, which would break the
handshake.

Two pyghmi behaviours are corrected here because they made every BMC of the
process fail at once under load ("Unable to establish IPMI v2 / RMCP+ session"):
pyghmi's I/O thread reads with `setblocking(0)` then `recvfrom()`, while the
dispatch thread's `sendto()` sets the same socket back to blocking; when the two
interleave, the I/O thread blocks in `recvfrom()` on one BMC's socket and no BMC
of the process answers until a packet happens to arrive there (seconds, often
the next command). Reads here pass MSG_DONTWAIT, whatever the socket's mode.
And pyghmi answered a retransmitted handshake message with new random values.

Sockets are bound in the network namespace of the calling process, so the
BMC addresses must exist there (the testbed puts them on the host side of its
bridge). Port 623 needs root (or CAP_NET_BIND_SERVICE).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import inspect
import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyghmi.ipmi.bmc as pyghmi_bmc
import pyghmi.ipmi.private.constants as ipmi_constants
import pyghmi.ipmi.private.serversession as ipmi_serversession
import pyghmi.ipmi.private.session as ipmi_session

from kadeploy.errors import ErrorCode, KadeployError

log = logging.getLogger("kadeploy_testbed.bmc")

IPMI_PORT = 623
# IPMI completion codes answered when a power action fails in the supervisor.
CC_UNSPECIFIED_ERROR = 0xFF
# How long the dispatch thread blocks in pyghmi's loop before checking for stop.
DISPATCH_POLL_SECONDS = 0.5
JOIN_TIMEOUT_SECONDS = 5.0
# Longest a power action may take in the supervisor's loop before the BMC answers an error.
ACTION_TIMEOUT_SECONDS = 5.0
# Concurrent RMCP+ sessions a BMC accepts, and seconds of silence after which one is dropped.
DEFAULT_MAX_SESSIONS = 4
DEFAULT_SESSION_TIMEOUT = 60.0
# RMCP+ status code of an Open Session Response (IPMI 2.0, table 13-15).
RMCP_STATUS_INSUFFICIENT_RESOURCES = 0x01
_OPEN_SESSION_REQUEST = 0x10
_OPEN_SESSION_RESPONSE = 0x11


def _recvfrom_without_blocking(mysocket: Any, size: int) -> Any:
    """pyghmi's `_io_recvfrom` without the race on the socket's blocking mode (see above)."""
    try:
        return mysocket.recvfrom(size, socket.MSG_DONTWAIT)
    except OSError:
        return None


ipmi_session._io_recvfrom = _recvfrom_without_blocking


class PowerControl(Protocol):
    """What a BMC acts on: the node's power. Called from the BMC dispatch thread."""

    def power_on(self) -> None: ...
    def power_off(self) -> None: ...
    def power_cycle(self) -> None: ...
    def power_reset(self) -> None: ...
    def power_state(self) -> bool: ...


@dataclass
class BMCSpec:
    """One BMC to start: where it listens, its credentials and the node it powers."""

    address: str
    power: PowerControl
    user: str = "ADMIN"
    password: str = "ADMIN"
    port: int = IPMI_PORT
    name: str = ""
    max_sessions: int = DEFAULT_MAX_SESSIONS
    session_timeout: float = DEFAULT_SESSION_TIMEOUT


class TestbedSession(ipmi_serversession.ServerSession):
    """One RMCP+ session of a TestbedBMC: holds a slot until closed, replaced or idle too long.

    Runs in the dispatch thread only, as every BMC callback.
    """

    bmc: TestbedBMC

    def __init__(self, authdata: Any, kg: Any, clientaddr: Any, netsocket: Any, request: Any,
                 bmcuuid: Any, bmc: TestbedBMC) -> None:
        self.last_seen = time.monotonic()
        self._open_response: bytearray | None = None
        self._rakp2: bytearray | None = None
        super().__init__(authdata, kg, clientaddr, netsocket, request, bmcuuid, bmc)

    def create_open_session_response(self, request: Any) -> Any:
        # a retransmitted request (same console session ID) gets the same answer
        if self._open_response is not None and bytes(request[4:8]) == bytes(self.clientsessionid):
            return self._open_response
        self._rakp2 = None
        self._open_response = super().create_open_session_response(request)
        return self._open_response

    def _got_rakp1(self, data: Any) -> None:
        if self._rakp2 is not None and bytes(data[8:24]) == bytes(self.Rm):
            self.send_payload(self._rakp2, ipmi_constants.payload_types["rakp2"], retry=False)
            return
        super()._got_rakp1(data)

    def _got_rakp3(self, data: Any) -> None:
        if self._rakp2 is None:  # no RAKP 2 was sent (unknown user): nothing to check it against
            return
        super()._got_rakp3(data)

    def send_payload(self, payload: Any = (), payload_type: Any = None, retry: bool = True,
                     delay_xmit: Any = None, needskeepalive: bool = False, timeout: Any = None) -> Any:
        if payload_type == ipmi_constants.payload_types["rakp2"]:
            self._rakp2 = bytearray(payload)
        return super().send_payload(payload=payload, payload_type=payload_type, retry=retry,
                                    delay_xmit=delay_xmit, needskeepalive=needskeepalive, timeout=timeout)

    def _handle_ipmi_packet(self, data: Any, sockaddr: Any = None, qent: Any = None) -> Any:
        self.last_seen = time.monotonic()
        return super()._handle_ipmi_packet(data, sockaddr=sockaddr, qent=qent)

    def close_server_session(self) -> None:
        """Close Session: the slot is free at once."""
        self.bmc.drop_session(self)

    def routed_here(self) -> bool:
        """Whether pyghmi still sends this client's packets here (a new client on the same
        address and port replaces the session)."""
        return ipmi_session.Session.bmc_handlers.get(self.sockaddr, {}).get(self.bmc.port) is self


class TestbedBMC(pyghmi_bmc.Bmc):
    """A pyghmi BMC whose chassis commands go to a PowerControl.

    `silent` emulates a hung BMC: every packet is dropped, so clients time out.
    """

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, spec: BMCSpec) -> None:
        self.spec = spec
        self.silent = False
        self.boot_device = "default"
        self.sessions: set[TestbedSession] = set()
        self.refused_sessions = 0  # Open Session Requests answered "insufficient resources"
        super().__init__({spec.user: spec.password}, port=spec.port, address=spec.address,
                         bmcuuid=uuid.uuid5(uuid.NAMESPACE_DNS, spec.name or spec.address))

    # -- fault injection: drop what arrives while silent ----------------------------------

    def sessionless_data(self, data: Any, sockaddr: Any) -> None:
        if self.silent:
            return
        packet = bytearray(data)
        if (len(packet) >= 24 and packet[0] == 6 and packet[2:4] == b"\xff\x07" and packet[4] == 6
                and packet[5] & 0x3F == _OPEN_SESSION_REQUEST):
            self._open_session(packet, sockaddr)
            return
        super().sessionless_data(data, sockaddr)

    # -- sessions: a bounded table, as on a real BMC -------------------------------------

    def _open_session(self, packet: bytearray, sockaddr: Any) -> None:
        current = ipmi_session.Session.bmc_handlers.get(sockaddr, {}).get(self.port)
        if isinstance(current, TestbedSession) and current in self.sessions:
            # queued before its first copy opened the session: a retransmission, or a new
            # conversation from the same address and port (the session then starts over)
            current.last_seen = time.monotonic()
            current._got_rmcp_openrequest(packet[16:])
            return
        self._expire_sessions()
        if len(self.sessions) >= self.spec.max_sessions:
            self.refused_sessions += 1
            log.info("BMC %s: no session slot for %s (%d in use)", self.spec.name or self.spec.address,
                     sockaddr[0], len(self.sessions))
            self._refuse_session(packet[16:], sockaddr)
            return
        session = TestbedSession(self.authdata, self.kg, sockaddr, self.serversocket, packet[16:], self.uuid,
                                 bmc=self)
        self.sessions.add(session)

    def _expire_sessions(self) -> None:
        now = time.monotonic()
        for session in list(self.sessions):
            if not session.routed_here() or now - session.last_seen > self.spec.session_timeout:
                self.drop_session(session)

    def drop_session(self, session: TestbedSession) -> None:
        self.sessions.discard(session)
        if session.routed_here():
            by_port = ipmi_session.Session.bmc_handlers[session.sockaddr]
            by_port.pop(self.port, None)
            if not by_port:
                ipmi_session.Session.bmc_handlers.pop(session.sockaddr, None)

    def _refuse_session(self, request: bytearray, sockaddr: Any) -> None:
        """An Open Session Response with status "insufficient resources", outside any session."""
        payload = bytearray([request[0], RMCP_STATUS_INSUFFICIENT_RESOURCES, 0, 0]) + request[4:8]
        payload += bytearray(28)  # managed system session ID and the three algorithm payloads, unused
        header = bytearray([6, 0, 0xFF, 7, 6, _OPEN_SESSION_RESPONSE]) + bytearray(8)
        header += bytearray([len(payload) & 0xFF, len(payload) >> 8])
        ipmi_session._io_sendto(self.serversocket, header + payload, sockaddr)

    def handle_raw_request(self, request: Any, session: Any) -> None:
        if self.silent:
            return
        super().handle_raw_request(request, session)

    # -- chassis commands -----------------------------------------------------------------

    def get_power_state(self) -> str:
        try:
            powered = self.spec.power.power_state()
        except Exception:  # answered as "unsupported" instead of a traceback from pyghmi
            log.exception("BMC %s: power_state failed", self.spec.name or self.spec.address)
            raise NotImplementedError from None
        return "on" if powered else "off"

    def _act(self, action: str) -> int:
        try:
            getattr(self.spec.power, action)()
        except Exception:  # the supervisor's bug must not take every BMC down
            log.exception("BMC %s: %s failed", self.spec.name or self.spec.address, action)
            return CC_UNSPECIFIED_ERROR
        return 0

    def power_on(self) -> int:
        return self._act("power_on")

    def power_off(self) -> int:
        return self._act("power_off")

    def power_cycle(self) -> int:
        return self._act("power_cycle")

    def power_reset(self) -> int:
        return self._act("power_reset")

    def power_shutdown(self) -> int:
        # A soft shutdown on a node without ACPI is a power off.
        return self._act("power_off")

    def get_boot_device(self) -> str:
        return self.boot_device

    def set_boot_device(self, bootdevice: str) -> None:
        # Remembered for `chassis bootdev`/`bootparam`; the firmware always PXE boots.
        self.boot_device = bootdevice

    def get_system_guid(self) -> uuid.UUID:
        return self.uuid

    def cold_reset(self) -> int:
        return 0

    # -- teardown ------------------------------------------------------------------------

    def close(self) -> None:
        """Unregister from pyghmi's I/O loop and close the socket."""
        self.sessions.clear()
        sock = self.serversocket
        handlers = ipmi_session.Session.bmc_handlers
        handlers.pop(sock, None)
        # Client sessions of this BMC are keyed by client address; drop ours.
        for client, by_port in list(handlers.items()):
            if not isinstance(by_port, dict):
                continue
            for port, session in list(by_port.items()):
                if getattr(session, "bmc", None) is self:
                    by_port.pop(port, None)
            if not by_port:
                handlers.pop(client, None)
        try:
            ipmi_session.iosockets.remove(sock)
        except ValueError:
            pass
        sock.close()
        # A select() in progress holds a reference to the socket, so the port stays
        # bound until pyghmi's I/O thread loops; wake it and wait for that, so that
        # the address can be bound again right away (a BMC restart after a fault).
        _wake_io_thread_and_wait()


def _wake_io_thread_and_wait(timeout: float = 2.0) -> None:
    """Make pyghmi's I/O thread leave its select() and start a new one.

    The wake-up byte is re-sent every few milliseconds because one sent while the
    thread is between select() and reading its sockets is swallowed unnoticed.
    """
    if not ipmi_session.iosockets or ipmi_session.myself is None:
        return
    before = ipmi_session.selectdeadline
    wake_socket = ipmi_session.iosockets[0]
    wake_address = (ipmi_session.myself, wake_socket.getsockname()[1])
    deadline = time.monotonic() + timeout
    while ipmi_session.selectdeadline == before and time.monotonic() < deadline:
        try:
            wake_socket.sendto(b"\x01", wake_address)
        except OSError:
            return
        time.sleep(0.01)


class _Dispatcher:
    """The one thread that runs pyghmi's session loop for every BMC of the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> None:
        with self._lock:
            self._users += 1
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, name="testbed-bmc-dispatch",
                                                daemon=True)
                self._thread.start()

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users > 0 or self._thread is None:
                return
            self._stop.set()
            thread, self._thread = self._thread, None
        thread.join(JOIN_TIMEOUT_SECONDS)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ipmi_session.Session.wait_for_rsp(timeout=DISPATCH_POLL_SECONDS)
            except Exception:  # a malformed packet must not stop every BMC
                log.exception("BMC dispatch loop error")


_dispatcher = _Dispatcher()
_wakeup_lock = threading.Lock()


def _ensure_wakeup_socket() -> None:
    """Make pyghmi's first socket a loopback-reachable one before any BMC socket.

    Why: pyghmi wakes its I/O thread by sending a byte to its *first* socket
    through loopback; if that first socket were a BMC bound to a bridge address
    the wake-up would never arrive (or fail), delaying every answer.
    """
    with _wakeup_lock:
        if not ipmi_session.iosockets:
            ipmi_session.Session._assignsocket()


class BMCServer:
    """A set of BMCs served from this process; `stop()` closes them all."""

    def __init__(self) -> None:
        self.bmcs: dict[str, TestbedBMC] = {}
        self._lock = threading.Lock()
        self._stopped = False
        _ensure_wakeup_socket()
        _dispatcher.acquire()

    def add(self, spec: BMCSpec) -> TestbedBMC:
        """Start one BMC; raises KadeployError if its address cannot be bound."""
        with self._lock:
            if self._stopped:
                raise KadeployError(ErrorCode.EXECUTE_ERROR, "BMC server already stopped")
            if spec.address in self.bmcs:
                raise KadeployError(ErrorCode.EXISTING_ELEMENT,
                                    f"a BMC already listens on {spec.address}")
            try:
                bmc = TestbedBMC(spec)
            except OSError as exc:
                hint = ""
                if exc.errno == errno.EADDRNOTAVAIL:
                    hint = " (the address is not configured in this network namespace)"
                elif exc.errno == errno.EACCES:
                    hint = " (binding port 623 needs root)"
                raise KadeployError(
                    ErrorCode.EXECUTE_ERROR,
                    f"cannot start the BMC of {spec.name or spec.address} on "
                    f"{spec.address}:{spec.port}: {exc.strerror}{hint}",
                ) from None
            self.bmcs[spec.address] = bmc
        # pyghmi's I/O thread only watches the new socket from its next select().
        _wake_io_thread_and_wait()
        return bmc

    def remove(self, address: str) -> None:
        """Stop the BMC listening on `address` (no error if there is none)."""
        with self._lock:
            bmc = self.bmcs.pop(address, None)
        if bmc is not None:
            bmc.close()

    def set_silent(self, address: str, silent: bool) -> None:
        """Fault injection: a silent BMC drops every packet, as a hung BMC would."""
        try:
            self.bmcs[address].silent = silent
        except KeyError:
            raise KadeployError(ErrorCode.INVALID_NODELIST, f"no BMC listens on {address}") from None

    def stop(self) -> None:
        """Close every BMC socket and stop the dispatch thread if no other server uses it."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            bmcs, self.bmcs = list(self.bmcs.values()), {}
        for bmc in bmcs:
            bmc.close()
        _dispatcher.release()

    def __enter__(self) -> BMCServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_bmcs(specs: Iterable[BMCSpec]) -> BMCServer:
    """Start one BMC per spec; on any failure the ones already started are stopped."""
    server = BMCServer()
    try:
        for spec in specs:
            server.add(spec)
    except BaseException:
        server.stop()
        raise
    return server


class LoopPower:
    """A PowerControl that runs each action in an asyncio loop and waits for it.

    Why: the node supervisor lives in the testbed's event loop while BMC callbacks
    run in the dispatch thread. Waiting for the action (bounded by `timeout`)
    means a `chassis power status` right after `power on` already sees the new
    state, as on a real BMC. `target` methods may be plain or `async def`; they
    must return quickly (start the boot, do not wait for it).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, target: PowerControl,
                 timeout: float = ACTION_TIMEOUT_SECONDS) -> None:
        self._loop = loop
        self._target = target
        self._timeout = timeout

    def _call(self, action: str) -> Any:
        method = getattr(self._target, action)

        async def run() -> Any:
            result = method()
            if inspect.isawaitable(result):
                result = await result
            return result

        future = asyncio.run_coroutine_threadsafe(run(), self._loop)
        try:
            return future.result(self._timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"{action} did not finish within {self._timeout}s") from None

    def power_on(self) -> None:
        self._call("power_on")

    def power_off(self) -> None:
        self._call("power_off")

    def power_cycle(self) -> None:
        self._call("power_cycle")

    def power_reset(self) -> None:
        self._call("power_reset")

    def power_state(self) -> bool:
        return bool(self._call("power_state"))


@dataclass
class SimplePower:
    """A PowerControl that only records state and calls: for tests and `status` demos."""

    on: bool = False
    calls: list[str] = field(default_factory=list)

    def power_on(self) -> None:
        self.calls.append("on")
        self.on = True

    def power_off(self) -> None:
        self.calls.append("off")
        self.on = False

    def power_cycle(self) -> None:
        self.calls.append("cycle")
        self.on = True

    def power_reset(self) -> None:
        self.calls.append("reset")

    def power_state(self) -> bool:
        return self.on


__all__ = ["BMCServer", "BMCSpec", "DEFAULT_MAX_SESSIONS", "IPMI_PORT", "LoopPower", "PowerControl", "SimplePower",
           "TestbedBMC", "start_bmcs"]
