"""The `bittorrent` broadcast method (Kadeploy3's BroadcastEnvBittorrent), run with maintained tools.

The server makes a private torrent of the cached image with `mktorrent`,
starts `opentracker` (whitelisted to that one info hash) and an `aria2c`
seed, both bound to its own deployment-network address on free ports; every
node runs `btnode.py` (sent over SSH like relay.py), which checks that its
store can hold the image, then runs `aria2c` bound to the node's address.
Pieces come from the server and from the other nodes, each checked against
the torrent's SHA-1 piece hash by aria2c; once complete, the node feeds its
stored copy to the sink and reports the same end-to-end digest as the chain,
compared here. Every node keeps seeding until all are decided; then the agents
are told to stop (EOF) and killed if they do not, and the seed and the tracker
process groups are killed. Why these tools: docs/design.md, "BitTorrent broadcast".
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import math
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kadeploy.boot.process import kill_group, run_process
from kadeploy.broadcast import agents
from kadeploy.broadcast.result import BroadcastResult
from kadeploy.cancelling import cancel_and_wait
from kadeploy.errors import ErrorCode, KadeployError
from kadeploy.remote import Executor, Launch, NodeProcess

log = logging.getLogger("kadeploy.broadcast")

AGENT_SOURCE = Path(__file__).with_name("btnode.py")
TORRENT_NAME = "kadeploy-image"  # btnode.TORRENT_NAME: the file's name in every node's store
#: mktorrent's piece length bounds (2^n bytes): 256 KiB .. 16 MiB, about 2,048 pieces in between
MIN_PIECE_EXPONENT, MAX_PIECE_EXPONENT, TARGET_PIECES = 18, 24, 2048
#: how long the tracker and the seed have to start listening
SERVICE_START_TIMEOUT = 10.0


@dataclass
class BittorrentOptions:
    """Tuning and test hooks of one BitTorrent broadcast."""

    store: str = "/tmp"               # where each node keeps its copy (the tmp partition: tarball_dir)
    stall: float = 30.0               # a node whose download writes nothing for this long is KO
    start_timeout: float = 30.0       # SSH + agent start-up + store check, per node
    start_window: int = 128
    digest: str = "sha256"
    announce: int = 5                 # seconds between a client's tracker announces (new peers found sooner)
    node_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # per host (test hooks)


def piece_exponent(total: int) -> int:
    """log2 of the piece length: about TARGET_PIECES pieces, within 256 KiB .. 16 MiB.

    Small pieces let nodes trade sooner; too many make the torrent (20 bytes a
    piece, sent to every node) and the bitfields large."""
    wanted = math.ceil(math.log2(max(total, 1) / TARGET_PIECES)) if total > TARGET_PIECES else 0
    return max(MIN_PIECE_EXPONENT, min(MAX_PIECE_EXPONENT, wanted))


def info_hash(torrent: bytes) -> str:
    """Hex SHA-1 of the bencoded `info` dictionary (what the tracker's whitelist lists)."""
    if not torrent.startswith(b"d"):
        raise ValueError("not a bencoded dictionary")
    position = 1
    while torrent[position:position + 1] != b"e":
        key, position = _bstring(torrent, position)
        end = _skip(torrent, position)
        if key == b"info":
            return hashlib.sha1(torrent[position:end]).hexdigest()
        position = end
    raise ValueError("the torrent has no info dictionary")


def _bstring(data: bytes, position: int) -> tuple[bytes, int]:
    colon = data.index(b":", position)
    length = int(data[position:colon])
    if length < 0 or colon + 1 + length > len(data):
        raise ValueError("truncated string")
    return data[colon + 1:colon + 1 + length], colon + 1 + length


def _skip(data: bytes, position: int) -> int:
    """Position just after the bencoded value at `position`."""
    head = data[position:position + 1]
    if head == b"i":
        return data.index(b"e", position) + 1
    if head in (b"l", b"d"):
        position += 1
        while data[position:position + 1] != b"e":
            if position >= len(data):
                raise ValueError("truncated container")
            position = _skip(data, position)
        return position + 1
    if head.isdigit():
        return _bstring(data, position)[1]
    raise ValueError(f"bad bencode at {position}")


def source_address(node_address: str) -> str:
    """The server's address on the route to `node_address`: where the tracker and the seed listen.

    A connected UDP socket sends nothing; the kernel only picks the route and source."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((node_address, 9))
        return str(probe.getsockname()[0])


def free_port(address: str) -> int:
    """A port free for both TCP and UDP on `address` (the tracker binds both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((address, 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((address, port))
                except OSError:
                    continue
                return port
    raise KadeployError(ErrorCode.EXECUTE_ERROR, f"No free port on {address} for the BitTorrent tracker")


def agent_command(config: Mapping[str, Any]) -> str:
    """The node command that starts the agent: its whole source as a quoted argument."""
    return agents.agent_command(AGENT_SOURCE, config)


@dataclass
class _Node:
    hostname: str
    address: str
    process: NodeProcess | None = None
    reason: str | None = None   # None: pending; "": OK
    progress: int = 0


class BittorrentBroadcast:
    """One broadcast through a swarm; `await BittorrentBroadcast(...).run(timeout)`."""

    def __init__(self, image: Path, total: int, order: Sequence[tuple[str, str]], sink_command: str, *,
                 executor: Executor, options: BittorrentOptions, digest: str | None = None) -> None:
        self._image = image
        self._total = total
        self._nodes = [_Node(hostname, address) for hostname, address in order]
        self._sink = sink_command
        self._executor = executor
        self._options = options
        self._given_digest = digest
        self._expected: asyncio.Future[str] | None = None
        self._decided = asyncio.Event()
        self._services: list[asyncio.subprocess.Process] = []
        self._workdir: Path | None = None
        self._node_cpu = 0.0
        self._tasks: list[asyncio.Future[Any]] = []
        self._launch: Launch | None = None

    async def run(self, timeout: float | None) -> BroadcastResult:
        started = time.monotonic()
        self._expected = agents.expected_digest(self._image, self._given_digest, self._options.digest)
        try:
            await asyncio.wait_for(self._swarm(), timeout)
        except asyncio.TimeoutError:
            for node in self._pending():
                self._decide(node, f"Broadcast timeout after {timeout:g}s")
        except (KadeployError, OSError) as exc:  # the server's side (torrent, tracker, seed) failed
            for node in self._pending():
                self._decide(node, f"BitTorrent broadcast failed on the server: {exc}")
        finally:
            await cancel_and_wait(self._tasks, "bittorrent task")
            await self._stop()
        digest = await self._expected
        result = BroadcastResult(seconds=time.monotonic() - started, digest=digest, node_cpu_seconds=self._node_cpu)
        for node in self._nodes:
            result.record(node.hostname, node.reason == "", node.reason)
        return result

    def _pending(self) -> list[_Node]:
        return [node for node in self._nodes if node.reason is None]

    def _decide(self, node: _Node, reason: str) -> None:
        if node.reason is None:
            node.reason = reason
        if not self._pending():
            self._decided.set()

    async def _swarm(self) -> None:
        self._launch = await agents.start_many(self._executor, self._nodes, AGENT_SOURCE,
                                               {node.hostname: self._agent_config(node) for node in self._nodes})
        await agents.start_all(self._nodes, self._options.start_window, self._start_agent)
        ready = self._pending()
        if not ready:
            return  # every store refused (or unreachable): nothing was transferred
        address = source_address(ready[0].address)
        torrent = await self._serve(address)
        encoded = base64.b64encode(torrent).decode()
        for node in ready:
            self._tasks.append(asyncio.ensure_future(self._watch(node)))
            self._send(node, {"op": "start", "torrent": encoded})
        await self._decided.wait()

    def _agent_config(self, node: _Node) -> dict[str, Any]:
        config: dict[str, Any] = {"total": self._total, "sink": self._sink, "store": self._options.store,
                                  "stall": self._options.stall, "digest": self._options.digest,
                                  "address": node.address, "announce": self._options.announce}
        config.update(self._options.node_options.get(node.hostname, {}))
        return config

    async def _start_agent(self, node: _Node) -> None:
        assert self._launch is not None
        first = await agents.start_agent(self._launch, node, self._options.start_timeout,
                                         "BitTorrent agent", until=("ready", "refused"))
        if isinstance(first, str):
            self._decide(node, first)
        elif first["ev"] == "refused":
            self._decide(node, f"Not enough room for the image: {first.get('message')}")
        else:
            assert node.process is not None
            try:
                node.process.watch_liveness(max(1.0, self._options.stall / 3), 2)
            except Exception as exc:  # noqa: BLE001 - any failure of one node is that node's KO
                self._decide(node, f"BitTorrent agent start-up failed: {exc}")

    async def _serve(self, address: str) -> bytes:
        """Torrent, tracker and seed on the server; returns the torrent's bytes."""
        self._workdir = Path(tempfile.mkdtemp(prefix="kadeploy-bt-"))
        tracker_port = free_port(address)
        torrent_path = self._workdir / "image.torrent"
        made = await run_process(
            ["mktorrent", "--private", "--no-date", f"--piece-length={piece_exponent(self._total)}",
             f"--name={TORRENT_NAME}", f"--announce=http://{address}:{tracker_port}/announce",
             f"--output={torrent_path}", str(self._image)], timeout=max(60.0, self._total / 50e6))
        if not made.ok:
            raise KadeployError(ErrorCode.EXECUTE_ERROR, "mktorrent failed: "
                                + ("timeout" if made.timed_out else made.stderr.strip()[-500:] or f"exit status {made.exit_status}"))
        torrent = torrent_path.read_bytes()
        chroot = self._workdir / "tracker"
        chroot.mkdir()
        (chroot / "whitelist").write_text(info_hash(torrent) + "\n")  # this torrent only
        # As root, opentracker chroots into -d and drops to -u, then reads the whitelist inside the
        # chroot; as another user it does neither, and reads the path as given.
        whitelist = "/whitelist" if os.geteuid() == 0 else str(chroot / "whitelist")
        await self._service(["opentracker", "-i", address, "-p", str(tracker_port), "-P", str(tracker_port),
                             "-d", str(chroot), "-u", "nobody", "-w", whitelist], address, tracker_port, "opentracker")
        seed_dir = self._workdir / "seed"
        seed_dir.mkdir()
        (seed_dir / TORRENT_NAME).symlink_to(self._image.resolve())
        seed_port = free_port(address)
        await self._service(["aria2c", f"--dir={seed_dir}", "--seed-ratio=0.0", "--bt-seed-unverified=true",
                             "--enable-dht=false", "--enable-dht6=false", "--bt-enable-lpd=false",
                             "--disable-ipv6=true", f"--interface={address}", f"--listen-port={seed_port}",
                             "--bt-max-peers=0", f"--bt-tracker-interval={self._options.announce}",
                             "--console-log-level=warn", "--summary-interval=0", "--show-console-readout=false",
                             f"--stop-with-process={os.getpid()}", str(torrent_path)], address, seed_port, "aria2c seed")
        return torrent

    async def _service(self, argv: list[str], address: str, port: int, name: str) -> None:
        """Start a server-side process in its own group and wait until it listens on (address, port)."""
        assert self._workdir is not None
        output = open(self._workdir / f"{argv[0]}.log", "wb")  # noqa: SIM115 - the child keeps it
        try:
            process = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL, stdout=output,
                                                           stderr=output, start_new_session=True)
        except OSError as exc:
            raise KadeployError(ErrorCode.EXECUTE_ERROR, f"Cannot start {name} on the server: {exc}") from None
        finally:
            output.close()
        self._services.append(process)
        deadline = time.monotonic() + SERVICE_START_TIMEOUT
        while time.monotonic() < deadline:
            if process.returncode is not None:
                break
            try:
                _reader, writer = await asyncio.wait_for(asyncio.open_connection(address, port), 1.0)
                writer.close()
                return
            except (OSError, asyncio.TimeoutError):
                await asyncio.sleep(0.05)
        tail = (self._workdir / f"{argv[0]}.log").read_bytes()[-500:].decode(errors="replace").strip()
        raise KadeployError(ErrorCode.EXECUTE_ERROR, f"{name} did not listen on {address}:{port} within "
                            f"{SERVICE_START_TIMEOUT:g}s{': ' + tail if tail else ''}")

    async def _watch(self, node: _Node) -> None:
        assert node.process is not None
        async for event in agents.events(node):
            kind = event.get("ev")
            if kind == "progress":
                node.progress = int(event.get("written", 0) or 0)
            elif kind == "done":
                await self._finished(node, event)
            elif kind == "failed":
                self._decide(node, f"BitTorrent download failed: {event.get('message')}")
                await node.process.kill()
                return
        if node.reason is None:
            self._decide(node, await agents.death_reason(node.process, "BitTorrent agent"))

    async def _finished(self, node: _Node, event: Mapping[str, Any]) -> None:
        assert self._expected is not None
        self._node_cpu += float(event.get("cpu", 0.0) or 0.0)
        expected = await self._expected
        self._decide(node, agents.verdict(event, self._total, expected))

    def _send(self, node: _Node, command: Mapping[str, Any]) -> None:
        agents.send(node.process, command)

    async def _stop(self) -> None:
        """Everyone decided (or the broadcast ended): agents stop seeding, then the seed and tracker."""
        await agents.stop_agents(node.process for node in self._nodes)
        if self._launch is not None:
            await self._launch.close()
        for process in self._services:
            kill_group(process)
        for process in self._services:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(process.wait(), 5.0)
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
