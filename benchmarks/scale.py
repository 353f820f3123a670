#!/usr/bin/env python3
"""Scale benchmark: what one node costs the server, on a fake testbed (not a test).

For each N (default 100, 1000, 4000) it brings a fake testbed up, starts the
real kadeploy3d on its configuration and deploys every node twice: with
Dummy steps (the server's own overhead: API, engine, DB, output) and with
real steps and a tiny image (SSH fan-out, reboots, probes, broadcast). It
prints wall time, server CPU seconds per node, peak server RSS (and per node),
DB rows written, the step timing breakdown from the stats records, and for
real steps the ratio of the wall time to the slowest node's boot-and-broadcast
time. `--model` runs the seeds' scenario instead: boot delays 60-120 s,
a few percent of reboot failures, windows of 50, with and without
automatic retry (`--retry-failed 1`).

The real deployments run once per executor mode (`--modes`, default flat and
tree), each with its own kadeploy3d on the same testbed (KADEPLOY_TREE_FROM:
N+1 for flat, 2 for tree; the fake nodes host the real agent's logic), so that
the server's CPU and peak RSS are its own; the SSH connections the server
holds are sampled with `ss`. The closing table lists both modes at every N,
and `--png` draws the per-node server CPU and memory against N.

    python3 benchmarks/scale.py --nodes 100 1000 --boot-time 2-4
    python3 benchmarks/scale.py --nodes 4000 --boot-time 60-120 --model
"""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from kadeploy.remote.tree import TREE_FROM_VARIABLE
from kadeploy_testbed.fake import harness

TARGET_CPU_MS = 20.0
TARGET_RSS_KIB = 200.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def db_rows(database: Path) -> dict[str, int]:
    with sqlite3.connect(database) as conn:
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {table: conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0] for table in tables
                if table != "alembic_version"}


def breakdown(records: dict[str, dict[str, str]]) -> str:
    parts = []
    for index in (1, 2, 3):
        values = [int(r[f"step{index}_duration"] or 0) for r in records.values() if r.get(f"step{index}")]
        if values:
            names = sorted({r[f"step{index}"] for r in records.values() if r.get(f"step{index}")})
            parts.append(f"{'/'.join(names)} median {statistics.median(values):.0f}s max {max(values)}s")
    return "; ".join(parts)


def run(nodes: int, args: argparse.Namespace, figures: list[Figure]) -> None:
    if args.dir is not None:
        # a fixed directory (and ports) lets several benchmarks share a machine without colliding
        directory = args.dir
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True)
    else:
        directory = Path(tempfile.mkdtemp(prefix=f"kadeploy-scale-{nodes}-"))
    fail = [f"image={args.image_failure}"] if args.image_failure else []
    settings = harness.up(directory, nodes, server_port=args.server_port or free_port(), boot_time=args.boot_time,
                          seed=args.seed, failure_rate=args.failure_rate, fail=fail,
                          inspect_images=not args.no_inspect, ssh_port=args.ssh_port,
                          marker_port=args.marker_port, workers=args.fake_workers)
    try:
        for mode in args.modes:
            run_mode(nodes, mode, settings, args, figures)
    finally:
        harness.down(directory)
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)


def run_mode(nodes: int, mode: str, settings: harness.FakeSettings, args: argparse.Namespace,
             figures: list[Figure]) -> None:
    """One server process with the executor in `mode` (its own CPU and peak RSS), its deployments."""
    # flat: the tree never reached (its crossing above N); tree: every run of 2 nodes or more
    tree_from = str(nodes + 1) if mode == "flat" else "2"
    server = harness.start_server(settings, env={TREE_FROM_VARIABLE: tree_from})
    if args.profile:
        profiler = subprocess.Popen(["py-spy", "record", "--nonblocking", "-r", "50", "-f", "raw", "-o",
                                     str(args.profile), "--pid", str(server.process.pid)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        environment, _ = harness.tiny_environment(settings)
        hostnames = (settings.path / "nodes").read_text().split()
        kinds = [("dummy", harness.DUMMY_AUTOMATA, {})] if not args.model and mode == args.modes[0] else []
        if not args.dummy_only:
            if args.model:
                kinds += [("model, no retry", None, {}), ("model, retry 1", None, {"retry_failed": 1})]
            else:
                kinds.append(("real", None, {}))
        for label, automata, extra in kinds:
            rows_before = db_rows(settings.path / "kadeploy.db")
            cpu_before = server.cpu_seconds()
            boots_before = {n: len(s["boots"]) for n, s in harness.node_status(settings).items()}
            with harness.SshConnectionSampler(server, settings.ssh_port) as sampler:
                result = harness.deploy(server, hostnames, environment, timeout=args.timeout,
                                        automata=automata, extra=extra)
            cpu = server.cpu_seconds() - cpu_before
            rss, peak = server.rss_kib()
            # "done" is answered before the stats rows are committed and the claims released: wait for both
            settle = time.monotonic() + 60
            while True:
                records = harness.stats(server, result.wid)
                rows = {k: v - rows_before.get(k, 0) for k, v in db_rows(settings.path / "kadeploy.db").items()}
                if (len(records) >= nodes and rows.get("node_claims", 0) <= 0) or time.monotonic() > settle:
                    break
                time.sleep(0.5)
            if label != "dummy":
                figures.append(Figure(nodes, mode, label, result.seconds, 1000 * cpu / nodes, peak / nodes,
                                      sampler.peak))
            line = (f"N={nodes:<5} {mode + ' ' + label:<21} wall {result.seconds:7.1f}s  ok {len(result.ok)}/{nodes}  "
                    f"server CPU {cpu:6.1f}s = {1000 * cpu / nodes:5.1f} ms/node (target <= {TARGET_CPU_MS:g})  "
                    f"peak RSS {peak / 1024:6.0f} MiB = {peak / nodes:6.0f} KiB/node, now {rss / 1024:.0f} MiB  "
                    f"server SSH connections peak {sampler.peak}  DB rows inserted {sum(rows.values())} {rows}")
            print(line, flush=True)
            print(f"        steps: {breakdown(records)}", flush=True)
            if label != "dummy":
                status = harness.node_status(settings)
                slowest = 0.0
                for node, entry in status.items():
                    new = entry["boots"][boots_before.get(node, 0):]
                    slowest = max(slowest, sum(seconds for _, seconds in new))
                broadcast = max((int(r["step2_duration"] or 0) for r in records.values()), default=0)
                bound = slowest + broadcast
                print(f"        slowest node boots {slowest:.1f}s + broadcast {broadcast}s = {bound:.1f}s; "
                      f"wall/bound = {result.seconds / bound if bound else float('nan'):.2f} (target <= 1.2)",
                      flush=True)
                if result.ko:
                    errors: dict[str, int] = {}
                    for record in records.values():
                        if record["success"] != "true":
                            errors[record["error"][:70]] = errors.get(record["error"][:70], 0) + 1
                    print(f"        KO {len(result.ko)} ({100 * len(result.ko) / nodes:.1f}%): {errors}", flush=True)
            fake = harness.fake_stats(settings)
            workers = fake.get("workers", [])
            split = ""
            if workers:
                split = (" = " + " + ".join(f"{w['cpu']:.0f}" for w in workers)
                         + f" (workers) + {fake['daemon']['cpu']:.0f} (daemon)")
            print(f"        fake testbed: {max(1, len(workers))} worker process(es), CPU {fake['cpu']:.0f}s{split} "
                  f"since up, max RSS {fake['max_rss_kib'] / 1024:.0f} MiB, relay links {fake.get('links', {})}",
                  flush=True)
    finally:
        if args.profile:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(timeout=60)
        server.stop()


@dataclass(frozen=True)
class Figure:
    """One deployment's per-node server costs (for the table and the PNG)."""

    nodes: int
    mode: str
    label: str
    wall: float
    cpu_ms_per_node: float
    rss_kib_per_node: float
    connections: int


def summary(figures: list[Figure]) -> str:
    lines = ["| N | mode | deployment | wall s | server CPU ms/node | peak RSS KiB/node | server SSH connections (peak) |",
             "|---|---|---|---|---|---|---|"]
    for f in figures:
        lines.append(f"| {f.nodes} | {f.mode} | {f.label} | {f.wall:.1f} | {f.cpu_ms_per_node:.1f} | "
                     f"{f.rss_kib_per_node:.0f} | {f.connections} |")
    return "\n".join(lines)


def draw(figures: list[Figure], path: Path) -> None:
    """Per-node server CPU and peak memory against N, one line per mode (matplotlib, the test extra)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (cpu_axis, rss_axis) = plt.subplots(1, 2, figsize=(10, 4))
    for mode in sorted({f.mode for f in figures}):
        points = sorted((f.nodes, f.cpu_ms_per_node, f.rss_kib_per_node) for f in figures if f.mode == mode)
        xs = [p[0] for p in points]
        cpu_axis.plot(xs, [p[1] for p in points], marker="o", label=mode)
        rss_axis.plot(xs, [p[2] for p in points], marker="o", label=mode)
    for axis, title in ((cpu_axis, "server CPU per node (ms)"), (rss_axis, "server peak RSS per node (KiB)")):
        axis.set_xscale("log")
        axis.set_xlabel("nodes (N)")
        axis.set_title(title)
        axis.legend()
        axis.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, nargs="+", default=[100, 1000, 4000])
    parser.add_argument("--boot-time", default="2-4", help="fake boot delay distribution, LOW-HIGH seconds")
    parser.add_argument("--failure-rate", type=float, default=0.0, help="share of boots that hang")
    parser.add_argument("--image-failure", type=float, default=0.0, help="share of image pipelines that fail")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--dummy-only", action="store_true")
    parser.add_argument("--dir", type=Path, help="testbed directory (default: a new temporary one; removed first)")
    parser.add_argument("--ssh-port", type=int, default=2222, help="fake nodes' sshd port")
    parser.add_argument("--marker-port", type=int, default=25300,
                        help="fake nodes' deployment-environment marker port (test_deploy_env)")
    parser.add_argument("--server-port", type=int, default=0, help="kadeploy3d port (default: a free one)")
    parser.add_argument("--profile", type=Path, help="py-spy raw (collapsed) profile of kadeploy3d to this file")
    parser.add_argument("--keep", action="store_true", help="keep the testbed directory (server logs, DB)")
    parser.add_argument("--no-inspect", action="store_true", help="fake nodes do not decompress the image")
    parser.add_argument("--fake-workers", type=int, default=None, metavar="K",
                        help="fake testbed worker processes (default: one per CPU; 1: one process for every node)")
    parser.add_argument("--model", action="store_true",
                        help="the seeds' run: 60-120 s boots, 3%% boot failures, with and without --retry-failed")
    parser.add_argument("--modes", nargs="+", choices=("flat", "tree"), default=["flat", "tree"],
                        help="executor modes, each with its own server process on the same testbed")
    parser.add_argument("--png", type=Path, default=Path("scale.png"),
                        help="per-node server CPU and memory against N (default: scale.png)")
    args = parser.parse_args(argv)
    if args.model:
        if args.boot_time == "2-4":
            args.boot_time = "60-120"
        if not args.failure_rate:
            args.failure_rate = 0.03
    figures: list[Figure] = []
    for nodes in args.nodes:
        started = time.monotonic()
        run(nodes, args, figures)
        print(f"N={nodes}: benchmark done in {time.monotonic() - started:.0f}s", flush=True)
    print(summary(figures), flush=True)
    if args.png and figures:
        draw(figures, args.png)
        print(f"figure: {args.png}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
