"""The server-wide reboot window, observed: with `windows/reboot/size: 2` and a hard reboot
of 6 nodes, no more than 2 reboot commands ever run at once, and the window is used (2 do
run together). The commands are wrapped by a recorder that logs when each one starts and
ends; the server is restarted on that configuration, then on the original one.
"""

from __future__ import annotations

import shutil
import textwrap

import pytest
import yaml
from scenario import machine_args

from tests.requirements import unmet

pytestmark = [pytest.mark.e2e, pytest.mark.root, pytest.mark.testbed]

RECORDER = textwrap.dedent("""\
    #!/bin/sh
    # start/end of one reboot command, then the command itself (kept slow enough to overlap)
    log="$1"; shift
    echo "start $(date +%s.%N)" >> "$log"
    sleep 1
    "$@"; status=$?
    echo "end $(date +%s.%N)" >> "$log"
    exit $status
    """)


def _max_overlap(lines: list[str]) -> int:
    events = sorted((float(stamp), 1 if kind == "start" else -1) for kind, stamp in (line.split() for line in lines))
    # at equal times, ends before starts: a slot freed and reused at once is not an overlap
    events.sort(key=lambda event: (event[0], event[1]))
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    return peak


@pytest.fixture
def window_of_two(site, tmp_path):
    if len(site.nodes) < 6:
        unmet("e2e-nodes", f"the testbed has {len(site.nodes)} nodes, the window check needs 6")
    saved = tmp_path / "saved"
    shutil.copytree(site.etc, saved)
    recorder = tmp_path / "recorder.sh"
    recorder.write_text(RECORDER)
    recorder.chmod(0o755)
    log = tmp_path / "reboots.log"
    server = yaml.safe_load((site.etc / "server.conf").read_text())
    server["windows"]["reboot"]["size"] = 2
    (site.etc / "server.conf").write_text(yaml.safe_dump(server, sort_keys=False))
    cluster = yaml.safe_load((site.etc / "c1.conf").read_text())
    for op in cluster["remoteops"]["reboot"]:
        op["cmd"] = f"{recorder} {log} {op['cmd']}"
    (site.etc / "c1.conf").write_text(yaml.safe_dump(cluster, sort_keys=False))
    site.stop_server()
    site.start_server()
    try:
        yield log
    finally:
        site.stop_server()
        for name in ("server.conf", "c1.conf"):
            shutil.copyfile(saved / name, site.etc / name)
        site.start_server()


def test_no_more_than_two_reboot_commands_run_at_once(site, window_of_two, tmp_path) -> None:
    nodes = site.nodes[:6]
    site.tool("kareboot3", "-r", "simple", "-l", "hard", *machine_args(nodes),
              "--reboot-classical-timeout", "20", "-o", str(tmp_path / "ok"), "-n", str(tmp_path / "ko"))
    lines = window_of_two.read_text().splitlines()
    assert sum(line.startswith("start") for line in lines) == 6, lines
    assert sum(line.startswith("end") for line in lines) == 6, lines
    assert _max_overlap(lines) == 2, lines
