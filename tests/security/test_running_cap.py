"""A user's running workflows are capped (server.conf security/max_running_workflows_per_user), and
/metrics is for the administrators unless security/public_metrics: against the real kadeploy3d.

A flood of power statuses used to start one workflow (and its processes, on a
real site) per request, without end. The dummy runner holds each workflow for
30 s, so the ones accepted are still running when the flood ends.
"""

from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from tlslab import Kadeploy3d

pytestmark = pytest.mark.slow

NODES = "node-[1-4].c1.test"
SECURITY = {"secure_server": False, "max_running_workflows_per_user": 3, "max_running_workflows_per_admin": 5}


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.setenv("KADEPLOY3_DUMMY_DELAY", "30")
    daemon = Kadeploy3d(tmp_path, secure=False, server_extra={"security": SECURITY}).start()
    try:
        yield daemon
    finally:
        daemon.stop()


def flood(url: str, user: str, count: int) -> list[httpx.Response]:
    """`count` power statuses sent at once by `user`."""
    def one(_: int) -> httpx.Response:
        return httpx.get(f"{url}/power", params={"nodes": NODES}, headers={"X-Kadeploy-User": user}, timeout=20)
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(count)))


def test_a_flood_of_power_statuses_starts_no_more_than_the_cap(server):
    answers = flood(server.url, "alice", 12)
    started = [a for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code != 200]
    assert len(started) == 3, [a.text for a in answers]
    for answer in refused:
        assert answer.status_code == 400 and answer.headers["X-Application-Error-Code"] == "15", answer.text
        message = base64.b64decode(answer.headers["X-Application-Error-Info"]).decode()
        assert "security/max_running_workflows_per_user (3)" in message and "alice" in message, message
    with httpx.Client(base_url=server.url, timeout=10) as http:
        alice, bob, root = ({"X-Kadeploy-User": user} for user in ("alice", "bob", "root"))
        running = [wf for wf in http.get("/power", headers=root).json() if not wf["done"]]
        assert len(running) == 3                                   # the refused ones left nothing behind
        dry = http.get("/power", params={"nodes": NODES, "dry_run": "true"}, headers=alice)
        assert dry.headers.get("X-Application-Error-Code") == "15"  # a dry run is refused as the launch would be
        assert http.get("/power", params={"nodes": NODES}, headers=bob).status_code == 200  # per user
        assert sum(a.status_code == 200 for a in flood(server.url, "root", 8)) == 5      # the admins' own cap
        cancelled = http.delete(f"/power/{started[0].json()['wid']}", headers=alice)
        assert cancelled.status_code == 200, cancelled.text
        again = http.get("/power", params={"nodes": NODES}, headers=alice)
        assert again.status_code == 200, again.text                # one ended: room for one more


def test_metrics_are_for_administrators_unless_public(server, tmp_path):
    with httpx.Client(base_url=server.url, timeout=10) as http:
        assert http.get("/metrics").status_code == 401
        assert http.get("/metrics", headers={"X-Kadeploy-User": "alice"}).status_code == 403
        answer = http.get("/metrics", headers={"X-Kadeploy-User": "root"})
        assert answer.status_code == 200 and "kadeploy_workflows_running" in answer.text
    public = Kadeploy3d(tmp_path / "public", secure=False,
                        server_extra={"security": {"secure_server": False, "public_metrics": True}}).start()
    try:
        answer = httpx.get(f"{public.url}/metrics", timeout=10)
        assert answer.status_code == 200 and "kadeploy_workflows_running" in answer.text
    finally:
        public.stop()
