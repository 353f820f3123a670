"""testbed/qemu room: one QEMU virtual machine per node, and its power through QMP.

Why QMP: the node's BMC (pyghmi, `kadeploy.testbed.bmc`) must act on a real
machine. A VM is started once, paused (`-S`, i.e. powered off) with
`-no-shutdown` (a guest poweroff leaves it stopped, not gone); power on is
`system_reset` + `cont` (the firmware starts over: PXE ROM, then disk), off is
`stop`, reset is `system_reset`. The VM's NIC is an e1000 with QEMU's iPXE ROM
on a tap of the testbed bridge, its disk a sparse raw file on the IDE bus
(`/dev/sda`, BIOS disk hd0), its console the serial port on a Unix socket
(logged to a file). `QMPClient` is a small synchronous client: BMC callbacks run
in pyghmi's dispatch thread and each QMP command takes milliseconds.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from kadeploy.errors import ErrorCode, KadeployError
from kadeploy.testbed.layout import NodeSpec
from kadeploy.testbed.qemu.layout import (
    MEMORY_MIB,
    console_log,
    console_socket,
    disk_path,
    qmp_socket,
    run_dir,
    tap_name,
)

QMP_TIMEOUT = 5.0
RUNNING_STATES = ("running", "debug", "inmigrate", "postmigrate", "finish-migrate", "restore-vm", "save-vm")


def kvm_usable() -> bool:
    """True on a hardware KVM host (kvm_intel/kvm_amd); else QEMU emulates (TCG).

    Why not just /dev/kvm: inside a VM with a paravirtual KVM (kvm_pvm) the device
    opens but QEMU aborts setting MSRs, so only the hardware modules count.
    """
    if not any(Path("/sys/module", name).exists() for name in ("kvm_intel", "kvm_amd")):
        return False
    try:
        fd = os.open("/dev/kvm", os.O_RDWR)
    except OSError:
        return False
    os.close(fd)
    return True


def qemu_command(directory: Path, node: NodeSpec, accel: str = "auto") -> list[str]:
    """The QEMU command line of `node`: paused, network boot first, serial console on a socket."""
    if accel == "auto":
        accel = "kvm" if kvm_usable() else "tcg"
    run = run_dir(directory, node)
    cpu = "host" if accel == "kvm" else "max"
    # TCG's translation cache defaults to 1 GiB per VM; 256 MiB is plenty for one vCPU
    accel_option = "kvm" if accel == "kvm" else "tcg,tb-size=256"
    return [
        "qemu-system-x86_64", "-name", node.short_name, "-machine", "pc", "-accel", accel_option, "-cpu", cpu,
        "-m", str(MEMORY_MIB), "-smp", "1", "-nodefaults", "-display", "none", "-S", "-no-shutdown",
        "-netdev", f"tap,id=net0,ifname={tap_name(node)},script=no,downscript=no",
        "-device", f"e1000,netdev=net0,mac={node.mac},bootindex=1",
        "-drive", f"file={disk_path(directory, node)},format=raw,if=none,id=disk0,cache=unsafe,discard=unmap",
        "-device", "ide-hd,drive=disk0,bus=ide.0,bootindex=2",
        "-chardev", (f"socket,id=serial0,path={console_socket(directory, node)},server=on,wait=off,"
                     f"logfile={console_log(directory, node)},logappend=on"),
        "-serial", "chardev:serial0",
        "-qmp", f"unix:{qmp_socket(directory, node)},server=on,wait=off",
        "-pidfile", str(run / "qemu.pid"),
    ]


class QMPClient:
    """Synchronous QMP over a Unix socket: one connection per command, every wait bounded."""

    def __init__(self, path: Path, timeout: float = QMP_TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout

    def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """Run one QMP command; QEMU errors and an unreachable socket are KadeployError."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(str(self.path))
                reader = sock.makefile("rb")
                self._read_reply(reader, greeting=True)
                sock.sendall(b'{"execute": "qmp_capabilities"}\n')
                self._read_reply(reader)
                request: dict[str, Any] = {"execute": command}
                if arguments:
                    request["arguments"] = arguments
                sock.sendall(json.dumps(request).encode() + b"\n")
                return self._read_reply(reader)
        except (TimeoutError, OSError) as exc:
            raise KadeployError(ErrorCode.EXECUTE_ERROR, f"QMP {self.path}: {command}: {exc}") from None

    def _read_reply(self, reader: Any, greeting: bool = False) -> Any:
        while True:
            line = reader.readline()
            if not line:
                raise OSError("connection closed by QEMU")
            message = json.loads(line)
            if greeting and "QMP" in message:
                return message
            if "return" in message:
                return message["return"]
            if "error" in message:
                raise KadeployError(ErrorCode.EXECUTE_ERROR,
                                    f"QMP {self.path}: {message['error'].get('desc', message['error'])}")
            # asynchronous events (RESET, STOP...) are skipped


class QemuPower:
    """`kadeploy.testbed.bmc.PowerControl` of one VM, through its QMP socket."""

    def __init__(self, qmp_path: Path) -> None:
        self.qmp = QMPClient(qmp_path)
        self._lock = threading.Lock()

    def status(self) -> str:
        return str(self.qmp.execute("query-status")["status"])

    def power_state(self) -> bool:
        return self.status() in RUNNING_STATES

    def power_on(self) -> None:
        with self._lock:
            if not self.power_state():
                self.qmp.execute("system_reset")
                self.qmp.execute("cont")

    def power_off(self) -> None:
        with self._lock:
            if self.power_state():
                self.qmp.execute("stop")

    def power_cycle(self) -> None:
        with self._lock:
            self.qmp.execute("stop")
            self.qmp.execute("system_reset")
            self.qmp.execute("cont")

    def power_reset(self) -> None:
        with self._lock:
            self.qmp.execute("system_reset")
            if not self.power_state():  # a reset of a machine in guest-poweroff state starts it
                self.qmp.execute("cont")


def wait_for_socket(path: Path, timeout: float) -> None:
    """Wait until QEMU created `path` (its QMP socket), or raise naming it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return
        time.sleep(0.1)
    raise KadeployError(ErrorCode.EXECUTE_ERROR, f"QEMU did not create {path} within {timeout:.0f}s")
