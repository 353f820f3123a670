#!/usr/bin/env python3
"""Benchmark (not a test): `hostname` on N sshd nodes with our executor (flat and tree), pdsh, clush and TakTuk.

Needs root: it builds its own lab of sshd nodes in network namespaces on the
bridge kbtbr0 (10.201.0.0/23, see tests/integration/remote/sshnodes.py) and
removes it at the end. Prints times and ratios side by side:

    python3 benchmarks/parallel_exec.py --nodes 64 [--nodes 128] [--fanout 64] [--arity 8]

"ours (cold)" opens every SSH connection; "ours (warm)" reuses them, which is
what a deployment does between micro-steps; pdsh and clush reconnect each time.
"tree" is the executor's tree mode (remote/tree.py) at `--arity`: the server
holds `arity` connections, the agents it sends reach the other nodes with
`ssh -A`; warm, only the first level's connections are reused. TakTuk (Debian's
`taktuk`, self-propagated with -s, dynamic arity -d `--arity`) is the design
it follows. "server CPU" is this process's CPU for ours and the local
processes' (children's) CPU for the other tools.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration" / "remote"))

from sshnodes import SshLab  # noqa: E402

from kadeploy.remote import Executor  # noqa: E402
from kadeploy.remote.tree import DEFAULT_ARITY, TreeOptions  # noqa: E402

SSH_OPTIONS = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _timed(command: list[str], env: dict[str, str] | None = None,
           count_output: str | None = None) -> tuple[float, float, int, int]:
    """Wall time, local CPU, exit status and number of output lines (containing `count_output`)."""
    cpu = _children_cpu()
    started = time.monotonic()
    completed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    lines = [line for line in completed.stdout.splitlines() if count_output is None or count_output in line]
    return time.monotonic() - started, _children_cpu() - cpu, completed.returncode, len(lines)


async def _ours(lab: SshLab, window: int, handshakes: int,
                tree: TreeOptions | None) -> list[tuple[float, float, int]]:
    """(seconds, server CPU, nodes ok) cold then warm."""
    executor = Executor(lab.private_key, window=window, handshakes=handshakes, tree=tree, tree_from=1)
    rows = []
    try:
        for _ in ("cold", "warm"):
            cpu = _own_cpu()
            started = time.monotonic()
            results = await executor.run(lab.hosts, "hostname")
            rows.append((time.monotonic() - started, _own_cpu() - cpu, sum(r.ok for r in results.values())))
            assert executor.last_mode == ("tree" if tree else "flat")
    finally:
        await executor.close()
    return rows


def _tool_row(name: str, timed: tuple[float, float, int, int]) -> tuple[str, float, float, object]:
    seconds, cpu, status, lines = timed
    return (name, seconds, cpu, lines if status == 0 else f"{lines} (exit {status})")


def run(count: int, fanout: int, handshakes: int, arity: int) -> None:
    load_before = Path("/proc/loadavg").read_text().split()[0]  # the machine is shared: say how busy it was
    lab = SshLab.create(count)
    try:
        addresses = [node.address for node in lab.nodes]
        flat = asyncio.run(_ours(lab, fanout, handshakes, None))
        # the lab's nodes share the host's /tmp: their per-run locks go to the lab's directory
        tree = asyncio.run(_ours(lab, fanout, handshakes, TreeOptions(arity=arity, lock_dir=str(lab.workdir))))
        env = dict(os.environ, PDSH_SSH_ARGS=f"-i {lab.private_key} {SSH_OPTIONS} -l%u %h",
                   PDSH_RCMD_TYPE="ssh")
        pdsh = _timed(["pdsh", "-R", "ssh", "-l", "root", "-f", str(fanout), "-w", ",".join(addresses),
                       "hostname"], env)
        clush = _timed(["clush", "-l", "root", "-f", str(fanout), "-o", f"-i {lab.private_key} {SSH_OPTIONS}",
                        "-w", ",".join(addresses), "hostname"])
        taktuk = None
        if shutil.which("taktuk"):
            machines = [arg for address in addresses for arg in ("-m", address)]
            taktuk = _timed(["taktuk", "-s", "-d", str(arity), "-l", "root",
                             "-c", f"ssh -i {lab.private_key} {SSH_OPTIONS}", *machines,
                             "broadcast", "exec", "[", "hostname", "]"], count_output=": output >")
    finally:
        lab.teardown()
    print(f"\n== hostname on {count} nodes (fan-out {fanout}, {handshakes} concurrent handshakes, tree arity "
          f"{arity}; load average before: {load_before}, after: {Path('/proc/loadavg').read_text().split()[0]}) ==")
    print(f"{'tool':<18}{'seconds':>9}{'vs pdsh':>9}{'vs taktuk':>10}{'server CPU':>12}  nodes ok")
    rows = [("ours flat (cold)", *flat[0]), ("ours flat (warm)", *flat[1]),
            ("ours tree (cold)", *tree[0]), ("ours tree (warm)", *tree[1]),
            _tool_row("pdsh", pdsh), _tool_row("clush", clush)]
    if taktuk is not None:
        rows.append(_tool_row("taktuk", taktuk))
    else:
        rows.append(("taktuk", float("nan"), float("nan"), "not installed"))
    for name, seconds, cpu, nodes_ok in rows:
        versus_taktuk = seconds / taktuk[0] if taktuk is not None else float("nan")
        print(f"{name:<18}{seconds:>9.2f}{seconds / pdsh[0]:>9.2f}{versus_taktuk:>10.2f}{cpu:>12.2f}  {nodes_ok}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, action="append", help="node count (repeatable; default 64)")
    parser.add_argument("--fanout", type=int, default=64, help="concurrent commands for every tool")
    parser.add_argument("--handshakes", type=int, default=32, help="our concurrent SSH handshakes")
    parser.add_argument("--arity", type=int, default=DEFAULT_ARITY, help="tree arity (ours and TakTuk's -d)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces)")
    for count in args.nodes or [64]:
        run(count, args.fanout, args.handshakes, args.arity)


if __name__ == "__main__":
    main()
