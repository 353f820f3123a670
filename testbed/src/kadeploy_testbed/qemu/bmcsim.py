"""testbed/qemu room: one OpenIPMI `ipmi_sim` BMC per VM, which owns the VM's QEMU process.

Why ipmi_sim: it is a complete BMC (IPMI 1.5/2.0 LAN, RMCP+ sessions, users,
privileges), written by the Linux IPMI maintainer, and it drives QEMU the way
OpenIPMI documents: QEMU's `ipmi-bmc-extern` device connects to the BMC's
serial port (`codec VM`), so the guest also sees a KCS interface. Power follows
hardware semantics:

* on: the BMC runs its `startcmd` (the VM's start script, `run/<node>/start-vm`);
  the firmware starts from scratch: network boot first, then disk;
* off: the BMC asks QEMU through the VM codec, QEMU exits (no `-no-shutdown`);
  after `poweroff_wait` seconds the BMC sends SIGTERM, then SIGKILL;
* cycle: off then on, a new QEMU process; reset: the VM resets in place;
* status: on while the QEMU process exists. A guest `poweroff` ends QEMU, so
  the node is off, as a real machine would be.

Serial over LAN: with `sol_port`, lan.conf gets `sol "tcp:<bmc address>:<port>"`:
ipmi_sim connects to the VM's serial port made a TCP server (`sol_chardev`)
and `ipmitool ... sol activate` reaches the console both ways. ipmi_sim opens
that connection itself, at start and every 10 s after a failure (the VM off),
so a session started right after power on may wait that long for output.
The QEMU testbed's VMs are wired this way (`SOL_PORT`, `vm.qemu_command`), and
their cluster's console command is `ipmitool ... sol activate`.

Each BMC listens on its node's BMC address (`10.202.64.k`, UDP 623) and takes
the VM's connection on the same address (TCP `VM_PORT`), so nothing binds
loopback ports another program may hold. Its persistent state (users, SEL...)
lives in `run/<node>/bmc-state`.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import time
from pathlib import Path

from kadeploy.errors import ErrorCode, KadeployError
from kadeploy_testbed.layout import NodeSpec
from kadeploy_testbed.qemu.layout import run_dir

VM_PORT = 9002
SOL_PORT = 9003      # the VM's serial port (a TCP server of QEMU's), which the BMC's SOL connects to
IPMI_PORT = 623
POWEROFF_WAIT = 10   # seconds for QEMU to exit on a graceful power off before SIGTERM
KILL_WAIT = 5        # then before SIGKILL
SOL_BAUD = 115200
READY_TIMEOUT = 20.0
# The emulated BMC: IPMI 2.0 device 0x20 (manufacturer 0x1291 is OpenIPMI's example id).
EMU_COMMANDS = """mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
sel_enable 0x20 1000 0x0a
mc_enable 0x20
"""
_UNSAFE = set('"\\\n\r')


def sol_chardev(address: str, port: int, logfile: Path | None = None) -> list[str]:
    """QEMU arguments making the VM's first serial port a TCP server that the BMC's SOL connects to.

    With `logfile`, QEMU also appends everything the guest writes on that port to
    the file, whether or not the BMC is connected (input typed through SOL is not logged)."""
    log = f",logfile={logfile},logappend=on" if logfile is not None else ""
    return ["-chardev", f"socket,id=sol0,host={address},port={port},server=on,wait=off{log}",
            "-serial", "chardev:sol0"]


def start_script(directory: Path, node: NodeSpec) -> Path:
    return run_dir(directory, node) / "start-vm"


def lan_conf(directory: Path, node: NodeSpec, user: str, password: str, ipmi_port: int = IPMI_PORT,
             vm_port: int = VM_PORT, sol_port: int | None = None) -> str:
    """The node's ipmi_sim configuration: one LAN channel, the VM serial link, one admin user.

    Why refuse some characters: lan.conf strings are double-quoted without an escape
    syntax, and ipmi_sim runs `startcmd` through a shell."""
    for what, value in (("BMC user", user), ("BMC password", password), ("testbed directory", str(directory))):
        if not value or _UNSAFE & set(value) or any(char.isspace() for char in value):
            raise KadeployError(ErrorCode.INVALID_OPTION, f"{what} {value!r} cannot be written into ipmi_sim's "
                                "lan.conf (no spaces, quotes, backslashes or newlines)")
    guid = f"{node.index:032x}"
    # Serial over LAN: ipmi_sim connects to the VM's serial port, a TCP server of QEMU's (sol_chardev)
    sol = f'  sol "tcp:{node.bmc_ip}:{sol_port}" {SOL_BAUD}\n' if sol_port is not None else ""
    return f"""# ipmi_sim BMC of {node.hostname} (written by kadeploy-testbed up --mode qemu)
name "{node.short_name}-bmc"
set_working_mc 0x20
  startlan 1
    addr {node.bmc_ip} {ipmi_port}
    priv_limit admin
    allowed_auths_callback md5
    allowed_auths_user md5
    allowed_auths_operator md5
    allowed_auths_admin md5
    guid {guid}
  endlan
  serial kcs {node.bmc_ip} {vm_port} codec VM
{sol}  startcmd "{start_script(directory, node)}"
  startnow false
  poweroff_wait {POWEROFF_WAIT}
  kill_wait {KILL_WAIT}
  user 2 true "{user}" "{password}" admin 10 md5
"""


def write_bmc_files(directory: Path, node: NodeSpec, qemu_argv: list[str], user: str, password: str,
                    ipmi_port: int = IPMI_PORT, vm_port: int = VM_PORT, sol_port: int | None = None) -> Path:
    """lan.conf, the emulation commands, the state directory and the VM start script; returns lan.conf."""
    run = run_dir(directory, node)
    (run / "bmc-state").mkdir(parents=True, exist_ok=True)
    script = start_script(directory, node)
    log = shlex.quote(str(run / "qemu.log"))
    script.write_text(f"#!/bin/sh\n# run by the node's BMC (ipmi_sim) on power on\nexec {shlex.join(qemu_argv)} "
                      f">>{log} 2>&1 </dev/null\n")
    script.chmod(0o755)
    (run / "bmc.emu").write_text(EMU_COMMANDS)
    conf = run / "lan.conf"
    conf.write_text(lan_conf(directory, node, user, password, ipmi_port, vm_port, sol_port))
    return conf


def ipmi_sim_command(directory: Path, node: NodeSpec) -> list[str]:
    run = run_dir(directory, node)
    return ["ipmi_sim", "-n", "-c", str(run / "lan.conf"), "-f", str(run / "bmc.emu"), "-s", str(run / "bmc-state")]


def ipmitool_command(address: str, user: str, password: str, *args: str, port: int = IPMI_PORT) -> list[str]:
    """ipmitool over RMCP+ with cipher suite 3 (ipmi_sim answers no cipher-suite query: without -C,
    ipmitool prints a warning on every call before falling back to it)."""
    return ["ipmitool", "-I", "lanplus", "-C", "3", "-N", "1", "-R", "3", "-H", address, "-p", str(port),
            "-U", user, "-P", password, *args]


def _chassis_power(address: str, user: str, password: str, action: str, port: int, timeout: float) -> str:
    """`ipmitool chassis power <action>`: its output, or KadeployError naming the BMC and the action."""
    try:
        result = subprocess.run(ipmitool_command(address, user, password, "chassis", "power", action, port=port),
                                capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise KadeployError(ErrorCode.EXECUTE_ERROR,
                            f"BMC {address}: power {action}: no answer within {timeout:.0f}s") from None
    if result.returncode != 0:
        raise KadeployError(ErrorCode.EXECUTE_ERROR,
                            f"BMC {address}: power {action}: {(result.stderr or result.stdout).strip()}")
    return result.stdout


def power_status(address: str, user: str, password: str, port: int = IPMI_PORT, timeout: float = 15.0) -> str:
    """"on" or "off" as the BMC reports it; KadeployError naming the BMC when it does not answer."""
    words = _chassis_power(address, user, password, "status", port, timeout).split()
    if not words or words[-1] not in ("on", "off"):
        raise KadeployError(ErrorCode.EXECUTE_ERROR, f"BMC {address}: power status: no power status")
    return words[-1]


def power(address: str, user: str, password: str, action: str, port: int = IPMI_PORT, timeout: float = 30.0) -> None:
    """`chassis power <action>` through the BMC, as the cluster's commands do."""
    if action not in ("on", "off", "cycle", "reset"):
        raise KadeployError(ErrorCode.INVALID_OPTION, f"power {action}: expected on, off, cycle or reset")
    _chassis_power(address, user, password, action, port, timeout)


def start_bmc(directory: Path, node: NodeSpec, user: str, password: str, ipmi_port: int = IPMI_PORT) -> int:
    """Start the node's ipmi_sim and wait until it answers over RMCP+; returns its pid."""
    if not shutil.which("ipmi_sim"):
        raise KadeployError(ErrorCode.EXECUTE_ERROR, "QEMU mode needs ipmi_sim (package openipmi)")
    log = run_dir(directory, node) / "bmc.log"
    with log.open("ab") as handle:
        proc = subprocess.Popen(ipmi_sim_command(directory, node), stdin=subprocess.DEVNULL, stdout=handle,
                                stderr=handle, start_new_session=True)
    deadline = time.monotonic() + READY_TIMEOUT
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise KadeployError(ErrorCode.EXECUTE_ERROR, f"ipmi_sim of {node.hostname} exited: "
                                f"{log.read_text(errors='replace')[-800:]}")
        try:
            power_status(node.bmc_ip, user, password, port=ipmi_port, timeout=5.0)
            return proc.pid
        except KadeployError as exc:
            last = str(exc)
            time.sleep(0.3)
    proc.terminate()
    raise KadeployError(ErrorCode.EXECUTE_ERROR, f"ipmi_sim of {node.hostname} not answering after "
                        f"{READY_TIMEOUT:.0f}s: {last} (see {log})")
