#!/usr/bin/env python3
"""Benchmark (not a test): our chain, our tree and the flat method on N sshd nodes.

Needs root: builds its own lab of sshd nodes in network namespaces (bridge
kbtbr0, 10.201.0.0/23; see tests/integration/remote/sshnodes.py) and removes
it at the end. One run prints, side by side: wall time, ratio to flat, and CPU
seconds per GiB per node (whole machine, from /proc/stat: server, sshd and
relays together, since all "nodes" share this host's CPUs), for

  * random data of --size MiB into /dev/null: kascade (fault-tolerant chain),
    chain, tree (--arity), flat, kascade with one node killed mid-stream,
    kascade with sendfile disabled on the server, and kascade with the relays'
    zero copy disabled (write and send from the ring instead of splice and
    sendfile from its memfd): what zero copy buys on each side;
  * with --tgz PATH (e.g. the debian12-min image): real extraction with tar;
  * bittorrent: aria2c on every node (each stores the image, in the lab's
    workdir, before feeding the sink), opentracker and an aria2c seed here;
  * then the same methods again with every link shaped like a NIC (--link-rate,
    default 200mbit, on --link-size MiB, default 128): a token bucket on the
    server's side of the bridge (its uplink, which the flat method's streams
    share) and on both ends of every node's veth.

Why two tables: unshaped, the "network" is memory copies on the same few
cores as the nodes, so every method is bound by CPU and the ratio to flat is
a ratio of CPU per byte (flat costs 2.4-3.7 times what the chain costs per
node here). On a cluster the bound is the server's NIC: flat pushes N copies
through it, the chain one. The shaped table measures that regime; its rate
is low enough that the chain's relays stay within this host's CPUs (check
the "CPU machine" column: CPU-seconds per GiB and node times N times the
rate must stay under the core count, or the table measures CPU again).

    python3 benchmarks/broadcast.py --nodes 16 --size 512 [--tgz debian12-min.tgz] [--ring 64] \
        [--link-rate 200mbit --link-size 128 | --link-rate off]

`--digest` picks the stream check every node computes (sha256, crc32...).
`--ring` (MiB) sets the relays' ring buffer (default: the library's). Every
relay touches min(ring, image) MiB of fresh memory; on a VM that is a large
share of a small image's CPU (see the printed CPU columns).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration" / "remote"))

from sshnodes import BRIDGE, SshLab  # noqa: E402

from kadeploy.broadcast import broadcast, source  # noqa: E402
from kadeploy.broadcast.pipeline import PipelineOptions  # noqa: E402
from kadeploy.remote import Executor  # noqa: E402
from kadeploy_testbed.linkfaults import TBF_LATENCY  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
LOAD_BEFORE = Path("/proc/loadavg").read_text().split()[0]  # the machine is shared: say how busy it was


def _cpu_seconds() -> float:
    """Busy CPU time of the whole machine (user+nice+system+irq+softirq), in seconds."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(value) for value in fields[:7])
    return (user + nice + system + irq + softirq) / TICKS


BROADCAST_OPTIONS: dict[str, object] = {}  # broadcast(ring=..., digest_algorithm=...) when --ring / --digest are given


async def _measure(label: str, lab: SshLab, image: Path, sink: str, method: str, arity: int,
                   kill: bool = False, kill_after: float = 0.0,
                   relay_options: dict[str, dict[str, object]] | None = None,
                   store: str | None = None) -> tuple[str, float, float, int, int]:
    executor = Executor(lab.private_key)
    hosts = [(node.hostname, node.address) for node in lab.nodes]
    try:
        await executor.run(lab.hosts, "true")  # connections up: measure the broadcast, not the handshakes
        killer = None
        cpu = _cpu_seconds()
        own = os.times()
        started = time.monotonic()
        if kill:
            killer = asyncio.ensure_future(_kill_after(lab, len(lab.nodes) // 2, kill_after))
        extra = {"store": store} if store else {}
        result = await broadcast(image, hosts, sink, method=method, executor=executor, timeout=1800,
                                 tree_arity=arity, relay_options=relay_options, **BROADCAST_OPTIONS, **extra)
        seconds = time.monotonic() - started
        cpu = _cpu_seconds() - cpu
        after = os.times()
        server_cpu = after.user + after.system - own.user - own.system
        if killer is not None:
            killer.cancel()
    finally:
        await executor.close()
    for host, reason in sorted(result.ko.items()):
        print(f"  {label}: {host} KO: {reason}")
    gib = image.stat().st_size / (1 << 30)
    ours = (result.node_cpu_seconds + server_cpu) / gib / len(lab.nodes)
    return label, seconds, ours, cpu / gib / len(lab.nodes), len(result.ok), len(result.ko)


async def _kill_after(lab: SshLab, index: int, delay: float) -> None:
    await asyncio.sleep(delay)
    for pid in lab.nodes[index].pids_matching("python3 -c"):
        os.kill(pid, signal.SIGKILL)


def _shape(lab: SshLab, rate: str | None) -> None:
    """Token buckets (as the testbed's link-rate fault) on the server's bridge and both ends of every veth.

    The burst is larger than the testbed's: it must exceed a GSO packet (64 KiB plus headers), or
    tbf cuts every packet into MTU-sized segments and the relays' CPU per GiB is 4 times higher.
    """
    qdisc = ["root", "tbf", "rate", rate, "burst", "256kb", "latency", TBF_LATENCY] if rate else ["root"]
    action = "replace" if rate else "del"
    commands = [["tc", "qdisc", action, "dev", BRIDGE, *qdisc]]  # the server's uplink: host -> bridge
    for node in lab.nodes:
        commands.append(["tc", "qdisc", action, "dev", f"kbtv{node.index}", *qdisc])  # towards the node
        commands.append(["ip", "netns", "exec", node.namespace, "tc", "qdisc", action, "dev", "eth0", *qdisc])
    for command in commands:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
        if rate and done.returncode != 0:  # removing what is not there fails harmlessly
            sys.exit(f"{' '.join(command)}: {done.stderr.strip()}")


async def _run(lab: SshLab, image: Path, arity: int, tgz: Path | None, title: str = "") -> None:
    null_sink = "cat > /dev/null"
    rows = []
    for label, method in (("kascade (chain, FT)", "kascade"), ("chain", "chain"),
                          (f"tree (k={arity})", "tree"), ("flat", "flat")):
        rows.append(await _measure(label, lab, image, null_sink, method, arity))
    kascade_seconds = rows[0][1]
    rows.append(await _measure("kascade, 1 killed", lab, image, null_sink, "kascade", arity,
                               kill=True, kill_after=kascade_seconds / 2))
    source.USE_SENDFILE = False
    rows.append(await _measure("kascade, no sendfile", lab, image, null_sink, "kascade", arity))
    source.USE_SENDFILE = True
    no_zero_copy = {node.hostname: {"zero_copy": False} for node in lab.nodes}
    rows.append(await _measure("kascade, no zero copy", lab, image, null_sink, "kascade", arity,
                               relay_options=no_zero_copy))
    store = lab.workdir / "bt-store"  # every node's copy: the lab's nodes share this host's filesystem
    store.mkdir(exist_ok=True)
    rows.append(await _measure("bittorrent (aria2c)", lab, image, null_sink, "bittorrent", arity, store=str(store)))
    flat_seconds = rows[3][1]
    size_mib = image.stat().st_size >> 20
    ring = f", ring {int(BROADCAST_OPTIONS['ring']) >> 20} MiB" if "ring" in BROADCAST_OPTIONS else ""
    ring += f", digest {BROADCAST_OPTIONS.get('digest_algorithm', PipelineOptions.digest)}"
    print(f"\n== {size_mib} MiB of random data to {len(lab.nodes)} nodes, sink /dev/null{ring}{title} "
          f"(load average before: {LOAD_BEFORE}, after: {Path('/proc/loadavg').read_text().split()[0]}) ==")
    _print(rows, flat_seconds)
    if tgz is not None:
        sink = 'rm -rf "$KBT_NODE_DIR/dest"; mkdir -p "$KBT_NODE_DIR/dest"; tar --numeric-owner -C "$KBT_NODE_DIR/dest" -xzf -'
        real = [await _measure("kascade", lab, tgz, sink, "kascade", arity),
                await _measure("flat", lab, tgz, sink, "flat", arity)]
        print(f"\n== {tgz.name} ({tgz.stat().st_size >> 20} MiB) extracted with tar on {len(lab.nodes)} nodes ==")
        _print(real, real[1][1])
        for node in lab.nodes:
            os.system(f"rm -rf {node.directory / 'dest'}")


def _print(rows, flat_seconds: float) -> None:
    # CPU s/GiB/node: "relays" = relays, local pipelines and the server process (sshd excluded);
    # "machine" = every busy CPU second of this host during the run (includes sshd and anything else running)
    print(f"{'method':<24}{'seconds':>9}{'x/flat':>8}{'speed-up':>9}{'CPU relays':>11}{'CPU machine':>12}  ok/ko")
    for label, seconds, ours, machine, ok, ko in rows:
        print(f"{label:<24}{seconds:>9.2f}{seconds / flat_seconds:>8.2f}{flat_seconds / seconds:>9.2f}"
              f"{ours:>11.2f}{machine:>12.2f}  {ok}/{ko}")


def _random_image(path: Path, mib: int) -> None:
    with open(path, "wb") as out:
        for _ in range(mib):
            out.write(os.urandom(1 << 20))
        os.fsync(out.fileno())  # its write-back would land in the first measurement (kascade)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=16)
    parser.add_argument("--size", type=int, default=512, help="MiB of random data")
    parser.add_argument("--arity", type=int, default=2)
    parser.add_argument("--tgz", type=Path, help="a real tgz image to extract (e.g. debian12-min)")
    parser.add_argument("--ring", type=int, help="relay ring buffer in MiB (default: the library's)")
    parser.add_argument("--digest", help="stream check computed by every node: sha256, crc32... (default: the library's)")
    parser.add_argument("--link-rate", default="200mbit",
                        help="tc rate of every link for the shaped table (default 200mbit; 'off' skips it)")
    parser.add_argument("--link-size", type=int, default=128, help="MiB of random data for the shaped table")
    args = parser.parse_args()
    if args.ring:
        BROADCAST_OPTIONS["ring"] = args.ring << 20
    if args.digest:
        BROADCAST_OPTIONS["digest_algorithm"] = args.digest
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces)")
    lab = SshLab.create(args.nodes)
    try:
        image = lab.workdir / "random.img"
        _random_image(image, args.size)
        asyncio.run(_run(lab, image, args.arity, args.tgz))
        if args.link_rate != "off":
            image.unlink()
            _random_image(image, args.link_size)
            _shape(lab, args.link_rate)
            try:
                asyncio.run(_run(lab, image, args.arity, None, f", every link shaped to {args.link_rate}"))
            finally:
                _shape(lab, None)
    finally:
        lab.teardown()


if __name__ == "__main__":
    main()
