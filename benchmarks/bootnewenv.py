#!/usr/bin/env python3
"""Benchmark (not a test): one QEMU VM deployed with BootNewEnvClassical, BootNewEnvKexec and BootNewEnvPivotRoot.

Needs root and the QEMU testbed's requirements (tests/qemu/conftest.py); brings a
1-VM QEMU testbed up (hold `flock /tmp/kadeploy-lab.lock`) and takes it down:

    flock /tmp/kadeploy-lab.lock python3 benchmarks/bootnewenv.py [--rounds 1]

Each deployment is Untrusted + Kascade + the BootNewEnv implementation under
test, one after the other on the same VM. Prints the whole deployment's wall
time and the BootNewEnv macro-step's time as recorded by the server
(kastat3 `step3_duration`), with ratios against Classical measured in the
same run. Under TCG (no KVM) the firmware and kernel boots dominate, which is
what PivotRoot removes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.qemu.conftest import qemu_site  # noqa: E402
from tests.qemu.test_qemu_deploy import UNTRUSTED_KASCADE, deploy_command  # noqa: E402
from tests.e2e.scenario import workflow_id  # noqa: E402

IMPLEMENTATIONS = ("BootNewEnvClassical", "BootNewEnvKexec", "BootNewEnvPivotRoot")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1, help="deployments per implementation (default 1)")
    args = parser.parse_args()
    walls: dict[str, list[float]] = {name: [] for name in IMPLEMENTATIONS}
    steps: dict[str, list[float]] = {name: [] for name in IMPLEMENTATIONS}
    with qemu_site(1) as site:
        node = site.nodes[0]
        for _ in range(args.rounds):
            for name in IMPLEMENTATIONS:
                started = time.monotonic()
                result = site.tool(*deploy_command(site, [node], "--force-steps",
                                                   f"{UNTRUSTED_KASCADE}&BootNewEnv|{name}:0:1200"),
                                   check=False, timeout=3600)
                wall = time.monotonic() - started
                if result.returncode != 0 or "The deployment is successful on nodes" not in result.stdout:
                    print(f"{name}: the deployment failed\n{result.stdout}\n{result.stderr}", file=sys.stderr)
                    return 1
                record = site.tool("kastat3", "-w", workflow_id(result), "-F", "step3,step3_duration").stdout.split()
                step, duration = record[0].split(",")
                assert step == name, record
                walls[name].append(wall)
                steps[name].append(float(duration))
                print(f"  {name}: deployment {wall:.0f}s, BootNewEnv {duration}s", flush=True)
    base_wall = statistics.median(walls["BootNewEnvClassical"])
    base_step = statistics.median(steps["BootNewEnvClassical"])
    print(f"\n{'BootNewEnv implementation':<24} {'deployment':>11} {'ratio':>6} {'BootNewEnv':>11} {'ratio':>6}")
    for name in IMPLEMENTATIONS:
        wall, step = statistics.median(walls[name]), statistics.median(steps[name])
        print(f"{name:<24} {wall:>10.0f}s {wall / base_wall:>6.2f} {step:>10.0f}s {step / max(base_step, 1):>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
