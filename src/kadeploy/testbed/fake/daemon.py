"""testbed.fake room: the fake testbed daemon — N nodes, their sshd, their BMCs, one event loop.

`python -m kadeploy.testbed.fake.daemon --dir D` (forked by `up --mode fake`)
reads `<D>/fake.json`, serves every node's SSH endpoint with asyncssh on its
127.1.x.y address and the control socket `<D>/run/control.sock`, which speaks
the netns daemon's JSON-lines protocol (`status`, `power`, `fault`, `stop`)
so that `kadeploy-testbed status|power|fault` and the cluster's power
commands work unchanged; `stats` adds what the benchmark reads. Power commands
reach it through `etc/scripts/fake-bmc` (sh + socat: a few ms per call, no
Python start-up per reboot).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import resource
import signal
import sys
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import asyncssh

from kadeploy.errors import KadeployError
from kadeploy.remote.tuning import quiet_asyncssh_logging
from kadeploy.testbed.configdir import DEPLOY_KERNEL
from kadeploy.testbed.fake.model import Distribution, FailureModel, draw
from kadeploy.testbed.fake.node import FakeNode, kernel_file
from kadeploy.testbed.fake.settings import FakeSettings, fake_layout, load_settings
from kadeploy.testbed.fake.sinks import FileIndex
from kadeploy.testbed.fake.sshd import start_node_sshd
from kadeploy.testbed.state import control_socket

log = logging.getLogger("kadeploy.testbed.fake")

CONTROL_READ_TIMEOUT = 30.0
NOFILE_WANTED = 1 << 17


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

    def draw(self, node: int, event: str, count: int) -> float:
        return draw(self.settings.seed, node, event, count)

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
    """The daemon: nodes, control socket, lifetime."""

    def __init__(self, settings: FakeSettings) -> None:
        self.settings = settings
        self.context = FakeContext(settings)
        self.layout = fake_layout(settings.nodes, settings.clusters)
        self.nodes = {spec.hostname: FakeNode(spec, self.context) for spec in self.layout.nodes}
        self._by_name: dict[str, FakeNode] = {}
        for node in self.nodes.values():
            for name in (node.hostname, node.spec.short_name, node.spec.ip):
                self._by_name[name] = node
        self.stopped = asyncio.Event()
        self._control: asyncio.AbstractServer | None = None
        self._read_deploy_partitions()

    def _read_deploy_partitions(self) -> None:
        import yaml
        for cluster in self.layout.clusters:
            try:
                data = yaml.safe_load((self.settings.path / "etc" / f"{cluster}.conf").read_text())
                self.context.deploy_partition[cluster] = int(data["partitioning"]["partitions"]["deploy"])
            except (OSError, KeyError, TypeError, ValueError):
                self.context.deploy_partition[cluster] = 3

    async def start(self) -> None:
        if self.settings.initial == "prod":
            for node in self.nodes.values():
                node.initial_prod()
        path = control_socket(self.settings.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        self._control = await asyncio.start_unix_server(self._handle, path=str(path), limit=1 << 20)

    async def stop(self) -> None:
        if self._control is not None:
            self._control.close()
        await asyncio.gather(*(node.act("off") for node in self.nodes.values()), return_exceptions=True)
        control_socket(self.settings.path).unlink(missing_ok=True)
        self.stopped.set()

    def node(self, name: str) -> FakeNode:
        node = self._by_name.get(name)
        if node is None:
            raise KadeployError(0, f"{name}: not a node of this testbed")
        return node

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), CONTROL_READ_TIMEOUT)
            try:
                request = json.loads(line)
                answer = await self.dispatch(request)
            except KadeployError as exc:
                answer = {"ok": False, "error": exc.message}
            except (ValueError, KeyError, TypeError) as exc:
                answer = {"ok": False, "error": f"bad request: {exc}"}
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        except (TimeoutError, OSError):
            pass
        finally:
            writer.close()

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
            if kind not in ("firmware-delay", "boot-failure-rate"):
                raise KadeployError(0, f"fault {kind!r} is not supported in fake mode (firmware-delay, boot-failure-rate)")
            if value == "off":
                node.overrides.pop(kind, None)
            else:
                float(value)
                node.overrides[kind] = value
            return {"ok": True}
        if op == "stats":
            counts: dict[str, int] = {}
            for node in self.nodes.values():
                counts[node.phase.split()[0]] = counts.get(node.phase.split()[0], 0) + 1
            usage = resource.getrusage(resource.RUSAGE_SELF)
            return {"ok": True, "phases": counts, "cpu": usage.ru_utime + usage.ru_stime,
                    "max_rss_kib": usage.ru_maxrss}
        if op == "stop":
            asyncio.get_running_loop().call_soon(lambda: self.context.spawn(self.stop()))
            return {"ok": True}
        raise KadeployError(0, f"unknown op {op!r}")


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
    settings = load_settings(directory)
    testbed = FakeTestbed(settings)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, lambda: testbed.context.spawn(testbed.stop()))
    await testbed.start()
    log.info("fake testbed: %d nodes up", len(testbed.nodes))
    await testbed.stopped.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kadeploy-testbed-fake-daemon")
    parser.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    quiet_asyncssh_logging()  # thousands of sessions: do not format log lines nobody keeps
    limit = raise_file_limit()
    log.info("file descriptor limit %d", limit)
    try:
        asyncio.run(serve(args.dir.resolve()))
    except KadeployError as exc:
        print(f"fake testbed: {exc.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
