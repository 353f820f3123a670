"""testbed/qemu room: one QEMU virtual machine per node: its command line, and its state over QMP.

A VM's process is owned by its BMC (`bmcsim`: OpenIPMI's ipmi_sim runs the
start script on power on, QEMU exits on power off), so a powered-off node has
no QEMU at all. The VM's NIC is an e1000 with QEMU's iPXE ROM on a tap of the
testbed bridge, its disk a sparse raw file on the IDE bus (`/dev/sda`, BIOS
disk hd0), its BMC link QEMU's `ipmi-bmc-extern` (with a KCS interface the
guest can use).

Console: the first serial port is a TCP server on the BMC's address
(`bmcsim.SOL_PORT`) that the node's ipmi_sim connects to as its Serial-over-LAN
device, so `ipmitool ... sol activate` (the cluster's console command) reaches
it, as on a real server. A QEMU chardev takes one client, so there is no second
socket beside it; the same chardev's `logfile` keeps what the guest writes in
`run/<node>/console.log` (for the tests' boot-time checks), written whether or
not the BMC is connected. SeaBIOS redirects the firmware's screen (its own and
the iPXE ROM's messages) to that serial port (`etc/sercon-port`), as a real
server's BIOS console redirection does, so the console shows the boot from power on.
`QMPClient` is a small synchronous client: `status` asks each VM its run state.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

from kadeploy.errors import ErrorCode, KadeployError
from kadeploy_testbed.layout import NodeSpec
from kadeploy_testbed.qemu.bmcsim import SOL_PORT, VM_PORT, sol_chardev
from kadeploy_testbed.qemu.layout import (
    MEMORY_MIB,
    console_log,
    disk_path,
    qmp_socket,
    run_dir,
    tap_name,
)

QMP_TIMEOUT = 5.0
COM1 = 0x3F8


def sercon_port_file(directory: Path, node: NodeSpec) -> Path:
    """SeaBIOS's `etc/sercon-port` (the I/O port of its serial console, 8 bytes little-endian): COM1."""
    path = run_dir(directory, node) / "sercon-port"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(COM1.to_bytes(8, "little"))
    return path


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
    """The QEMU command line of `node`: network boot first, serial console for the BMC's SOL, BMC link.

    No `-S`/`-no-shutdown`: the process is the power state (the BMC starts it on power on).
    Writes the node's `sercon-port` file, which the command line names."""
    if accel == "auto":
        accel = "kvm" if kvm_usable() else "tcg"
    run = run_dir(directory, node)
    cpu = "host" if accel == "kvm" else "max"
    # TCG's translation cache defaults to 1 GiB per VM; 256 MiB is plenty for one vCPU
    accel_option = "kvm" if accel == "kvm" else "tcg,tb-size=256"
    return [
        "qemu-system-x86_64", "-name", node.short_name, "-machine", "pc", "-accel", accel_option, "-cpu", cpu,
        "-m", str(MEMORY_MIB), "-smp", "1", "-nodefaults", "-display", "none",
        "-netdev", f"tap,id=net0,ifname={tap_name(node)},script=no,downscript=no",
        "-device", f"e1000,netdev=net0,mac={node.mac},bootindex=1",
        "-drive", f"file={disk_path(directory, node)},format=raw,if=none,id=disk0,cache=unsafe,discard=unmap",
        "-device", "ide-hd,drive=disk0,bus=ide.0,bootindex=2",
        *sol_chardev(node.bmc_ip, SOL_PORT, logfile=console_log(directory, node)),
        # QEMU warns that the name lacks "opt/": SeaBIOS reads exactly this one
        "-fw_cfg", f"name=etc/sercon-port,file={sercon_port_file(directory, node)}",
        "-chardev", f"socket,id=ipmi0,host={node.bmc_ip},port={VM_PORT},reconnect=2",
        "-device", "ipmi-bmc-extern,id=bmc0,chardev=ipmi0",
        "-device", "isa-ipmi-kcs,bmc=bmc0",
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


def vm_status(directory: Path, node: NodeSpec) -> str:
    """`off` when the node's QEMU is not running, else its QMP run state (`running`, `paused`...)."""
    try:
        pid = int((run_dir(directory, node) / "qemu.pid").read_text().strip())
        alive = str(directory) in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (OSError, ValueError):
        alive = False
    if not alive:
        return "off"
    try:
        return str(QMPClient(qmp_socket(directory, node)).execute("query-status")["status"])
    except KadeployError:
        return "starting"  # the process exists, QMP is not up yet (or it is exiting)
