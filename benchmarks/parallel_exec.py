#!/usr/bin/env python3
"""Benchmark (not a test): `hostname` on N sshd nodes with our executor, pdsh and clush.

Needs root: it builds its own lab of sshd nodes in network namespaces on the
bridge kbtbr0 (10.201.0.0/24, see tests/integration/remote/sshnodes.py) and
removes it at the end. Prints times and ratios side by side:

    python3 benchmarks/parallel_exec.py --nodes 64 [--nodes 128] [--fanout 64]

"ours (cold)" opens every SSH connection; "ours (warm)" reuses them, which is
what a deployment does between micro-steps; pdsh and clush reconnect each time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration" / "remote"))

from sshnodes import SshLab  # noqa: E402

from kadeploy.remote import Executor  # noqa: E402

SSH_OPTIONS = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR"


def _timed(command: list[str], env: dict[str, str] | None = None) -> tuple[float, int, int]:
    """Wall time, exit status and number of output lines of a command."""
    started = time.monotonic()
    completed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    return time.monotonic() - started, completed.returncode, len(completed.stdout.splitlines())


async def _ours(lab: SshLab, window: int, handshakes: int) -> tuple[float, float, int]:
    executor = Executor(lab.private_key, window=window, handshakes=handshakes)
    try:
        started = time.monotonic()
        cold = await executor.run(lab.hosts, "hostname")
        cold_seconds = time.monotonic() - started
        started = time.monotonic()
        warm = await executor.run(lab.hosts, "hostname")
        warm_seconds = time.monotonic() - started
    finally:
        await executor.close()
    ok = min(sum(r.ok for r in cold.values()), sum(r.ok for r in warm.values()))
    return cold_seconds, warm_seconds, ok


def run(count: int, fanout: int, handshakes: int) -> None:
    load_before = Path("/proc/loadavg").read_text().split()[0]  # the machine is shared: say how busy it was
    lab = SshLab.create(count)
    try:
        addresses = [node.address for node in lab.nodes]
        cold, warm, ok = asyncio.run(_ours(lab, fanout, handshakes))
        env = dict(os.environ, PDSH_SSH_ARGS=f"-i {lab.private_key} {SSH_OPTIONS} -l%u %h",
                   PDSH_RCMD_TYPE="ssh")
        pdsh_seconds, pdsh_status, pdsh_lines = _timed(
            ["pdsh", "-R", "ssh", "-l", "root", "-f", str(fanout), "-w", ",".join(addresses), "hostname"], env)
        clush_seconds, clush_status, clush_lines = _timed(
            ["clush", "-l", "root", "-f", str(fanout), "-o", f"-i {lab.private_key} {SSH_OPTIONS}",
             "-w", ",".join(addresses), "hostname"])
    finally:
        lab.teardown()
    print(f"\n== hostname on {count} nodes (fan-out {fanout}, {handshakes} concurrent handshakes; "
          f"load average before: {load_before}, after: {Path('/proc/loadavg').read_text().split()[0]}) ==")
    print(f"{'tool':<14}{'seconds':>9}{'vs pdsh':>9}  nodes ok")
    rows = [("ours (cold)", cold, ok), ("ours (warm)", warm, ok),
            ("pdsh", pdsh_seconds, pdsh_lines if pdsh_status == 0 else f"{pdsh_lines} (exit {pdsh_status})"),
            ("clush", clush_seconds, clush_lines if clush_status == 0 else f"{clush_lines} (exit {clush_status})")]
    for name, seconds, nodes_ok in rows:
        print(f"{name:<14}{seconds:>9.2f}{seconds / pdsh_seconds:>9.2f}  {nodes_ok}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, action="append", help="node count (repeatable; default 64)")
    parser.add_argument("--fanout", type=int, default=64, help="concurrent commands for every tool")
    parser.add_argument("--handshakes", type=int, default=32, help="our concurrent SSH handshakes")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces)")
    for count in args.nodes or [64]:
        run(count, args.fanout, args.handshakes)


if __name__ == "__main__":
    main()
