"""testbed.fake room: the settings of a fake testbed, saved as `<dir>/fake.json`.

Why a file: `up` writes it and forks the daemon, which reads it (and so do
its worker processes); `down`, `status` and the benchmark find the pids of
the daemon and its workers and the socket through it; its presence is how
the `kadeploy-testbed` CLI tells a fake testbed from a netns one.
"""

from __future__ import annotations

import json
import os
import resource
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kadeploy.errors import ErrorCode, KadeployError
from kadeploy_testbed.fake.model import Distribution, FailureModel
from kadeploy_testbed.layout import NodeSpec, host_part, mac_for

SETTINGS_FILE = "fake.json"
MAX_FAKE_NODES = 254 * 200  # 127.1.1.1 .. 127.1.200.254
DEFAULT_SSH_PORT = 2222     # a high port: no root needed, no clash with the host's sshd
DEFAULT_MARKER_PORT = 25300  # Kadeploy3's test_deploy_env port
MAX_WORKERS = 64
#: descriptors a worker holds per node it serves, at most: the sshd's and the marker port's listeners,
#: a broadcast relay's listener, the server's SSH connection (flat mode)
FILES_PER_NODE = 4
#: and for the process itself: its logs, its control channel, in-flight connections between workers
FILES_SPARE = 256


def file_limit() -> int:
    """The descriptors a worker may open: its hard limit, which the daemon raises its soft limit to.

    (Raising the hard limit needs CAP_SYS_RESOURCE, which a container's root may lack: 20,000 here.)
    """
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def workers_needed(nodes: int, limit: int | None = None) -> int:
    """The fewest worker processes whose slices fit in `limit` descriptors each.

    A worker out of descriptors cannot accept (asyncio retries its listeners
    in a loop, logging each time: 6 GB of log in minutes at 10,000 nodes in one).
    """
    limit = file_limit() if limit is None else limit
    per_worker = max(1, (limit - FILES_SPARE) // FILES_PER_NODE)
    return -(-nodes // per_worker)


def default_workers() -> int:
    """One worker process per CPU this process may run on (`--fake-workers` default)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def worker_slices(nodes: int, workers: int) -> list[range]:
    """Positions (0-based, layout order) of the nodes each worker serves: contiguous, sizes within one.

    Contiguous because the broadcast chain follows the nodes' natural order:
    only the link across each slice boundary (and repairs around a dead node
    there) leaves a worker and needs a real TCP connection.
    """
    return [range(nodes * index // workers, nodes * (index + 1) // workers) for index in range(workers)]


@dataclass
class FakeSettings:
    """Everything the fake daemon needs; `nodes`/`clusters` rebuild the layout deterministically."""

    directory: str
    nodes: int
    clusters: int = 1
    seed: int = 0
    boot_time: str = "2-4"          # seconds from power-on to sshd, uniform (firmware included)
    kexec_time: str = ""            # default: a third of boot_time
    failure_rate: float = 0.0       # share of boots that hang
    failures: dict[str, float] = field(default_factory=dict)  # other kinds (model.FAILURE_KINDS)
    ssh_port: int = DEFAULT_SSH_PORT
    marker_port: int = DEFAULT_MARKER_PORT  # network/ports/test_deploy_env
    server_port: int = 25300        # kadeploy3d on 127.0.0.1
    initial: str = "prod"           # prod (up on the production partition) or off
    relay_buffer: int = 256 * 1024
    firmware_share: float = 0.3     # part of the boot before the PXE profile is read
    inspect_images: bool = True     # decompress and walk tar images (CPU of the fake process)
    workers: int = 1                # processes serving slices of the nodes (1: the daemon serves all)
    daemon_pid: int | None = None
    worker_pids: list[int] = field(default_factory=list)  # recorded by `up` so that `down` can reap them

    @property
    def path(self) -> Path:
        return Path(self.directory)

    def boot_distribution(self) -> Distribution:
        return Distribution.parse(self.boot_time, "--boot-time")

    def kexec_distribution(self) -> Distribution:
        if self.kexec_time:
            return Distribution.parse(self.kexec_time, "--kexec-time")
        boot = self.boot_distribution()
        return Distribution(boot.low / 3, boot.high / 3)

    def failure_model(self) -> FailureModel:
        rates = dict(self.failures)
        if self.failure_rate:
            rates["boot"] = self.failure_rate
        return FailureModel(self.seed, rates)

    def validate(self) -> None:
        if not 1 <= self.nodes <= MAX_FAKE_NODES:
            raise KadeployError(ErrorCode.INVALID_OPTION, f"--nodes {self.nodes}: must be between 1 and {MAX_FAKE_NODES}")
        if not 1 <= self.clusters <= self.nodes:
            raise KadeployError(ErrorCode.INVALID_OPTION,
                                f"--clusters {self.clusters}: must be between 1 and the number of nodes ({self.nodes})")
        if not 1 <= self.workers <= min(self.nodes, MAX_WORKERS):
            raise KadeployError(ErrorCode.INVALID_OPTION,
                                f"--fake-workers {self.workers}: must be between 1 and "
                                f"{min(self.nodes, MAX_WORKERS)} (at most one per node, {MAX_WORKERS} in all)")
        needed = workers_needed(self.nodes)
        if self.workers < needed:
            raise KadeployError(ErrorCode.INVALID_OPTION,
                                f"--fake-workers {self.workers}: {self.nodes} nodes need at least {needed} worker "
                                f"processes here (up to {FILES_PER_NODE} file descriptors per node, "
                                f"{file_limit()} per process: ulimit -Hn)")
        if self.initial not in ("prod", "off"):
            raise KadeployError(ErrorCode.INVALID_OPTION, f"--initial {self.initial!r}: expected prod or off")
        self.boot_distribution()
        self.kexec_distribution()
        self.failure_model()
        if not 0.0 <= self.failure_rate <= 1.0:
            raise KadeployError(ErrorCode.INVALID_OPTION, f"--failure-rate {self.failure_rate}: must be within 0-1")

    def save(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=self.path, prefix=".fake-")
        with os.fdopen(fd, "w") as handle:
            json.dump(asdict(self), handle, indent=2, sort_keys=True)
        os.replace(temp, self.path / SETTINGS_FILE)


def is_fake(directory: Path) -> bool:
    """Whether `directory` holds a fake testbed (the CLI's `down`/`status` dispatch on this)."""
    return (Path(directory) / SETTINGS_FILE).exists()


def load_settings(directory: Path) -> FakeSettings:
    path = Path(directory) / SETTINGS_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise KadeployError(ErrorCode.INVALID_FILE, f"{path}: no fake testbed here (run `kadeploy-testbed up --mode fake`)") from None
    except (OSError, ValueError) as exc:
        raise KadeployError(ErrorCode.INVALID_FILE, f"{path}: unreadable: {exc}") from None
    known = FakeSettings.__dataclass_fields__
    return FakeSettings(**{key: value for key, value in data.items() if key in known})


def fake_ip(index: int) -> str:
    """Loopback address of node `index` (1-based): 127.1.<1+(k-1)//254>.<1+(k-1)%254>."""
    third, fourth = host_part(index)
    return f"127.1.{third}.{fourth}"


def fake_layout(nodes: int, clusters: int):
    """The netns layout's names and cluster split, with loopback addresses."""
    from kadeploy_testbed.layout import Layout
    if not 1 <= nodes <= MAX_FAKE_NODES:
        raise KadeployError(ErrorCode.INVALID_OPTION, f"--nodes {nodes}: must be between 1 and {MAX_FAKE_NODES}")
    if not 1 <= clusters <= nodes:
        raise KadeployError(ErrorCode.INVALID_OPTION,
                            f"--clusters {clusters}: must be between 1 and the number of nodes ({nodes})")
    names = tuple(f"c{j + 1}" for j in range(clusters))
    base, extra = divmod(nodes, clusters)
    specs: list[NodeSpec] = []
    index = 1
    for j, cluster in enumerate(names):
        for _ in range(base + (1 if j < extra else 0)):
            ip = fake_ip(index)
            specs.append(NodeSpec(index=index, cluster=cluster, ip=ip, mac=mac_for(ip), bmc_ip=""))
            index += 1
    return Layout(nodes=tuple(specs), clusters=names)
