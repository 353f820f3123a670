"""`-M`: one request spanning two servers (two sites), each owning two of the nodes
(reference 10; test_kadeploy.rb's multi-server case). Each site is a kadeploy3d with its
own configuration and database; the client dispatches nodes to their owner, prefixes each
stream with `[site]` and merges the results.
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

pytestmark = [pytest.mark.e2e, pytest.mark.root, pytest.mark.testbed]

SITES = {"site-a": 25301, "site-b": 25302}


def _keep_nodes(nodes: list[str]):
    """An `other_server` edit: the site's clusters.conf restricted to `nodes`."""
    def edit(etc: Path) -> None:
        clusters = yaml.safe_load((etc / "clusters.conf").read_text())
        for cluster in clusters["clusters"]:
            cluster["nodes"] = [node for node in cluster["nodes"] if node["name"] in nodes]
        clusters["clusters"] = [c for c in clusters["clusters"] if c["nodes"]]
        (etc / "clusters.conf").write_text(yaml.safe_dump(clusters, sort_keys=False))
    return edit


@pytest.fixture(scope="module")
def two_sites(site, tmp_path_factory):
    client_etc = tmp_path_factory.mktemp("multi-client")
    (client_etc / "client.conf").write_text(yaml.safe_dump({
        "default": "site-a",
        "servers": [{"name": name, "hostname": "10.200.0.1", "port": port, "secure": False}
                    for name, port in SITES.items()],
    }))
    shares = {"site-a": site.nodes[0:2], "site-b": site.nodes[2:4]}
    with contextlib.ExitStack() as servers:
        for name, port in SITES.items():
            servers.enter_context(site.other_server(name, port, _keep_nodes(shares[name])))
        yield dict(site.env, KADEPLOY3_CONFIG_DIR=str(client_etc), USER="root"), shares


def test_multi_server_deployment_dispatches_nodes_to_their_sites(site, two_sites, tmp_path) -> None:
    env, shares = two_sites
    result = subprocess.run(["kadeploy3", "-M", "-e", "debian12-min", "-m", "node-[1-4].c1.testbed", "-k",
                             f"{site.user_key}.pub", "-o", str(tmp_path / "ok"), "-n", str(tmp_path / "ko")],
                            capture_output=True, text=True, env=env, timeout=900, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted((tmp_path / "ok").read_text().split()) == sorted(site.nodes[:4]), result.stdout
    lines = result.stdout.splitlines()
    assert any(line.startswith("[site-a] ") for line in lines) and any(line.startswith("[site-b] ") for line in lines)
    for node in site.nodes[:4]:
        site.assert_debian_on_partition(node)
    # each site recorded only its own nodes
    for name, port in SITES.items():
        states = httpx.get(f"http://10.200.0.1:{port}/nodes", headers={"X-Kadeploy-User": "root"}, timeout=10).json()
        deployed = sorted(node for node, state in states.items() if state and state.get("state") == "deployed")
        assert deployed == sorted(shares[name]), (name, states)
