"""testbed.fake room: the fake testbed daemon — N nodes, their sshd, their BMCs, one event loop per process.

`python -m kadeploy_testbed.fake.daemon --dir D` (forked by `up --mode fake`)
reads `<D>/fake.json` and owns the control socket `<D>/run/control.sock`,
which speaks the netns daemon's JSON-lines protocol (`status`, `power`,
`fault`, `stop`) so that `kadeploy-testbed status|power|fault` and the
cluster's power commands work unchanged; `stats` adds what the benchmark
reads. Power commands reach it through `etc/scripts/fake-bmc` (sh + socat: a
few ms per call, no Python start-up per reboot).

With one worker (`workers` in fake.json) this process serves every node's
SSH endpoint with asyncssh on its 127.1.x.y address, as it always did. With
K > 1 it is the front of a `pool.WorkerPool`, and the same module started
with `--worker I --channel-fd FD` serves slice I of the nodes (`FakeTestbed`
over `settings.worker_slices`), answering the front over an inherited socket.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import resource
import signal
import socket
import sys
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import asyncssh

from kadeploy.errors import KadeployError
from kadeploy.remote.tuning import quiet_asyncssh_logging
from kadeploy_testbed.configdir import DEPLOY_KERNEL
from kadeploy_testbed.fake.control import LINE_LIMIT, serve_channel, serve_control
from kadeploy_testbed.fake.model import Distribution, FailureModel, draw
from kadeploy_testbed.fake.node import FAKE_FAULT_KINDS, FakeNode, kernel_file, parse_fault
from kadeploy_testbed.fake.relay import LINK_COUNTS
from kadeploy_testbed.fake.settings import FakeSettings, fake_layout, load_settings, worker_slices
from kadeploy_testbed.fake.sinks import FileIndex
from kadeploy_testbed.fake.sshd import start_node_sshd
from kadeploy_testbed.state import control_socket

log = logging.getLogger("kadeploy_testbed.fake")

NOFILE_WANTED = 1 << 17
READY_TIMEOUT = 30.0


class FakeContext:
    """What every node shares: settings, model, keys, the PXE repository and the loop's tasks."""

    def __init__(self, settings: FakeSettings) -> None:
        self.settings = settings
        self.model: FailureModel = settings.failure_model()
        self.boot_time: Distribution = settings.boot_distribution()
        self.kexec_time: Distribution = settings.kexec_distribution()
        etc = settings.path / "etc"
        self.repository = settings.path / "tftpboot"
        self.profiles_dir = self.repository / "pxelinux.cfg"
        self.deploy_kernel_path = self.repository / DEPLOY_KERNEL
        self.deploy_kernel_digest = hashlib.sha256(self.deploy_kernel_path.read_bytes()).hexdigest()
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        self.authorized_keys = asyncssh.import_authorized_keys((etc / "keys" / "id_deploy.pub").read_text())
        self.deploy_partition: dict[str, int] = {}
        self._next_pgid = 1000
        self._indexes: dict[str, FileIndex | None] = {}
        self._kernel_digests: dict[str, str] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.nodes_by_address: dict[str, FakeNode] = {}
        self._deploy_key: asyncssh.SSHKey | None = None

    def draw(self, node: int, event: str, count: int) -> float:
        return draw(self.settings.seed, node, event, count)

    def local_node(self, address: str) -> FakeNode | None:
        """The node of this process at `address` (None: another worker serves it, or no node is there)."""
        return self.nodes_by_address.get(address)

    def deploy_key(self) -> asyncssh.SSHKey:
        """The deployment key: a tree agent reaching a node of another worker logs in with it, as ssh -A would."""
        if self._deploy_key is None:
            self._deploy_key = asyncssh.read_private_key(self.settings.path / "etc" / "keys" / "id_deploy")
        return self._deploy_key

    def pgid(self) -> int:
        self._next_pgid += 1
        return self._next_pgid

    def spawn(self, coroutine: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start_sshd(self, node: FakeNode) -> Any:
        return await start_node_sshd(node, self)

    def is_deploy_kernel(self, location: str) -> bool:
        """Whether a profile's kernel is the deployment kernel, by content as the netns firmware decides."""
        path = kernel_file(self.repository, location)
        key = str(path)
        if key not in self._kernel_digests:
            try:
                self._kernel_digests[key] = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError:
                self._kernel_digests[key] = ""
        return self._kernel_digests[key] == self.deploy_kernel_digest

    def shared_index(self, digest: str, index: FileIndex | None) -> FileIndex | None:
        """One file index per image digest, whatever the number of nodes holding it."""
        return self._indexes.setdefault(digest, index)


class FakeTestbed:
    """The nodes of one process (all of them, or a worker's slice), and the answers to control requests."""

    def __init__(self, settings: FakeSettings, positions: range | None = None, *, worker: int | None = None) -> None:
        self.settings = settings
        self.worker = worker
        self.context = FakeContext(settings)
        self.layout = fake_layout(settings.nodes, settings.clusters)
        specs = self.layout.nodes if positions is None else self.layout.nodes[positions.start:positions.stop]
        self.nodes = {spec.hostname: FakeNode(spec, self.context) for spec in specs}
        self._by_name: dict[str, FakeNode] = {}
        for node in self.nodes.values():
            for name in (node.hostname, node.spec.short_name, node.spec.ip):
                self._by_name[name] = node
            self.context.nodes_by_address[node.spec.ip] = node
        self.stopped = asyncio.Event()
        self.control: asyncio.AbstractServer | None = None  # the control socket, when this process has it
        self._stopping = False
        self._read_deploy_partitions()

    def _read_deploy_partitions(self) -> None:
        import yaml
        for cluster in self.layout.clusters:
            try:
                data = yaml.safe_load((self.settings.path / "etc" / f"{cluster}.conf").read_text())
                self.context.deploy_partition[cluster] = int(data["partitioning"]["partitions"]["deploy"])
            except (OSError, KeyError, TypeError, ValueError):
                self.context.deploy_partition[cluster] = 3

    def start(self) -> None:
        if self.settings.initial == "prod":
            for node in self.nodes.values():
                node.initial_prod()

    async def stop(self) -> None:
        """Power every node off (ports closed, sessions killed); `stopped` is set when done."""
        if self._stopping:
            return
        self._stopping = True
        if self.control is not None:
            self.control.close()
        await asyncio.gather(*(node.act("off") for node in self.nodes.values()), return_exceptions=True)
        self.stopped.set()

    def node(self, name: str) -> FakeNode:
        node = self._by_name.get(name)
        if node is None:
            raise KadeployError(0, f"{name}: not a node of this testbed")
        return node

    async def dispatch(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request["op"]
        if op == "status":
            return {"ok": True, "mode": "fake", "nodes": [node.status() for node in self.nodes.values()]}
        if op == "power":
            node = self.node(str(request["node"]))
            action = str(request["action"])
            if request.get("bmc") and action != "status" and node._fails("bmc"):
                return {"ok": False, "error": f"{node.hostname}: BMC did not answer (injected bmc failure)"}
            ok, text = await node.power(action)
            return {"ok": ok, "status": text} if ok else {"ok": False, "error": text}
        if op == "fault":
            node = self.node(str(request["node"]))
            kind, value = str(request["kind"]), str(request["value"])
            if kind not in FAKE_FAULT_KINDS:
                raise KadeployError(0, f"fault {kind!r} is not supported in fake mode ({', '.join(FAKE_FAULT_KINDS)})")
            if value == "off":
                node.overrides.pop(kind, None)
            else:
                parse_fault(kind, value)
                node.overrides[kind] = value
            return {"ok": True}
        if op == "stats":
            return {"ok": True, **self.stats()}
        if op == "stop":
            asyncio.get_running_loop().call_soon(lambda: self.context.spawn(self.stop()))
            return {"ok": True}
        raise KadeployError(0, f"unknown op {op!r}")

    def stats(self) -> dict[str, Any]:
        """Node phases, this process's CPU seconds and peak RSS, relay links by kind."""
        counts: dict[str, int] = {}
        for node in self.nodes.values():
            phase = node.phase.split()[0]
            counts[phase] = counts.get(phase, 0) + 1
        usage = resource.getrusage(resource.RUSAGE_SELF)
        hostnames = list(self.nodes)
        return {"phases": counts, "cpu": usage.ru_utime + usage.ru_stime, "max_rss_kib": usage.ru_maxrss,
                "links": dict(LINK_COUNTS), "pid": os.getpid(), "worker": self.worker,
                "nodes": f"{hostnames[0]}..{hostnames[-1]}" if hostnames else ""}


def raise_file_limit(wanted: int = NOFILE_WANTED) -> int:
    """Thousands of nodes need several descriptors each; raise the soft (and, as root, hard) limit."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for target in (max(wanted, hard), hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, target), target))
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def serve(directory: Path) -> None:
    """The daemon: every node in this process (one worker), or the front of a `WorkerPool`."""
    settings = load_settings(directory)
    if settings.workers > 1:
        from kadeploy_testbed.fake.pool import serve_pool
        await serve_pool(settings)
        return
    testbed = FakeTestbed(settings)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, lambda: testbed.context.spawn(testbed.stop()))
    testbed.start()
    testbed.control = await serve_control(control_socket(directory), testbed.dispatch)
    log.info("fake testbed: %d nodes up", len(testbed.nodes))
    try:
        await testbed.stopped.wait()
    finally:
        control_socket(directory).unlink(missing_ok=True)


async def serve_worker(directory: Path, index: int, channel_fd: int) -> None:
    """Worker `index` of a pool: its slice of the nodes, requests from the daemon over the inherited socket.

    It stops (every node of its slice powered off) on `stop`, on SIGTERM, and
    when the daemon's end of the channel closes: a worker never outlives its
    daemon, even one killed with SIGKILL.
    """
    settings = load_settings(directory)
    positions = worker_slices(settings.nodes, settings.workers)[index]
    testbed = FakeTestbed(settings, positions, worker=index)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, lambda: testbed.context.spawn(testbed.stop()))
    reader, writer = await asyncio.open_connection(sock=socket.socket(fileno=channel_fd), limit=LINE_LIMIT)
    testbed.start()
    writer.write(json.dumps({"ready": True, "pid": os.getpid()}).encode() + b"\n")
    await asyncio.wait_for(writer.drain(), READY_TIMEOUT)
    log.info("%d nodes up (%s)", len(testbed.nodes), testbed.stats()["nodes"])
    channel = asyncio.ensure_future(serve_channel(reader, writer, testbed.dispatch))
    stopped = asyncio.ensure_future(testbed.stopped.wait())
    await asyncio.wait([channel, stopped], return_when=asyncio.FIRST_COMPLETED)
    if not testbed.stopped.is_set():
        log.error("the daemon closed the channel: stopping")
        await testbed.stop()
    log.info("stopped: %d nodes powered off", len(testbed.nodes))
    channel.cancel()
    writer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kadeploy-testbed-fake-daemon")
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--channel-fd", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if (args.worker is None) != (args.channel_fd is None):
        parser.error("--worker and --channel-fd go together (the daemon starts its workers itself)")
    who = "" if args.worker is None else f"worker {args.worker} "
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s %(levelname)s {who}%(message)s")
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    quiet_asyncssh_logging()  # thousands of sessions: do not format log lines nobody keeps
    limit = raise_file_limit()
    log.info("file descriptor limit %d", limit)
    try:
        if args.worker is None:
            asyncio.run(serve(args.dir.resolve()))
        else:
            asyncio.run(serve_worker(args.dir.resolve(), args.worker, args.channel_fd))
    except KadeployError as exc:
        print(f"fake testbed: {who}{exc.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
