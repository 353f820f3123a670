"""Dry runs of the polling resources: reading new log lines leaves them new; DELETE keeps the workflow."""

from __future__ import annotations

from server_fixtures import NODES_C1, wait_done


async def test_a_dry_read_of_the_logs_leaves_them_unread(client):
    wid = (await client.post("/reboot", json={"nodes": NODES_C1[:1], "kind": "simple"})).json()["wid"]
    await wait_done(client, f"/reboot/{wid}")
    first = (await client.get(f"/reboot/{wid}/logs", params={"dry_run": "true"})).text
    assert first and (await client.get(f"/reboot/{wid}/logs/c1", params={"dry_run": "true"})).text
    assert (await client.get(f"/reboot/{wid}/logs", params={"dry_run": "true"})).text == first
    assert (await client.get(f"/reboot/{wid}/logs")).text == first
    assert (await client.get(f"/reboot/{wid}/logs")).text == ""


async def test_a_dry_delete_keeps_the_workflow(client):
    wid = (await client.post("/reboot", json={"nodes": NODES_C1[:1], "kind": "simple"})).json()["wid"]
    await wait_done(client, f"/reboot/{wid}")
    dry = await client.delete(f"/reboot/{wid}", params={"dry_run": "true"})
    assert dry.json() == {"dry_run": True, "wid": wid, "running": False}
    assert (await client.get(f"/reboot/{wid}")).status_code == 200
    assert (await client.delete(f"/reboot/{wid}")).json() == {"wid": wid}
    assert (await client.get(f"/reboot/{wid}")).status_code == 400  # error 1: forgotten


async def test_an_invalid_dry_run_flag_is_refused(client):
    answer = await client.post("/reboot", json={"nodes": NODES_C1[:1], "kind": "simple", "dry_run": "maybe"})
    assert answer.status_code == 400 and answer.headers["X-Application-Error-Code"] == "4"
    assert "dry_run" in answer.text
