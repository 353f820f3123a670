"""The server's YAML answers are Ruby's `to_yaml` of the hashes Kadeploy3's server builds.

Kadeploy3's kanodes3 asks its server for YAML and prints the text as it comes (bin/kanodes3
`get(path,params,:yaml,false)`, then `debug ret`): a Ruby kanodes3 pointed at our kadeploy3d must
print what Kadeploy3's would, `:wid:` and all. Our kanodes3 asks JSON and writes the YAML itself
(kadeploy.cli.kanodes3.status_text); both texts must be the same bytes.
"""

from __future__ import annotations

import httpx
import yaml

from kadeploy.cli.kanodes3 import status_text
from server_fixtures import NODES_C1, wait_done

YAML = {"Accept": "application/x-yaml"}


async def test_a_launch_answers_symbol_wid_and_resources_with_string_names(client: httpx.AsyncClient) -> None:
    # kaworkflow.rb `work_create`: { :wid => ..., :resources => info[:resources] }, whose keys are the
    # names given to `bind` ('resource', 'log', 'logs', 'state', 'status', 'error')
    answer = await client.post("/reboot", json={"nodes": NODES_C1[:1], "kind": "simple"}, headers=YAML)
    assert answer.headers["content-type"].startswith("application/x-yaml")
    text = answer.text
    wid = text.split("\n")[1].removeprefix(":wid: ")
    # a path starts with a non-word character: Psych double-quotes it
    assert text.startswith(f'---\n:wid: {wid}\n:resources:\n  resource: "/reboot/{wid}"\n  log: "/reboot/{wid}/logs"\n')
    assert wid.startswith("R-")
    await wait_done(client, f"/reboot/{wid}")
    deleted = await client.delete(f"/reboot/{wid}", headers=YAML)
    assert deleted.text == f"---\n:wid: {wid}\n"  # `work_delete`: { :wid => ... }


async def test_ruby_kanodes3_would_print_what_ours_prints(client: httpx.AsyncClient) -> None:
    launched = (await client.post("/reboot", json={"nodes": NODES_C1[:2], "kind": "simple"})).json()
    await wait_done(client, f"/reboot/{launched['wid']}")
    # -r: the list of work_get hashes; -r -w WID: the hash itself
    for path in ("/reboot", f"/reboot/{launched['wid']}"):
        as_json = (await client.get(path)).json()
        as_yaml = (await client.get(path, headers=YAML)).text
        assert as_yaml == status_text("reboot", [as_json])
        assert ":wid: " + launched["wid"] in as_yaml and "\nwid:" not in as_yaml
    # -s: common/nodes.rb `get_states` has string keys; a never-operated node is nil, written `node: `
    params = {"nodes": NODES_C1[:3]}
    as_json = (await client.get("/nodes", params=params)).json()
    as_yaml = (await client.get("/nodes", params=params, headers=YAML)).text
    assert as_yaml == status_text("state", [as_json])
    assert f"\n{NODES_C1[2]}: \n" in as_yaml


async def test_yaml_answers_read_back_as_the_json_ones(client: httpx.AsyncClient) -> None:
    # PyYAML reads `:wid` as the string ':wid': what matters here is that nothing else differs
    launched = (await client.post("/reboot", json={"nodes": NODES_C1[:1], "kind": "simple"})).json()
    info = await wait_done(client, f"/reboot/{launched['wid']}")
    read = yaml.safe_load((await client.get(f"/reboot/{launched['wid']}", headers=YAML)).text)
    assert {key.removeprefix(":"): value for key, value in read.items()} == \
        {**info, "nodes": {f":{key}": value for key, value in info["nodes"].items()}}


async def test_rights_without_nodes_are_on_all_nodes(app) -> None:
    # server/karights.rb: `nodes` absent stays nil; `rights_create` adds on '*', `rights_delete` removes all
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers={"X-Kadeploy-User": "root"}) as root:
        assert (await root.post("/rights", json={"username": "bob"})).status_code == 200
        assert (await root.get("/rights/bob")).json() == {"bob": {"*": ["*"]}}
        assert (await root.delete("/rights/bob")).status_code == 200
        # `rights_get`: `error_not_found! unless res` when no row matches
        assert (await root.get("/rights/bob")).status_code == 404
