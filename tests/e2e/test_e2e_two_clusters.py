"""One request spanning two clusters (Kadeploy3 runs one workflow per cluster, each with
its own cluster file, and reports per cluster): a kadeploy3d whose clusters.conf puts
three of the testbed's nodes in clusters c1 and c2. Cluster c1's file also gives the
switch topology (our extension): its broadcast chain starts on the first switch's node,
not on the first node by name."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.e2e, pytest.mark.root, pytest.mark.testbed]

PORT = 25303


@pytest.fixture
def two_clusters(site):
    n4, n5, n6 = site.nodes[3:6]

    def split(etc: Path) -> None:
        clusters = yaml.safe_load((etc / "clusters.conf").read_text())
        entries = {node["name"]: node for node in clusters["clusters"][0]["nodes"]}
        clusters["clusters"] = [
            {"name": "c1", "prefix": "c1", "conf_file": "c1.conf", "nodes": [entries[n4], entries[n5]]},
            {"name": "c2", "prefix": "c2", "conf_file": "c2.conf", "nodes": [entries[n6]]},
        ]
        (etc / "clusters.conf").write_text(yaml.safe_dump(clusters, sort_keys=False))
        shutil.copy(etc / "c1.conf", etc / "c2.conf")
        c1 = yaml.safe_load((etc / "c1.conf").read_text())
        c1["topology"] = {"switches": [{"name": "core"}, {"name": "sw-a", "parent": "core", "nodes": [n5]},
                                       {"name": "sw-b", "parent": "core", "nodes": [n4]}]}
        (etc / "c1.conf").write_text(yaml.safe_dump(c1, sort_keys=False))

    with site.other_server("two-clusters", PORT, split) as env:
        yield env, n4, n5, n6


def test_one_request_spanning_two_clusters(site, two_clusters, tmp_path) -> None:
    env, n4, n5, n6 = two_clusters
    ok_file = tmp_path / "ok"
    result = subprocess.run(["kadeploy3", "-e", "debian12-min", "-m", n4, "-m", n5, "-m", n6,
                             "-k", f"{site.user_key}.pub", "-o", str(ok_file)],
                            env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(ok_file.read_text().split()) == sorted([n4, n5, n6]), result.stdout
    for cluster in ("c1", "c2"):
        assert f"End of deployment on cluster {cluster}" in result.stdout, result.stdout
    for node in (n4, n5, n6):
        site.assert_debian_on_partition(node)
    nodes = subprocess.run(["kanodes3", "-s", "-m", n6], env=env, capture_output=True, text=True, timeout=60)
    assert nodes.returncode == 0 and "deployed" in nodes.stdout, nodes.stdout + nodes.stderr
    # c1's chain follows its topology: sw-a (n5) before sw-b (n4), though n4 sorts first by name
    log = (site.directory / "two-clusters" / "output.log").read_text()
    fed = [line.split("the server feeds ")[1].strip() for line in log.splitlines() if "the server feeds " in line]
    assert n5 in fed and n4 not in fed[:fed.index(n5)], fed
