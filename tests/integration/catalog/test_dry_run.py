"""`--dry-run` on every tool against a real kadeploy3d: the request is checked as the real one, nothing changes.

Kadeploy3 sends `dry_run` with the request of every tool; its server checks
the request and the rights, changes nothing, and the client prints nothing.
Each test takes a picture of everything the server could change (every row
of its database, the workflows and consoles it holds, its file cache), runs
the dry run, and checks the picture again; where it is cheap, the real
request then changes the picture, which shows the picture would have seen a
change. Invalid requests fail with the same exit status and message with or
without `--dry-run`.
"""

from __future__ import annotations

import contextlib
import os
import pty
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from kadeploy3d import NODES, Kadeploy3d

pytestmark = pytest.mark.slow

DUMMY_DELAY = 4.0  # seconds a Dummy operation runs: long enough to find one running
KINDS = ("/deployment", "/reboot", "/power", "/console")


def picture(server: Kadeploy3d) -> dict[str, Any]:
    """Everything a request could change: each table's rows, the workflows and consoles held, the cached files."""
    database = server.directory / "kadeploy.db"
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        rows = {table: sorted(repr(row) for row in db.execute(f'SELECT * FROM "{table}"')) for table in tables}
    with server.http("root") as root:
        held = {kind: sorted(str(item.get("wid") or item.get("id")) for item in root.get(kind).json())
                for kind in KINDS}
    cache = server.directory / "cache"
    cached = sorted(str(path.relative_to(cache)) for path in cache.rglob("*")) if cache.exists() else []
    return {"rows": rows, "held": held, "cached": cached}


def dry_run(server: Kadeploy3d, *args: str, user: str) -> None:
    """Run `args --dry-run`: it succeeds, prints nothing, and the server is left exactly as it was."""
    before = picture(server)
    done = server.tool(*args, "--dry-run", user=user)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", ""), done
    assert picture(server) == before


def real(server: Kadeploy3d, *args: str, user: str) -> subprocess.CompletedProcess:
    done = server.tool(*args, user=user)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def same_failure(server: Kadeploy3d, *args: str, user: str, code: int) -> None:
    """The dry run fails as the real request does (exit status and message), and neither changes anything."""
    before = picture(server)
    refused = server.tool(*args, user=user)
    dry = server.tool(*args, "--dry-run", user=user)
    assert refused.returncode == code and refused.stderr.strip(), refused
    assert (dry.returncode, dry.stdout, _without_dry_run(dry.stderr)) == (refused.returncode, refused.stdout,
                                                                          refused.stderr)
    assert picture(server) == before


def _without_dry_run(stderr: str) -> str:
    """The dry run's error text with `dry_run=true` taken out of its `[HTTP Error #S on METHOD path]` line.

    That line prints the path requested with its query (as http.rb prints
    Net::HTTPRequest#path), so a dry DELETE shows the parameter that made it dry;
    everything else must be the real request's text.
    """
    def drop(match: re.Match[str]) -> str:
        path, _, query = match.group(2).partition("?")
        kept = "&".join(pair for pair in query.split("&") if pair and pair != "dry_run=true")
        return f"{match.group(1)}{path}{'?' + kept if kept else ''}]"
    return re.sub(r"^(\[HTTP Error #\d+ on \S+ )(\S*)\]$", drop, stderr, flags=re.MULTILINE)


def wait_idle(server: Kadeploy3d, timeout: float = 60.0) -> None:
    """Until no operation runs (node states and claims stop moving)."""
    deadline = time.monotonic() + timeout
    with server.http("root") as root:
        while time.monotonic() < deadline:
            running = [item for kind in KINDS[:3] for item in root.get(kind).json() if not item.get("done")]
            if not running:
                return
            time.sleep(0.1)
    raise AssertionError(f"operations still running after {timeout} s")


def env_file(directory: Path, name: str, image: str, **extra: Any) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "version": 1, "os": "linux", "filesystem": "ext4",
                                    "image": {"file": image, "kind": "tar", "compression": "gzip"},
                                    "boot": {"kernel": "/vmlinuz", "initrd": "/initrd.img"}, **extra}))
    return path


@pytest.fixture(scope="module")
def site(server: Kadeploy3d, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """alice may use every node and owns `debian`; root published `debian-pub`; bob has no right."""
    real(server, "karights3", "-a", "-m", "node-[1-4].c1.test", "-p", "*", "-u", "alice", user="root")
    image = server.envs / "debian.tgz"
    image.write_bytes(b"debian image " * 1000)
    descriptions = tmp_path_factory.mktemp("envs")
    real(server, "kaenv3", "-a", str(env_file(descriptions, "debian", f"server://{image}")), user="alice")
    real(server, "kaenv3", "-a", str(env_file(descriptions, "debian-pub", f"server://{image}", visibility="public")),
         user="root")
    return {"image": image, "descriptions": descriptions}


# -- workflow tools ---------------------------------------------------------------------------


def test_kadeploy3_dry_run_starts_nothing(server, site):
    wait_idle(server)
    dry_run(server, "kadeploy3", "-e", "debian", "-m", NODES[0], user="alice")
    anonymous = env_file(site["descriptions"], "anonymous", f"server://{site['image']}")
    dry_run(server, "kadeploy3", "-a", str(anonymous), "-m", NODES[0], "-m", NODES[1], user="alice")
    before = picture(server)
    real(server, "kadeploy3", "-e", "debian", "-m", NODES[0], user="alice")
    assert picture(server)["rows"]["nodes"] != before["rows"]["nodes"]


def test_kadeploy3_dry_run_answers_what_it_would_do(server, site):
    wait_idle(server)
    with server.http("alice") as alice:
        answer = alice.post("/deployment", json={"nodes": NODES[:2], "environment": {"kind": "database",
                                                                                      "name": "debian"},
                                                 "dry_run": True})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"dry_run": True, "nodes": NODES[:2], "discarded": [],
                             "environment": {"user": "alice", "name": "debian", "version": 1}}


@pytest.mark.parametrize(("user", "args", "code"), [
    ("alice", ("-e", "nope", "-m", NODES[0]), 1),            # no such environment: the client's lookup says so
    ("bob", ("-e", "debian-pub", "-m", NODES[0]), 6),       # no right on the node
    ("alice", ("-e", "debian", "-m", NODES[0], "--reboot-classical-timeout", "1+"), 4),
])
def test_kadeploy3_dry_run_fails_as_the_real_request(server, site, user, args, code):
    wait_idle(server)
    same_failure(server, "kadeploy3", *args, user=user, code=code)


def test_kadeploy3_dry_run_on_busy_nodes_fails_as_the_real_request(server, site):
    wait_idle(server)
    with server.http("alice") as alice:
        wid = alice.post("/deployment", json={"nodes": [NODES[3]], "environment": {
            "kind": "database", "name": "debian"}}).json()["wid"]
        try:
            refused = server.tool("kadeploy3", "-e", "debian", "-m", NODES[3], user="alice")
            dry = server.tool("kadeploy3", "-e", "debian", "-m", NODES[3], "--dry-run", user="alice")
            assert alice.get(f"/deployment/{wid}").json()["done"] is False, "the first deployment ended too soon"
        finally:
            server.wait_done(alice, f"/deployment/{wid}")
    assert refused.returncode == 14 and "already involved in another operation" in refused.stderr, refused
    assert (dry.returncode, dry.stdout, dry.stderr) == (refused.returncode, refused.stdout, refused.stderr)


def test_kareboot3_dry_run_starts_nothing(server, site):
    wait_idle(server)
    dry_run(server, "kareboot3", "-m", NODES[1], user="alice")
    dry_run(server, "kareboot3", "-r", "recorded_env", "-e", "debian", "-p", "3", "-m", NODES[1], user="alice")
    same_failure(server, "kareboot3", "-m", NODES[1], user="bob", code=6)
    same_failure(server, "kareboot3", "-r", "recorded_env", "-e", "nope", "-p", "3", "-m", NODES[1],
                 user="alice", code=1)  # the client looks the environment up first, as Kadeploy3's does


def test_kapower3_dry_run_starts_nothing(server, site):
    wait_idle(server)
    dry_run(server, "kapower3", "--off", "-m", NODES[2], user="alice")
    dry_run(server, "kapower3", "--status", "-m", NODES[2], user="alice")  # GET /power?nodes= starts a workflow
    same_failure(server, "kapower3", "--on", "-m", NODES[2], user="bob", code=6)


# -- kaenv3 -----------------------------------------------------------------------------------


def test_kaenv3_dry_add_records_nothing_and_fails_as_the_real_add(server, site, tmp_path):
    wait_idle(server)
    fresh = env_file(tmp_path, "fresh", f"server://{site['image']}")
    dry_run(server, "kaenv3", "-a", str(fresh), user="alice")
    same_failure(server, "kaenv3", "-a", str(env_file(tmp_path, "debian", f"server://{site['image']}")),
                 user="alice", code=10)  # already recorded
    same_failure(server, "kaenv3", "-a", str(env_file(tmp_path, "lost", f"server://{server.envs}/missing.tgz")),
                 user="alice", code=5)   # the image does not exist
    same_failure(server, "kaenv3", "-a", str(env_file(tmp_path, "pub", f"server://{site['image']}",
                                                          visibility="public")), user="alice", code=2)  # HTTP 403, as Kadeploy3
    before = picture(server)
    real(server, "kaenv3", "-a", str(fresh), user="alice")
    assert picture(server)["rows"]["environments"] != before["rows"]["environments"]
    real(server, "kaenv3", "-d", "fresh", user="alice")


def test_kaenv3_dry_add_of_a_client_file_fetches_nothing_into_the_cache(server, site, tmp_path):
    wait_idle(server)
    local_image = tmp_path / "local.tgz"
    local_image.write_bytes(b"a client-side image " * 500)
    description = env_file(tmp_path, "local", str(local_image))
    dry_run(server, "kaenv3", "-a", str(description), user="alice")  # the server asked the client's file (HEAD)
    before = picture(server)
    real(server, "kaenv3", "-a", str(description), user="alice")
    assert picture(server)["cached"] != before["cached"], "the real add downloads the client's image"
    real(server, "kaenv3", "-d", "local", user="alice")


def test_kaenv3_dry_modifications_change_nothing(server, site):
    wait_idle(server)
    dry_run(server, "kaenv3", "-d", "debian", user="alice")
    dry_run(server, "kaenv3", "--set-visibility-tag", "debian", "-t", "shared", user="alice")
    dry_run(server, "kaenv3", "--toggle-destructive-tag", "debian", user="alice")
    original = site["image"].read_bytes()
    site["image"].write_bytes(original + b"changed")
    try:
        dry_run(server, "kaenv3", "--update-image-checksum", "debian", user="alice")
    finally:
        site["image"].write_bytes(original)
    dry_run(server, "kaenv3", "--move-files", "-m", f"server://{server.envs}::server:///elsewhere", user="root")
    same_failure(server, "kaenv3", "-d", "nope", user="alice", code=7)
    # Kadeploy3's envs_rights? refusals are HTTP 403, which its clients exit with status 2
    same_failure(server, "kaenv3", "-d", "debian", "-u", "alice", user="bob", code=2)
    same_failure(server, "kaenv3", "--set-visibility-tag", "debian", "-t", "public", user="alice", code=2)
    same_failure(server, "kaenv3", "--move-files", "-m", "server:///nowhere::server:///elsewhere", user="root",
                 code=14)
    before = picture(server)
    real(server, "kaenv3", "--toggle-destructive-tag", "debian", user="alice")
    assert picture(server)["rows"]["environments"] != before["rows"]["environments"]
    real(server, "kaenv3", "--toggle-destructive-tag", "debian", user="alice")


def test_kaenv3_dry_listings_print_nothing(server, site):
    wait_idle(server)
    assert "debian" in real(server, "kaenv3", "-l", user="alice").stdout
    dry_run(server, "kaenv3", "-l", user="alice")
    dry_run(server, "kaenv3", "-p", "debian", user="alice")


# -- karights3 --------------------------------------------------------------------------------


def test_karights3_dry_add_grants_nothing(server, site):
    wait_idle(server)
    dry_run(server, "karights3", "-a", "-u", "bob", "-m", NODES[0], "-p", "*", "-o", user="root")
    same_failure(server, "karights3", "-a", "-u", "bob", "-m", NODES[0], "-p", "*", user="root", code=11)
    same_failure(server, "karights3", "-a", "-u", "alice", "-m", NODES[0], "-p", "*", user="root", code=14)
    same_failure(server, "karights3", "-a", "-u", "bob", "-m", NODES[0], "-p", "*", user="alice", code=2)
    same_failure(server, "karights3", "-a", "-u", "bob", "-m", "node-9.c1.test", "-p", "*", user="root", code=2)


def test_karights3_dry_delete_revokes_nothing_and_stops_no_operation(server, site):
    wait_idle(server)
    with server.http("alice") as alice:
        wid = alice.post("/deployment", json={"nodes": [NODES[2]], "environment": {
            "kind": "database", "name": "debian"}}).json()["wid"]
        try:
            rights = picture(server)["rows"]["rights"]
            done = server.tool("karights3", "-d", "-u", "alice", "-m", NODES[2], "--dry-run", user="root")
            assert (done.returncode, done.stdout, done.stderr) == (0, "", ""), done
            with server.http("root") as root:
                answer = root.delete("/rights/alice", params={"nodes": NODES[2], "dry_run": "true"}).json()
            assert answer["cancelled"] == [wid]  # what the real removal would stop
            time.sleep(0.5)
            assert alice.get(f"/deployment/{wid}").json()["done"] is False, "the deployment was stopped"
            assert picture(server)["rows"]["rights"] == rights
        finally:
            info = server.wait_done(alice, f"/deployment/{wid}")
    assert info["error"] is False and info["nodes"]["ok"] == [NODES[2]]
    same_failure(server, "karights3", "-d", "-u", "carol", "-m", NODES[2], user="root", code=14)


def test_karights3_dry_listing_prints_nothing(server, site):
    wait_idle(server)
    listing = real(server, "karights3", "-l", user="root").stdout
    assert re.search(r"^alice +node-\S+ +\*$", listing, re.M), listing  # karights.rb print_rights rows
    dry_run(server, "karights3", "-l", user="root")


# -- kastat3, kanodes3 -------------------------------------------------------------------------


def test_kastat3_and_kanodes3_dry_runs_print_nothing(server, site):
    wait_idle(server)
    assert real(server, "kastat3", "-a", user="root").stdout, "a deployment was recorded"
    dry_run(server, "kastat3", "-a", user="root")
    dry_run(server, "kastat3", "-b", user="root")
    dry_run(server, "kastat3", "--steps", user="root")
    assert real(server, "kanodes3", "-s", user="root").stdout
    dry_run(server, "kanodes3", "-s", user="root")
    dry_run(server, "kanodes3", "-a", user="root")
    same_failure(server, "kanodes3", "-s", "-m", "node-9.c1.test", user="root", code=2)


# -- kaconsole3 -------------------------------------------------------------------------------


class ConsoleKadeploy3d(Kadeploy3d):
    """The same site run by the engine runner, whose console factory runs the cluster's console command."""

    def _write(self) -> None:
        super()._write()
        cluster = yaml.safe_load((self.etc / "c1.conf").read_text())
        del cluster["automata"]  # Kadeploy3's default automata: the engine runner serves this server
        cluster["remoteops"]["console"] = [{"name": "soft", "cmd": "echo console of HOSTNAME_FQDN; sleep 60"}]
        (self.etc / "c1.conf").write_text(yaml.safe_dump(cluster))
        (self.etc / "keys").mkdir()
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.etc / "keys" / "id_deploy")],
                       check=True, timeout=30)

    module = "kadeploy.server.daemon"


@pytest.fixture(scope="module")
def console_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    daemon = ConsoleKadeploy3d(tmp_path_factory.mktemp("kadeploy3d-console"))
    daemon.start()
    try:
        real(daemon, "karights3", "-a", "-m", NODES[0], "-p", "*", "-u", "alice", user="root")
        yield daemon
    finally:
        daemon.stop()


def on_a_terminal(server: Kadeploy3d, *args: str, user: str) -> tuple[int, str]:
    """Run a tool with its stdin on a pseudo-terminal (kaconsole3 wants one); its exit status and stderr."""
    master, slave = pty.openpty()
    try:
        done = subprocess.run([sys.executable, "-m", f"kadeploy.cli.{args[0]}", *args[1:]], stdin=slave,
                              capture_output=True, text=True, env=server.env(user), timeout=60, check=False)
    finally:
        os.close(slave)
        os.close(master)
    return done.returncode, done.stderr


def test_kaconsole3_dry_run_opens_no_console(console_server):
    dry_run(console_server, "kaconsole3", "-m", NODES[0], user="alice")
    with console_server.http("alice") as alice:
        opened = alice.post("/console", json={"node": NODES[0]})
        assert opened.status_code == 200, opened.text  # the real request opens one
        try:
            assert [c["id"] for c in alice.get("/console").json()] == [opened.json()["wid"]]  # console_get: :id
            before = picture(console_server)
            dry = alice.delete(f"/console/{opened.json()['wid']}", params={"dry_run": "true"})
            assert dry.json() == {"dry_run": True, "wid": opened.json()["wid"]}
            assert picture(console_server) == before  # still open
        finally:
            alice.delete(f"/console/{opened.json()['wid']}")


def test_kaconsole3_dry_run_fails_as_the_real_request(console_server, server, site):
    for daemon, user, code in ((console_server, "bob", 6), (server, "alice", 15)):  # no right; no console support
        refused = on_a_terminal(daemon, "kaconsole3", "-m", NODES[0], user=user)
        dry = daemon.tool("kaconsole3", "-m", NODES[0], "--dry-run", user=user)
        assert refused[0] == code and refused[1].strip(), refused
        assert (dry.returncode, dry.stderr) == refused
