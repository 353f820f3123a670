"""testbed.fake room: one fake node — power, boot, ports, and the commands it answers.

A `FakeNode` is a small state machine in the daemon's event loop: `off`,
`firmware` (power-on delay, then the PXE profile is read from the server's
TFTP root by the names a PXElinux ROM tries), `deploy-env` (sshd and the
marker port open), `partition N` (a deployed or production system: sshd only)
or `hung`. Boot delays come from the configured distribution and boot
failures from the seeded model. Commands arrive over asyncssh (`sshd.py`)
already classified by `shell.classify`; `execute` is the node's whole "shell".
No thread, no process: thousands of nodes share one loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from kadeploy_testbed.fake.agenthost import AGENT_SOURCE, HostedAgent
from kadeploy_testbed.fake.relay import FakeRelay
from kadeploy_testbed.fake.shell import FakeCommand, parse_sink, partition_number
from kadeploy_testbed.fake.sinks import FileIndex, ImageSink
from kadeploy.cancelling import cancel_and_wait
from kadeploy_testbed.layout import NodeSpec, pxe_candidates
from kadeploy_testbed.profiles import BootChoice, parse_profile, root_partition

if TYPE_CHECKING:
    from kadeploy_testbed.fake.daemon import FakeContext

log = logging.getLogger("kadeploy_testbed.fake")

PROD_PARTITION = 2
DETACHED_DELAY = 1.0   # `sleep 1` of the detached kexec -e / reboot -f
_PART_NUM = re.compile(r"KADEPLOY_DEPLOY_PART_NUM='?(\d+)")
_RATE = re.compile(r"^(\d+(?:\.\d+)?)(bit|kbit|mbit|gbit)?$")
_RATE_UNITS = {"bit": 1.0, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9}

#: the `fault` kinds a fake node takes (the netns names, for what a fake node can mean by them)
FAKE_FAULT_KINDS = ("firmware-delay", "boot-failure-rate", "link-rate")


def parse_fault(kind: str, value: str) -> float:
    """A fault's value as a number: seconds, a share, or for `link-rate` bytes per second.

    `link-rate` takes the netns syntax (`10mbit`, `500kbit`; a bare number is
    Mbit/s) and limits what the node's relay takes of the broadcast stream
    from upstream: the part of its cable a fake node has.
    """
    if kind == "link-rate":
        match = _RATE.match(value.strip().lower())
        if match is None or float(match.group(1)) <= 0:
            raise ValueError(f"link-rate {value!r}: expected a rate such as 10mbit, 500kbit or a number of Mbit/s")
        return float(match.group(1)) * _RATE_UNITS[match.group(2) or "mbit"] / 8
    return float(value)
_URL = re.compile(r"^[a-z]+://[^/]*")


class Channel(Protocol):
    """What a command sees of its SSH channel."""

    async def read(self, size: int) -> bytes: ...
    async def readline(self) -> bytes: ...
    def write(self, data: str) -> None: ...
    def write_err(self, data: str) -> None: ...


@dataclass
class Partition:
    """What a partition holds: a bootable system (and a shallow index of its files) or not."""

    system: bool = False
    files: FileIndex | None = None
    digest: str = ""


@dataclass
class CommandOutcome:
    status: int
    stderr: str = ""
    stdout: str = ""


class FakeNode:
    """One node; its ports exist only while a system is up."""

    def __init__(self, spec: NodeSpec, context: FakeContext) -> None:
        self.spec = spec
        self.context = context
        self.powered = False
        self.phase = "off"
        self.detail = ""
        self.since = time.time()
        self.partitions: dict[int, Partition] = {}
        self.boot_flag = PROD_PARTITION
        self.mounted: dict[str, int] = {}          # dir -> partition
        self.fresh_image = False                   # deploy partition written since its last mkfs
        self.kexec_loaded: dict[str, str] | None = None
        self.put_files: dict[str, str] = {}        # path -> sha256 (kernels sent for kexec)
        self.counts: dict[str, int] = {}           # failure draws per kind
        self.boots: list[tuple[str, float]] = []   # (kind, seconds) of every boot
        self.overrides: dict[str, str] = {}        # faults set at run time
        self.sessions: dict[int, asyncio.Task[Any]] = {}
        self.connections: set[Any] = set()
        self.image_bytes = 0
        self.relay: FakeRelay | None = None         # the broadcast this node is taking part in, if any
        self.agent_locks: set[tuple[str, str]] = set()  # tree agents' run locks (the node's /tmp)
        #: the live tree agents by (run, host): their Unix sockets, through which a new agent adopts them
        self.tree_agents: dict[tuple[str, str], HostedAgent] = {}
        self.agent_runs = 0                         # tree agents this node hosted (the server's or a relay's)
        self.first_relay_at: float | None = None     # wall time of this node's first broadcast relay
        self.last_relay_end_at: float | None = None  # wall time its last broadcast relay ended
        self._boot_task: asyncio.Task[None] | None = None
        self._listeners: list[Any] = []
        self._lock = asyncio.Lock()

    # -- identity ------------------------------------------------------------------------
    @property
    def hostname(self) -> str:
        return self.spec.hostname

    @property
    def up(self) -> bool:
        return self.phase == "deploy-env" or self.phase.startswith("partition")

    def _set_phase(self, phase: str, detail: str = "") -> None:
        self.phase, self.detail, self.since = phase, detail, time.time()

    def _fails(self, kind: str) -> bool:
        count = self.counts.get(kind, 0)
        self.counts[kind] = count + 1
        override = self.overrides.get("boot-failure-rate") if kind == "boot" else None
        return self.context.model.fails(kind, self.spec.index, count,
                                        float(override) if override is not None else None)

    # -- power -----------------------------------------------------------------------------
    def initial_prod(self) -> None:
        """Start up on the production partition (as nodes are when a site gets them)."""
        self.partitions[PROD_PARTITION] = Partition(system=True)
        self.powered = True
        self._boot_task = asyncio.ensure_future(self._come_up(f"partition {PROD_PARTITION}", deploy=False))

    async def power(self, action: str) -> tuple[bool, str]:
        """A BMC action (on, off, cycle, reset, status) or an OS one (soft, soft-off); (ok, text)."""
        if action == "status":
            return True, "on" if self.powered else "off"
        if action in ("soft", "soft-off"):
            if not self.up:
                return False, f"ssh: connect to host {self.hostname} port 22: Connection refused"
            self._later(DETACHED_DELAY, "reboot" if action == "soft" else "off")
            return True, ""
        if action not in ("on", "off", "cycle", "reset"):
            return False, f"unknown power action {action!r}"
        await self.act(action)
        return True, ""

    def _later(self, delay: float, action: str) -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(delay, lambda: self.context.spawn(self.act(action)))

    async def act(self, action: str) -> None:
        async with self._lock:
            if action == "on":
                if not self.powered:
                    self._start_boot(firmware=True)
            elif action == "off":
                await self._stop()
            elif action in ("cycle", "reset", "reboot"):
                await self._stop()
                self._start_boot(firmware=True)
            elif action == "kexec":
                loaded = self.kexec_loaded
                await self._stop()
                self._start_boot(firmware=False, loaded=loaded)

    def _start_boot(self, *, firmware: bool, loaded: dict[str, str] | None = None) -> None:
        self.powered = True
        self._boot_task = asyncio.ensure_future(self._boot(firmware, loaded))

    async def _stop(self) -> None:
        task, self._boot_task = self._boot_task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._close_ports()
        self.powered = False
        self.mounted.clear()
        self.kexec_loaded = None
        self.put_files.clear()
        self.agent_locks.clear()
        self._set_phase("off")

    # -- boot ------------------------------------------------------------------------------
    def _duration(self, kind: str) -> float:
        count = sum(1 for k, _ in self.boots if k == kind)
        uniform = self.context.draw(self.spec.index, f"{kind}-time", count)
        if kind == "boot" and "firmware-delay" in self.overrides:
            return float(self.overrides["firmware-delay"])
        distribution = self.context.boot_time if kind == "boot" else self.context.kexec_time
        return distribution.pick(uniform)

    async def _boot(self, firmware: bool, loaded: dict[str, str] | None) -> None:
        kind = "boot" if firmware else "kexec"
        total = self._duration(kind)
        self.boots.append((kind, total))
        hang = self._fails("boot")
        if firmware:
            self._set_phase("firmware", f"{total:.1f}s")
            share = self.context.settings.firmware_share
            await asyncio.sleep(total * share)
            choice = self._pxe_choice()
            await asyncio.sleep(total * (1 - share))
        else:
            self._set_phase("kexec", f"{total:.1f}s")
            await asyncio.sleep(total)
            choice = self._kexec_choice(loaded)
        if hang:
            choice = BootChoice(kind="none", reason="injected boot failure")
        if choice.kind == "deploy":
            await self._come_up("deploy-env", deploy=True)
        elif choice.kind == "local":
            partition = choice.partition if choice.partition is not None else self.boot_flag
            if self.partitions.get(partition, Partition()).system:
                await self._come_up(f"partition {partition}", deploy=False)
            else:
                self._set_phase("hung", f"no operating system on partition {partition}")
        else:
            self._set_phase("hung", choice.reason)

    def _pxe_choice(self) -> BootChoice:
        """What the PXE ROM boots: the profile by MAC, hex IP and its prefixes, then `default`."""
        profiles = self.context.profiles_dir
        for name in pxe_candidates(self.spec):
            try:
                text = (profiles / name).read_text(errors="replace")
            except OSError:
                continue
            choice = parse_profile(text)
            if choice.kind != "kernel":
                return choice
            if self.context.is_deploy_kernel(choice.kernel):
                return BootChoice(kind="deploy", kernel=choice.kernel, params=choice.params)
            partition = root_partition(choice.params)
            if partition is not None:
                return BootChoice(kind="local", partition=partition)
            return BootChoice(kind="none", reason=f"{choice.kernel}: kernel not bootable on this testbed")
        return BootChoice(kind="none", reason="no PXE profile")

    def _kexec_choice(self, loaded: dict[str, str] | None) -> BootChoice:
        if loaded is None:
            return BootChoice(kind="none", reason="kexec -e without a loaded kernel")
        if self.put_files.get(loaded["kernel"]) == self.context.deploy_kernel_digest:
            return BootChoice(kind="deploy")
        partition = root_partition(loaded["params"])
        if partition is None:
            return BootChoice(kind="none", reason="kexec: no root= in the loaded kernel's command line")
        return BootChoice(kind="local", partition=partition)

    async def _come_up(self, phase: str, *, deploy: bool) -> None:
        await self._open_ports(deploy)
        self._set_phase(phase)

    # -- ports -----------------------------------------------------------------------------
    async def _open_ports(self, deploy: bool) -> None:
        # the marker first: a deployment environment answering on SSH without it would
        # pass for a user's system with the server's wait_reboot (25300 in ports_down)
        if deploy:
            self._listeners.append(await asyncio.start_server(_close_at_once, self.spec.ip,
                                                              self.context.settings.marker_port))
        self._listeners.append(await self.context.start_sshd(self))

    async def _close_ports(self) -> None:
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener.close()
        for connection in list(self.connections):
            connection.abort()
        self.connections.clear()
        await cancel_and_wait(list(self.sessions.values()), "session")

    # -- the shell -------------------------------------------------------------------------
    async def execute(self, command: FakeCommand, text: str, channel: Channel) -> CommandOutcome:
        """Run one classified command; stdin is consumed whenever the real command reads it."""
        kind = command.kind
        args = command.args
        if kind == "relay":
            return await self._relay(args["config"], channel)  # type: ignore[arg-type]
        if kind == "agent":
            if args["source"] != AGENT_SOURCE:
                return CommandOutcome(127, "fake node: the tree agent sent is not this checkout's "
                                           "(kadeploy/remote/agent.py): it would not run what was sent")
            return CommandOutcome(await HostedAgent(self, channel).run())
        if kind == "kill":
            pgid = int(args["pgid"])  # type: ignore[arg-type]
            task = self.sessions.get(pgid)
            if task is not None:
                task.cancel()
            return CommandOutcome(0)
        if kind in ("script", "keys", "put", "unpack"):
            data = await _consume(channel, digest=kind == "put")
            if kind == "put":
                self.put_files[str(args["path"])] = data
                return self._outcome("command", "cat: write error: No space left on device")
            if kind == "script":
                if self.fresh_image:
                    return self._outcome("bootloader", "grub-install: error: cannot find a GRUB drive")
                outcome = self._outcome("partition", "Error: Partition(s) on /dev/sda are being used.")
                if outcome.status == 0 and (match := _PART_NUM.search(text)):
                    self.boot_flag = int(match.group(1))
                return outcome
            return self._outcome("command", "write error")
        if kind == "format":
            outcome = self._outcome("format", f"mkfs: {args['device']}: Input/output error")
            number = partition_number(str(args["device"]))
            if outcome.status == 0 and number is not None:
                self.partitions[number] = Partition()
                if number == self._deploy_part():
                    self.fresh_image = False
            return outcome
        if kind == "mount":
            outcome = self._outcome("mount", f"mount: {args['dir']}: special device {args['device']} does not exist")
            number = partition_number(str(args["device"]))
            if outcome.status == 0 and number is not None:
                self.mounted[str(args["dir"])] = number
            return outcome
        if kind == "umount":
            self.mounted = {d: p for d, p in self.mounted.items() if f"{p}" != str(partition_number(str(args["device"])))}
            return CommandOutcome(0)
        if kind == "kexec":
            outcome = self._outcome("kexec", "kexec_load failed: Device or resource busy")
            if outcome.status != 0:
                return outcome
            kernel = str(args["kernel"])
            if kernel not in self.put_files and not self._file_exists(kernel):
                return CommandOutcome(1, f"Cannot open `{kernel}': No such file or directory")
            self.kexec_loaded = {"kernel": kernel, "params": str(args["params"])}
            self._later(DETACHED_DELAY, "kexec")
            return CommandOutcome(0)
        if kind == "reboot":
            self._later(DETACHED_DELAY, "reboot")
            return CommandOutcome(0)
        if kind == "test":
            for path, message in args["checks"]:  # type: ignore[union-attr]
                if not self._file_exists(path):
                    return CommandOutcome(1, message)
            return CommandOutcome(0)
        if kind == "rootdev":
            root = f"/dev/sda{self.phase.split()[1]}" if self.phase.startswith("partition") else "tmpfs"
            return CommandOutcome(0, stdout=root + "\n")
        if kind == "noop":
            return self._outcome("command", "Input/output error")
        if kind == "archive-script":
            return self._outcome("command", "script failed")
        if kind == "echo":
            return CommandOutcome(0, stdout=f"{args['text']}\n")
        if kind == "exit":
            return CommandOutcome(int(args["status"]))  # type: ignore[arg-type]
        return CommandOutcome(127, f"sh: fake node {self.hostname} cannot run: {text[:200]}")

    def _outcome(self, kind: str, error: str) -> CommandOutcome:
        if self._fails(kind):
            return CommandOutcome(1, f"{error} (injected {kind} failure)")
        return CommandOutcome(0)

    def _deploy_part(self) -> int:
        return self.context.deploy_partition.get(self.spec.cluster, 3)

    def _file_exists(self, path: str) -> bool:
        """A path in a mounted partition (the extracted image) or of the deployment environment."""
        for directory, number in self.mounted.items():
            prefix = directory.rstrip("/") + "/"
            if path.startswith(prefix):
                files = self.partitions.get(number, Partition()).files
                return files is None or files.exists(path[len(prefix):])
        return True

    async def _relay(self, config: dict[str, Any], channel: Channel) -> CommandOutcome:
        sink_spec = parse_sink(str(config.get("sink", "")))
        if sink_spec is None:
            return CommandOutcome(127, f"sh: fake node cannot run the image pipeline {config.get('sink')!r}")
        if self.first_relay_at is None:
            self.first_relay_at = time.time()
        failing = self._fails("image")
        if "link-rate" in self.overrides:
            config = {**config, "limit_rate": parse_fault("link-rate", self.overrides["link-rate"])}
        sink = ImageSink(sink_spec.compression, sink_spec.kind, inspect=self.context.settings.inspect_images)
        relay = FakeRelay(self.spec.ip, config, sink, channel.write, buffer=self.context.settings.relay_buffer)
        self.relay = relay
        try:
            status = await relay.run(channel.readline, channel.read)
        finally:
            self.relay = None
            self.image_bytes += relay.received
            self.last_relay_end_at = time.time()
        if relay.sink_done.is_set() and sink.error == "" and not failing:
            number = partition_number(sink_spec.target) if sink_spec.kind == "dd" else \
                self.mounted.get(sink_spec.target)
            if number is not None:
                files = self.context.shared_index(relay.digest.hexdigest(), sink.files)
                self.partitions[number] = Partition(system=True, files=files, digest=relay.digest.hexdigest())
                self.fresh_image = True
        elif failing and relay.sink_done.is_set():
            log.debug("%s: injected image failure", self.hostname)
        return CommandOutcome(status)

    async def agent_session(self, channel: Channel) -> int:
        """A tree agent started on this node by another node's agent of this process (its ssh session)."""
        pgid = self.context.pgid()
        task = asyncio.current_task()
        assert task is not None
        self.sessions[pgid] = task
        try:
            return await HostedAgent(self, channel).run()
        finally:
            self.sessions.pop(pgid, None)

    def status(self) -> dict[str, Any]:
        partition = int(self.phase.split()[1]) if self.phase.startswith("partition") else None
        return {
            "node": self.hostname, "power": "on" if self.powered else "off", "state": self.phase,
            "detail": self.detail, "since": round(time.time() - self.since),
            "address": self.spec.ip, "boots": [[kind, round(seconds, 3)] for kind, seconds in self.boots],
            "digest": self.partitions.get(partition, Partition()).digest if partition else "",
            "image_bytes": self.image_bytes + (self.relay.received if self.relay is not None else 0),
            "agent_runs": self.agent_runs,
            "first_relay_at": self.first_relay_at,
            "last_relay_end_at": self.last_relay_end_at,
        }


async def _consume(channel: Channel, *, digest: bool = False) -> str:
    """Read stdin to its end (what `cat - > file` does); the sha256 of it when asked."""
    hasher = hashlib.sha256() if digest else None
    while data := await channel.read(65536):
        if hasher is not None:
            hasher.update(data)
    return hasher.hexdigest() if hasher is not None else ""


async def _close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The deployment environment's marker port: accept, close."""
    writer.close()


def kernel_file(repository: Path, location: str) -> Path:
    """Where a profile's kernel (`/kernels/x`, `tftp://srv/kernels/x`, `http://srv:port/x`) lives on disk."""
    return repository / _URL.sub("", location).lstrip("/")
