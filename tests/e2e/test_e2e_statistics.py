"""kastat3 and kanodes3 after the runs of the suite (Kadeploy3's test_kastat.rb and
test_kanodes.rb): the records of every deployment, failure rates that agree with them, the
per-operation filter, and node states. Runs after the other modules (alphabetical order);
alone, it makes one deployment of its own so that there is something to look at.
"""

from __future__ import annotations

from collections import defaultdict

import pytest
import yaml

pytestmark = [pytest.mark.e2e, pytest.mark.root, pytest.mark.testbed]

NODE_STATES = {"deploying", "deployed", "deploy_failed", "rebooting", "rebooted", "reboot_failed", "powering",
               "powered", "power_failed", "prod_env", "recorded_env", "deploy_env", "aborted"}


@pytest.fixture(scope="module")
def records(site):
    rows = site.tool("kastat3", "-a", "-F", "wid,hostname,success,user").stdout.split()
    if not any(row.startswith("D-") for row in rows):
        site.tool("kadeploy3", "-e", "debian12-min", "-m", site.nodes[0])
        rows = site.tool("kastat3", "-a", "-F", "wid,hostname,success,user").stdout.split()
    return [row.split(",") for row in rows]


def test_failure_rates_agree_with_the_records(site, records) -> None:
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for wid, host, success, _ in records:
        if wid.startswith("D-"):
            totals[host][0] += 1
            totals[host][1] += success != "true"
    rates = {}
    for line in site.tool("kastat3", "-b", "-o", "deploy").stdout.splitlines():
        host, _, rate = line.partition(": ")
        rates[host] = float(rate)
    for host, (total, failed) in totals.items():
        assert rates.get(host, 0.0) == pytest.approx(failed / total, abs=1e-3), (host, total, failed, rates)
    failing = site.tool("kastat3", "-b", "0.01", "-o", "deploy").stdout
    assert sorted(line.split(":")[0] for line in failing.splitlines()) == \
        sorted(host for host, (_, failed) in totals.items() if failed)


def test_operation_filter_and_workflow_filter(site, records) -> None:
    reboots = site.tool("kastat3", "-o", "reboot", "-F", "wid").stdout.split()
    assert all(wid.startswith("R-") for wid in reboots)
    wid = next(w for w, *_ in records if w.startswith("D-"))
    one = site.tool("kastat3", "-w", wid, "-F", "wid,hostname").stdout.split()
    assert one and all(row.startswith(wid + ",") for row in one)
    assert sorted(row.split(",")[1] for row in one) == sorted(h for w, h, *_ in records if w == wid)


def test_node_states_after_the_runs(site, records) -> None:
    states = yaml.safe_load(site.tool("kanodes3", "-s").stdout)
    last_user = {host: user for _, host, _, user in records}
    for node in site.nodes:
        if node not in last_user:
            continue
        assert states[node] is not None, states
        assert states[node]["state"] in NODE_STATES
    running = site.tool("kanodes3", "-d").stdout.strip()
    assert running in ("", "---", "[]", "{}", "--- []", "--- {}"), running
