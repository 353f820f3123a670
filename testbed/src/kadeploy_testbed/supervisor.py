"""testbed room: one node's supervisor — power, firmware (PXE) and what it booted.

Why: this is the node's hardware. It is what the BMC powers, what the PXE ROM
of a real node would do on power-on (fetch the profile over TFTP/HTTP, in the
ROM's order, and boot what it names), and where `reboot`/`kexec` inside the
node land. The running system itself is `nodeinit.sh` as PID 1 of the node's
PID namespace: killing it is pulling the plug. A started system shows as
`booting` until its init announces that its services listen, so the state a
node reports (deploy-env, partition N) is true of its ports when reported.
All of it runs on the testbed daemon's event loop; the BMC thread calls the
`PowerControl` methods, which only hand the action to the loop. Imports `layout`, `state`, `fetch`, `profiles`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from kadeploy_testbed.fetch import FetchError, fetch, http_get, tftp_get
from kadeploy_testbed.layout import SERVER_IP, NodeSpec, pxe_candidates
from kadeploy_testbed.profiles import BootChoice, parse_profile, root_partition
from kadeploy_testbed.state import TestbedState, node_run_dir

log = logging.getLogger("kadeploy_testbed.supervisor")

NODEINIT = Path(__file__).with_name("nodeinit.sh")
HTTP_PORT = 8069
PROFILE_DIRECTORY = "pxelinux.cfg"
COMMAND_TIMEOUT = 15.0
HUNG_EXIT = 3
SHUTDOWN_DELAY = 1.0  # seconds between an in-node reboot/poweroff request and the power action
DEPLOY_KERNEL = -1  # kexec target meaning "the deployment kernel", not a partition
BOOTING = "booting"  # phase of a started system whose services do not all listen yet
DETAIL_LIMIT = 200  # characters of a `booted` announcement's text kept as the detail


@dataclass
class TestbedContext:
    """What every supervisor of one testbed shares."""

    __test__ = False

    state: TestbedState
    deploy_kernel_digest: str
    rng: random.Random


async def run_command(*argv: str, timeout: float = COMMAND_TIMEOUT, input: str | None = None) -> tuple[int, str]:
    """Run a host command (argv, no shell) and return (status, output); `input` goes to its stdin."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(input.encode() if input is not None else None), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        return -1, f"{argv[0]}: timeout after {timeout}s"
    return proc.returncode or 0, out.decode(errors="replace")


def read_boot_flag(disk: Path) -> int | None:
    """Number of the MBR primary partition flagged bootable (what LOCALBOOT/sanboot would boot)."""
    try:
        with open(disk, "rb") as handle:
            sector = handle.read(512)
    except OSError:
        return None
    if len(sector) < 512 or sector[510:512] != b"\x55\xaa":
        return None
    for number in range(4):
        if sector[446 + 16 * number] == 0x80:
            return number + 1
    return None


class NodeSupervisor:
    """Power state machine of one node; implements bmc.PowerControl."""

    def __init__(self, node: NodeSpec, context: TestbedContext, loop: asyncio.AbstractEventLoop) -> None:
        self.node = node
        self.context = context
        self.loop = loop
        self.powered = False
        self.phase = "off"
        self.detail = ""
        self.since = time.time()
        # Systems started since the daemon began: lets a caller tell "the boot I asked
        # for" from "the system that was already running" when both show the same state.
        self.boot_count = 0
        self.run_dir = node_run_dir(context.state.path, node)
        self._lock = asyncio.Lock()
        self._boot_task: asyncio.Task[None] | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._fifo_fd: int | None = None
        self._fifo_buffer = b""
        self._booting_into = ""  # the phase a `booting` system enters once nodeinit announces it

    # -- PowerControl (called from the BMC thread) ------------------------------------
    def power_on(self) -> None:
        self._threadsafe("on")

    def power_off(self) -> None:
        self._threadsafe("off")

    def power_cycle(self) -> None:
        self._threadsafe("cycle")

    def power_reset(self) -> None:
        self._threadsafe("reset")

    def power_state(self) -> bool:
        return self.powered

    def _threadsafe(self, action: str) -> None:
        # The BMC expects the chassis to reflect the command at once (ipmitool reads
        # `power status` right after), so the power flag flips here, the rest in the loop.
        if action == "on":
            self.powered = True
        elif action == "off":
            self.powered = False
        self.loop.call_soon_threadsafe(lambda: self.loop.create_task(self.act(action)))

    # -- actions -------------------------------------------------------------------------
    async def act(self, action: str) -> None:
        """Apply a power action: on, off, cycle, reset, reboot, poweroff, kexec."""
        async with self._lock:
            if action == "on":
                if self._boot_task is None:
                    self._start(firmware=True)
                self.powered = True
            elif action in ("off", "poweroff"):
                await self._stop()
            elif action in ("cycle", "reset", "reboot"):
                await self._stop()
                self._start(firmware=True)
            elif action == "kexec":
                partition = self._kexec_partition()
                await self._stop()
                self._start(firmware=False, partition=partition)
            else:
                log.warning("%s: unknown action %r", self.node.hostname, action)

    def _kexec_partition(self) -> int | None:
        """The partition the loaded kernel boots; DEPLOY_KERNEL when it is the deployment kernel."""
        try:
            loaded = (self.run_dir / "ctl" / "kexec").read_text()
        except OSError:
            return None
        lines = loaded.splitlines()
        if len(lines) > 1 and lines[1].strip() == self.context.deploy_kernel_digest:
            return DEPLOY_KERNEL
        return root_partition(lines[0] if lines else "")

    def _start(self, *, firmware: bool, partition: int | None = None) -> None:
        self.powered = True
        (self.run_dir / "ctl" / "kexec").unlink(missing_ok=True)
        self._boot_task = self.loop.create_task(self._boot(firmware, partition))

    async def _stop(self) -> None:
        task, self._boot_task = self._boot_task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:  # pragma: no cover - logged, power off must go on
                log.exception("%s: boot task failed", self.node.hostname)
        await self._kill_node()
        await self._link(False)
        self.powered = False
        self._set_phase("off")
        self.console("Power off")

    async def _kill_node(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            try:
                process.kill()
            except ProcessLookupError:
                pass
            try:
                await asyncio.wait_for(process.wait(), 5)
            except asyncio.TimeoutError:
                log.warning("%s: node process %s did not die", self.node.hostname, process.pid)
        # Whatever is left in the namespace (it should be nothing) goes too.
        status, output = await run_command("ip", "netns", "pids", self.node.netns)
        for word in output.split() if status == 0 else []:
            try:
                os.kill(int(word), signal.SIGKILL)
            except (ValueError, ProcessLookupError):
                pass

    async def _link(self, up: bool) -> None:
        await run_command("ip", "-n", self.node.netns, "link", "set", "eth0", "up" if up else "down")

    def _set_phase(self, phase: str, detail: str = "") -> None:
        self.phase = phase
        self.detail = detail
        self.since = time.time()

    def console(self, text: str) -> None:
        """A line on the node's serial console (what the firmware prints)."""
        try:
            with open(self.run_dir / "console.log", "a") as handle:
                handle.write(f"[{time.strftime('%H:%M:%S')}] {text}\n")
        except OSError:
            pass

    def fault(self, kind: str) -> str | None:
        return self.context.state.fault(self.node, kind)

    @property
    def address(self) -> str:
        """The address DHCP gives the node where it is now: its VLAN address in a VLAN."""
        return self.node.address(self.context.state.vlans.get(str(self.node.index)))

    # -- boot ----------------------------------------------------------------------------
    async def _boot(self, firmware: bool, partition: int | None) -> None:
        self.boot_count += 1
        if firmware:
            self._set_phase("firmware")
            await self._link(True)
            choice = await self._firmware()
        elif partition == DEPLOY_KERNEL:
            self.console("kexec: booting the deployment kernel")
            await self._link(True)
            choice = BootChoice(kind="deploy")
        elif partition is None:
            choice = BootChoice(kind="none", reason="kexec: no root= in the loaded kernel's command line")
        else:
            self.console(f"kexec: booting partition {partition}")
            await self._link(True)
            choice = BootChoice(kind="local", disk=0, partition=partition)
        if choice.kind == "deploy":
            await self._run_node({"KTB_MODE": "deploy"}, "deploy-env")
        elif choice.kind == "local" and choice.disk == 0:
            env = {"KTB_MODE": "partition"}
            if choice.partition is not None:
                env["KTB_PART"] = str(choice.partition)
            await self._run_node(env, "partition")
        else:
            await self._hang(choice.reason)

    async def _hang(self, reason: str) -> None:
        self.console(f"Boot failed: {reason}. System halted.")
        await self._link(False)
        self._set_phase("hung", reason)

    async def _firmware(self) -> BootChoice:
        """The PXE ROM: delay, then profile by MAC, hex IP prefixes, default; then the files."""
        delay = float(self.fault("firmware-delay") or self.context.state.firmware_delay)
        self.console(f"BIOS: {self.node.short_name}, firmware delay {delay:g}s")
        await asyncio.sleep(delay)
        rate = float(self.fault("boot-failure-rate") or self.context.state.boot_failure_rate)
        if rate > 0 and self.context.rng.random() < rate:
            return BootChoice(kind="none", reason="injected boot failure")
        self.console(f"PXE: CLIENT MAC ADDR: {self.node.mac}  CLIENT IP: {self.address}  TFTP: {SERVER_IP}")
        profile = await self._fetch_profile()
        if profile is None:
            return BootChoice(kind="none", reason="no PXE profile")
        name, text = profile
        self.console(f"PXE: loaded {name}")
        choice = parse_profile(text)
        if choice.kind != "kernel":
            return choice
        digest = ""
        for location in [choice.kernel, *choice.initrd]:
            try:
                data = await fetch(location, SERVER_IP, netns=self.node.netns)
            except FetchError as exc:
                return BootChoice(kind="none", reason=f"cannot load {location}: {exc}")
            self.console(f"Loading {location}... ok ({len(data)} bytes)")
            if location == choice.kernel:
                digest = hashlib.sha256(data).hexdigest()
        if digest != self.context.deploy_kernel_digest:
            return BootChoice(kind="none", reason=f"{choice.kernel}: kernel not bootable on this testbed")
        return BootChoice(kind="deploy", kernel=choice.kernel, params=choice.params)

    async def _fetch_profile(self) -> tuple[str, str] | None:
        names = [f"{PROFILE_DIRECTORY}/{name}" for name in pxe_candidates(self.node, self.address)]
        for name in names:
            try:
                return name, (await tftp_get(SERVER_IP, name, netns=self.node.netns)).decode(errors="replace")
            except FetchError:
                continue
        # iPXE ROMs fetch their script over HTTP.
        for name in names:
            url = f"http://{SERVER_IP}:{HTTP_PORT}/{name}"
            try:
                return url, (await http_get(url, netns=self.node.netns)).decode(errors="replace")
            except FetchError:
                continue
        return None

    async def _run_node(self, env: dict[str, str], phase: str) -> None:
        state = self.context.state
        loop_device = state.loops.get(str(self.node.index), "")
        if env["KTB_MODE"] == "partition" and "KTB_PART" not in env:
            flagged = read_boot_flag(Path(loop_device)) if loop_device else None
            if flagged is None:
                await self._hang("no bootable partition")
                return
            env["KTB_PART"] = str(flagged)
        if env["KTB_MODE"] == "partition":
            phase = f"partition {env['KTB_PART']}"
        full_env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "KTB_RUN": str(self.run_dir),
            "KTB_LOOP": loop_device,
            "KTB_DISK": "sda",
            "KTB_LOWER": state.deploy_rootfs,
            "KTB_HOSTNAME": self.node.hostname,
            "KTB_KEY": str(state.path / "etc" / "keys" / "id_deploy.pub"),
            "KTB_BOOT": str(self.boot_count),
            **env,
        }
        self._booting_into = phase
        self._set_phase(BOOTING, phase)
        with open(self.run_dir / "console.log", "ab") as console:
            self._process = await asyncio.create_subprocess_exec(
                "ip", "netns", "exec", self.node.netns,
                "unshare", "--mount", "--uts", "--pid", "--fork", "--kill-child", "--mount-proc",
                "/bin/sh", str(NODEINIT),
                stdin=asyncio.subprocess.DEVNULL, stdout=console, stderr=console,
                env=full_env, start_new_session=True)
        status = await self._process.wait()
        self._process = None
        await self._hang("nothing bootable" if status == HUNG_EXIT else f"node init exited with status {status}")

    # -- reboot/kexec requests from inside the node ---------------------------------------
    def open_control_fifo(self) -> None:
        """Listen on `<run>/ctl/ctl`, where the node's reboot/kexec wrappers write."""
        path = self.run_dir / "ctl" / "ctl"
        if not path.exists():
            os.mkfifo(path, 0o600)
        # O_RDWR keeps a writer open, so the fifo never reports EOF between requests.
        self._fifo_fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        self.loop.add_reader(self._fifo_fd, self._on_fifo)

    def close_control_fifo(self) -> None:
        if self._fifo_fd is not None:
            self.loop.remove_reader(self._fifo_fd)
            os.close(self._fifo_fd)
            self._fifo_fd = None

    def _on_fifo(self) -> None:
        assert self._fifo_fd is not None
        try:
            self._fifo_buffer += os.read(self._fifo_fd, 4096)
        except BlockingIOError:
            return
        while b"\n" in self._fifo_buffer:
            line, self._fifo_buffer = self._fifo_buffer.split(b"\n", 1)
            request = line.decode(errors="replace").strip()
            if request.startswith("booted "):
                self._booted(request)
            elif request in ("reboot", "poweroff", "kexec") and self.powered:
                self.console(f"{request} requested by the running system")
                # a system takes a moment to go down: the command that asked returns first
                delay = 0.0 if request == "kexec" else SHUTDOWN_DELAY
                self.loop.call_later(delay, self._requested, request)

    def _booted(self, announcement: str) -> None:
        """nodeinit's `booted BOOT [missing]`: its services listen (or will not); the boot is over.

        Only the announcement of the boot in progress counts: one written by a
        system just killed must not pass the next boot off as ready.
        """
        words = announcement.split(" ", 2)
        if self.phase != BOOTING or words[1] != str(self.boot_count):
            return
        self._set_phase(self._booting_into, words[2][:DETAIL_LIMIT] if len(words) > 2 else "")

    def _requested(self, action: str) -> None:
        if self.powered:  # not if the BMC powered the node off in the meantime
            self.loop.create_task(self.act(action))

    async def shutdown(self) -> None:
        """Power off for good (daemon exit)."""
        self.close_control_fifo()
        async with self._lock:
            await self._stop()

    def status(self) -> dict[str, object]:
        # Power off is instant on real hardware; the kill of the node's processes may lag a little.
        phase, detail = (self.phase, self.detail) if self.powered else ("off", "")
        return {"node": self.node.hostname, "power": "on" if self.powered else "off", "state": phase,
                "detail": detail, "since": round(time.time() - self.since, 1), "boot_count": self.boot_count}
