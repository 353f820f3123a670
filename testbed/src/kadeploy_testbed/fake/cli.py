"""testbed.fake room: `kadeploy-testbed up --mode fake` and `down` for a fake testbed.

`up(args)` validates the options, writes `<dir>/fake.json` and the
configuration directory, forks the daemon (`python -m
kadeploy_testbed.fake.daemon`) and waits until its control socket answers;
with `--fake-workers K` > 1 the daemon forks K worker processes, whose pids
`up` records too. `down(args)` asks the daemon to stop (every node powered
off, every worker stopped), then kills by their recorded pids those of its
processes that did not go. Neither needs root. `status`, `power` and
`fault` of the main CLI work unchanged: the daemon speaks their protocol.
Standalone: `python -m kadeploy_testbed.fake.cli --dir D up --nodes N ...`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from kadeploy.errors import ErrorCode, KadeployError
from kadeploy_testbed.cli import control
from kadeploy_testbed.fake.configdir import write_fake_config
from kadeploy_testbed.fake.model import FailureModel
from kadeploy_testbed.fake.settings import (
    DEFAULT_MARKER_PORT,
    DEFAULT_SSH_PORT,
    FakeSettings,
    default_workers,
    is_fake,
    load_settings,
    workers_needed,
)
from kadeploy_testbed.layout import DEFAULT_DIR
from kadeploy_testbed.state import control_socket

STOP_TIMEOUT = 30.0


def add_up_options(parser: argparse.ArgumentParser) -> None:
    """The options of `up --mode fake` (the netns ones it shares: --nodes, --clusters, --seed)."""
    parser.add_argument("--boot-time", default="2-4", help="seconds from power-on to sshd, LOW-HIGH (default 2-4)")
    parser.add_argument("--kexec-time", default="", help="seconds of a kexec reboot (default: a third of --boot-time)")
    parser.add_argument("--failure-rate", type=float, default=0.0, help="share of boots that hang (0-1)")
    parser.add_argument("--fail", action="append", default=[], metavar="KIND=RATE",
                        help="other failures: bmc, partition, format, mount, image, bootloader, kexec, command")
    parser.add_argument("--ssh-port", type=int, default=DEFAULT_SSH_PORT, help="nodes' sshd port (network/ports/ssh)")
    parser.add_argument("--server-port", type=int, default=25300, help="kadeploy3d port written in server.conf")
    parser.add_argument("--marker-port", type=int, default=DEFAULT_MARKER_PORT,
                        help="port a node opens in the deployment environment (network/ports/test_deploy_env); "
                             "fake testbeds sharing the host need distinct ones: their nodes share 127.1.x.y")
    parser.add_argument("--initial", choices=("prod", "off"), default="prod",
                        help="nodes start up on their production partition (default) or powered off")
    parser.add_argument("--no-inspect-images", dest="inspect_images", action="store_false",
                        help="do not decompress and walk images (saves the fake process CPU at scale)")
    parser.add_argument("--fake-workers", type=int, default=None, metavar="K",
                        help="processes serving the fake nodes, each a contiguous slice of them "
                             "(default: one per CPU, at most one per node, and as many as the nodes' file "
                             "descriptors need; 1: the daemon serves every node)")


def _daemon_alive(pid: int | None, directory: Path | None = None) -> bool:
    """Whether `pid` is still a fake daemon or worker (of `directory`, when given): never signal a reused pid."""
    if not pid:
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if b"kadeploy_testbed.fake.daemon" not in argv:
        return False
    return directory is None or str(directory).encode() in argv


def start_daemon(settings: FakeSettings) -> int:
    """Fork the daemon and wait until it answers; its log is `<dir>/daemon.log`."""
    directory = settings.path
    with open(directory / "daemon.log", "ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "kadeploy_testbed.fake.daemon", "--dir", str(directory)],
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    timeout = 60.0 + settings.nodes / 50
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = (directory / "daemon.log").read_text(errors="replace")[-1500:]
            raise KadeployError(ErrorCode.EXECUTE_ERROR, f"fake testbed daemon exited at start:\n{tail}")
        if control_socket(directory).exists():
            try:
                control(directory, {"op": "stats"}, timeout=5)
                return process.pid
            except KadeployError:
                pass
        time.sleep(0.1)
    process.kill()
    raise KadeployError(ErrorCode.EXECUTE_ERROR, f"fake testbed daemon not ready after {timeout:.0f}s")


def up(args: argparse.Namespace) -> int:
    """`kadeploy-testbed up --mode fake`: write the configuration, start the daemon."""
    directory: Path = Path(args.dir).resolve()
    if is_fake(directory):
        previous = load_settings(directory)
        if any(_daemon_alive(pid, directory) for pid in (previous.daemon_pid, *previous.worker_pids)):
            raise KadeployError(ErrorCode.INVALID_OPTION,
                                f"{directory}: a fake testbed is already up (run `down` first)")
    if (directory / "state.json").exists():
        raise KadeployError(ErrorCode.INVALID_OPTION, f"{directory}: holds a netns testbed; use another --dir")
    settings = FakeSettings(directory=str(directory), nodes=args.nodes, clusters=args.clusters,
                            seed=args.seed if args.seed is not None else 0, boot_time=args.boot_time,
                            kexec_time=args.kexec_time, failure_rate=args.failure_rate,
                            ssh_port=args.ssh_port, marker_port=getattr(args, "marker_port", DEFAULT_MARKER_PORT),
                            server_port=args.server_port, initial=args.initial,
                            inspect_images=args.inspect_images)
    workers = getattr(args, "fake_workers", None)
    settings.workers = workers if workers is not None else max(min(default_workers(), settings.nodes),
                                                               workers_needed(settings.nodes))
    settings.failures = FailureModel.parse(settings.seed, 0, args.fail).rates
    settings.validate()
    started = time.monotonic()
    settings.save()
    paths = write_fake_config(settings)
    settings.daemon_pid = start_daemon(settings)
    settings.worker_pids = [int(worker["pid"]) for worker in control(directory, {"op": "stats"}).get("workers", [])]
    settings.save()
    print(f"fake testbed up: {settings.nodes} nodes in {settings.clusters} cluster(s) in "
          f"{time.monotonic() - started:.1f}s (boot time {settings.boot_time}s, seed {settings.seed}, "
          f"{settings.workers} worker process{'es' if settings.workers > 1 else ''})")
    print(f"  configuration: {paths.etc}  (KADEPLOY3_CONFIG_DIR)")
    print(f"  node file:     {paths.nodes_file}")
    print(f"  nodes:         127.1.x.y, sshd on port {settings.ssh_port}, marker port {settings.marker_port}")
    print(f"  server:        kadeploy3d on 127.0.0.1:{settings.server_port}")
    return 0


def down(args: argparse.Namespace) -> int:
    """Stop the fake daemon (nodes powered off); the directory is kept."""
    directory = Path(args.dir).resolve()
    settings = load_settings(directory)
    started = time.monotonic()
    if control_socket(directory).exists():
        try:
            control(directory, {"op": "stop"}, timeout=10)
        except KadeployError:
            pass
    pids = [pid for pid in (settings.daemon_pid, *settings.worker_pids) if pid]
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline and any(_daemon_alive(pid, directory) for pid in pids):
        time.sleep(0.1)
    for pid in pids:
        if _daemon_alive(pid, directory):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    control_socket(directory).unlink(missing_ok=True)
    settings.daemon_pid = None
    settings.worker_pids = []
    settings.save()
    print(f"fake testbed down in {time.monotonic() - started:.1f}s")
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="kadeploy-testbed-fake", description="fake (scale) testbed on loopback")
    top.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    subs = top.add_subparsers(dest="command", required=True)
    up_parser = subs.add_parser("up", help="start a fake testbed")
    up_parser.add_argument("--nodes", type=int, required=True)
    up_parser.add_argument("--clusters", type=int, default=1)
    up_parser.add_argument("--seed", type=int, default=None)
    add_up_options(up_parser)
    up_parser.set_defaults(func=up)
    subs.add_parser("down", help="stop it").set_defaults(func=down)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KadeployError as exc:
        print(f"kadeploy-testbed {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
