"""testbed.fake room: driving a real kadeploy3d against a fake testbed (tests and benchmarks).

Why here and not in a test file: the CI test and `benchmarks/scale.py` do the
same things — bring a fake testbed up, start the real server as a
subprocess on its configuration, make a tiny image, deploy through the HTTP
API, read back the nodes' states and stats records — and must not drift.
Everything waits with a timeout and stops only the processes it started.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import os
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from kadeploy_testbed.answering import NotAnswering, wait_answering
from kadeploy_testbed.cli import control
from kadeploy_testbed.fake import cli as fake_cli
from kadeploy_testbed.fake.configdir import envs_dir
from kadeploy_testbed.fake.settings import DEFAULT_MARKER_PORT, FakeSettings, load_settings

USER_HEADERS = {"X-Kadeploy-User": "root"}
STATS_FIELDS = ("wid", "hostname", "step1", "step2", "step3", "retry_step1", "retry_step2", "retry_step3",
                "step1_duration", "step2_duration", "step3_duration", "success", "error")
DUMMY_AUTOMATA = {interface: [{"name": f"{interface}Dummy", "retries": 0, "timeout": 600}]
                  for interface in ("SetDeploymentEnv", "BroadcastEnv", "BootNewEnv")}


def up(directory: Path, nodes: int, *, server_port: int, boot_time: str = "1-2", seed: int = 1,
       failure_rate: float = 0.0, fail: list[str] | None = None, clusters: int = 1,
       inspect_images: bool = True, ssh_port: int = 2222,
       marker_port: int = DEFAULT_MARKER_PORT, workers: int | None = None,
       initial: str = "prod") -> FakeSettings:
    """`kadeploy-testbed up --mode fake` with these options; returns the saved settings.

    `workers` None is the CLI's default (one worker process per CPU).
    """
    args = argparse.Namespace(dir=directory, nodes=nodes, clusters=clusters, seed=seed, boot_time=boot_time,
                              kexec_time="", failure_rate=failure_rate, fail=list(fail or []), ssh_port=ssh_port,
                              marker_port=marker_port, fake_workers=workers,
                              server_port=server_port, initial=initial, inspect_images=inspect_images)
    with open(os.devnull, "w") as quiet:
        stdout, sys.stdout = sys.stdout, quiet
        try:
            fake_cli.up(args)
        finally:
            sys.stdout = stdout
    return load_settings(directory)


def down(directory: Path) -> None:
    with open(os.devnull, "w") as quiet:
        stdout, sys.stdout = sys.stdout, quiet
        try:
            fake_cli.down(argparse.Namespace(dir=directory))
        finally:
            sys.stdout = stdout


def make_tiny_image(directory: Path, payload: int = 4096) -> tuple[Path, str]:
    """A gzip tarball with /vmlinuz and /initrd.img symlinks into /boot; (path, sha256)."""
    path = directory / "tiny.tgz"
    with tarfile.open(path, mode="w:gz") as tar:
        for name, size in (("boot/vmlinuz-6.1.0", payload), ("boot/initrd.img-6.1.0", payload // 2),
                           ("etc/hostname", 8)):
            info = tarfile.TarInfo(name)
            info.size = size
            tar.addfile(info, io.BytesIO(os.urandom(size)))
        for link, target in (("vmlinuz", "boot/vmlinuz-6.1.0"), ("initrd.img", "boot/initrd.img-6.1.0")):
            info = tarfile.TarInfo(link)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def tiny_environment(settings: FakeSettings, image: Path | None = None) -> tuple[dict[str, Any], str]:
    """An anonymous environment description for the tiny image (made in `<dir>/envs`)."""
    if image is None:
        image, digest = make_tiny_image(envs_dir(settings))
    else:
        digest = hashlib.sha256(image.read_bytes()).hexdigest()
    environment = {"kind": "anonymous", "name": "tiny", "os": "linux", "filesystem": "ext4",
                   "boot": {"kernel": "/vmlinuz", "initrd": "/initrd.img"},
                   "image": {"file": f"server://{image}", "kind": "tar", "compression": "gzip"}}
    return environment, digest


@dataclass
class Server:
    """A kadeploy3d subprocess on a fake testbed's configuration."""

    process: subprocess.Popen[bytes]
    base: str
    log_dir: Path

    def cpu_seconds(self) -> float:
        """User + system CPU of the server process (children not included)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def rss_kib(self) -> tuple[int, int]:
        """(current, peak) resident memory of the server process in KiB."""
        values = {}
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(value.split()[0])
        return values.get("VmRSS", 0), values.get("VmHWM", 0)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_server(settings: FakeSettings, *, timeout: float = 90.0, env: dict[str, str] | None = None) -> Server:
    """Start `kadeploy3d` (python -m kadeploy.server.daemon) on the testbed's etc/ and wait for /version.

    `env`: more environment variables for the server (e.g. KADEPLOY_TREE_FROM).
    """
    directory = settings.path
    env = {**os.environ, **(env or {}), "KADEPLOY3_CONFIG_DIR": str(directory / "etc"),
           "KADEPLOY3_LOG_DIR": str(directory / "server-log"), "KADEPLOY3_RUN_DIR": str(directory / "server-run")}
    process = subprocess.Popen([sys.executable, "-m", "kadeploy.server.daemon"], env=env,
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               start_new_session=True, preexec_fn=_raise_nofile)  # noqa: PLW1509 - no threads here
    base = f"http://127.0.0.1:{settings.server_port}"
    try:
        wait_answering(f"{base}/version", process, timeout,
                       printed=lambda: process.stderr.read().decode(errors="replace")[-2000:]
                       if process.poll() is not None else "")
    except NotAnswering:
        process.kill()
        raise
    return Server(process, base, directory / "server-log")


def _raise_nofile() -> None:
    import resource
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@dataclass
class Deployment:
    wid: str
    seconds: float
    ok: list[str]
    ko: list[str]
    info: dict[str, Any] = field(default_factory=dict)


def deploy(server: Server, nodes: list[str], environment: dict[str, Any], *, timeout: float,
           automata: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> Deployment:
    """POST /deployment and poll until done; raises TimeoutError after `timeout`."""
    body: dict[str, Any] = {"nodes": nodes, "environment": environment, **(extra or {})}
    if automata is not None:
        body["automata"] = automata
    with httpx.Client(base_url=server.base, headers=USER_HEADERS, timeout=60) as client:
        started = time.monotonic()
        response = client.post("/deployment", json=body)
        if response.status_code != 200:
            raise RuntimeError(f"deployment refused: {response.status_code} {response.text[:500]}")
        wid = response.json()["wid"]
        deadline = started + timeout
        while True:
            info = client.get(f"/deployment/{wid}").json()
            if info.get("done"):
                break
            if time.monotonic() > deadline:
                client.delete(f"/deployment/{wid}")
                raise TimeoutError(f"deployment {wid} not done after {timeout:g}s")
            time.sleep(0.5)
        seconds = time.monotonic() - started
        return Deployment(wid, seconds, list(info["nodes"]["ok"]), list(info["nodes"]["ko"]), info)


def logs(server: Server, wid: str) -> str:
    return httpx.get(f"{server.base}/deployment/{wid}/logs", headers=USER_HEADERS, timeout=60).text


def stats(server: Server, wid: str) -> dict[str, dict[str, str]]:
    """The stats records of one workflow, by hostname (GET /stats, CSV)."""
    response = httpx.get(f"{server.base}/stats/deploy", headers=USER_HEADERS, timeout=60,
                         params=[("wid", wid), *(("fields", name) for name in STATS_FIELDS)])
    response.raise_for_status()
    rows = {}
    for row in csv.reader(io.StringIO(response.text)):
        if row and row[0] == wid:
            rows[row[1]] = dict(zip(STATS_FIELDS, row))
    return rows


def node_status(settings: FakeSettings) -> dict[str, dict[str, Any]]:
    answer = control(settings.path, {"op": "status"}, timeout=60)
    return {entry["node"]: entry for entry in answer["nodes"]}


def fake_stats(settings: FakeSettings) -> dict[str, Any]:
    return control(settings.path, {"op": "stats"}, timeout=60)


class SshConnectionSampler:
    """The SSH connections the server holds to the nodes, sampled with `ss` (peak and samples).

    Why sampled from outside: the count is what the kernel sees the server
    process hold, whatever the executor believes. A connection counts as held
    when two consecutive samples (`period` apart) show it: the server's port
    probes (wait_reboot's TCP connects to the SSH port) last milliseconds and
    are not SSH connections. A thread, so that the caller's blocking `deploy`
    is left alone.
    """

    def __init__(self, server: Server, ssh_port: int, period: float = 0.5) -> None:
        import threading
        self.pid = server.process.pid
        self.port = ssh_port
        self.period = period
        self.samples: list[tuple[float, int]] = []   # (wall time, connections held)
        self._previous: set[tuple[str, str]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ssh-sampler", daemon=True)

    def connections(self) -> set[tuple[str, str]]:
        """(local, peer) of the server's established connections to the nodes' SSH port."""
        answer = subprocess.run(["ss", "-tnpH", "state", "established", f"( dport = :{self.port} )"],
                                capture_output=True, text=True, timeout=30, check=False)
        needle = f"pid={self.pid},"
        found = set()
        for line in answer.stdout.splitlines():
            words = line.split()
            if needle in line and len(words) >= 4:
                found.add((words[2], words[3]))
        return found

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            when = time.time()
            current = self.connections()
            self.samples.append((when, len(current & self._previous)))
            self._previous = current

    @property
    def peak(self) -> int:
        return max((count for _, count in self.samples), default=0)

    def __enter__(self) -> SshConnectionSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
