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
                       password: str = "ADMIN", port: int = 623, name: str = "")
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
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyghmi.ipmi.bmc as pyghmi_bmc
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


class TestbedBMC(pyghmi_bmc.Bmc):
    """A pyghmi BMC whose chassis commands go to a PowerControl.

    `silent` emulates a hung BMC: every packet is dropped, so clients time out.
    """

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, spec: BMCSpec) -> None:
        self.spec = spec
        self.silent = False
        self.boot_device = "default"
        super().__init__({spec.user: spec.password}, port=spec.port, address=spec.address,
                         bmcuuid=uuid.uuid5(uuid.NAMESPACE_DNS, spec.name or spec.address))

    # -- fault injection: drop what arrives while silent ----------------------------------

    def sessionless_data(self, data: Any, sockaddr: Any) -> None:
        if self.silent:
            return
        super().sessionless_data(data, sockaddr)

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


__all__ = ["BMCServer", "BMCSpec", "IPMI_PORT", "LoopPower", "PowerControl", "SimplePower",
           "TestbedBMC", "start_bmcs"]
