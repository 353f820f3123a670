"""OAR and Slurm hooks against a real kadeploy3d: rights granted for the job, revoked (and work stopped) at its end."""

from __future__ import annotations

import pytest

from kadeploy3d import NODES



@pytest.fixture
def env(server) -> dict:
    """An anonymous environment whose image is a server file the Dummy runner grabs."""
    image = server.envs / "e.tgz"
    image.write_bytes(b"not really an image")
    return {"kind": "anonymous", "name": "e", "os": "linux", "filesystem": "ext4", "boot": {"kernel": "/vmlinuz"},
            "image": {"file": f"server://{image}", "kind": "tar", "compression": "gzip"}}

pytestmark = pytest.mark.slow
# long enough for the epilogue (a Python process) to run while the deployment is still going
DUMMY_DELAY = 8.0


def rights_of(server, user: str) -> dict:
    with server.http("root") as root:
        answer = root.get(f"/rights/{user}")
        return {} if answer.status_code == 404 else answer.json().get(user, {})  # 404: no rights (karights.rb)


def test_oar_prologue_grants_and_epilogue_revokes_and_stops_the_deployment(server, env, tmp_path):
    node_file = tmp_path / "oar_nodefile"
    node_file.write_text("".join(f"{node}\n" * 4 for node in NODES[:2]))  # OAR: one line per core
    granted = server.script("oar-prologue", OAR_JOB_ID="42", OAR_JOB_USER="alice", OAR_NODEFILE=str(node_file))
    assert granted.returncode == 0, granted.stderr
    assert "granted to alice" in granted.stdout
    assert rights_of(server, "alice") == {NODES[0]: ["*"], NODES[1]: ["*"]}

    with server.http("alice") as alice:
        outside = alice.post("/deployment", json={"nodes": NODES[1:3], "environment": env})
        assert outside.status_code == 400 and outside.headers["X-Application-Error-Code"] == "6"
        wid = alice.post("/deployment", json={"nodes": NODES[:2], "environment": env}).json()["wid"]
        # the job ends while the deployment runs (the Dummy runner takes DUMMY_DELAY s)
        revoked = server.script("oar-epilogue", "42", "alice", str(node_file))  # OAR's positional arguments
        assert revoked.returncode == 0, revoked.stderr
        info = server.wait_done(alice, f"/deployment/{wid}")
        assert info["error"] is True and info["done"] is True
        assert alice.get(f"/deployment/{wid}/state").json()[NODES[0]]["state"] == "aborted"
    assert rights_of(server, "alice") == {}
    again = server.script("oar-epilogue", OAR_USER="alice", OAR_FILE_NODES=str(node_file))
    assert again.returncode == 0, again.stderr  # nothing left to revoke is not an error for the scheduler


def test_slurm_prolog_and_epilog_with_a_slurm_nodelist_and_short_names(server, env):
    variables = {"SLURM_JOB_ID": "7", "SLURM_JOB_USER": "bob", "SLURM_JOB_NODELIST": "node-[3-4]",
                 "KADEPLOY_NODE_SUFFIX": ".c1.test"}
    granted = server.script("slurm-prolog", **variables)
    assert granted.returncode == 0, granted.stderr
    assert rights_of(server, "bob") == {NODES[2]: ["*"], NODES[3]: ["*"]}
    with server.http("bob") as bob:
        wid = bob.post("/deployment", json={"nodes": NODES[2:4], "environment": env}).json()["wid"]
        assert server.wait_done(bob, f"/deployment/{wid}")["nodes"]["ok"] == NODES[2:4]
    revoked = server.script("slurm-epilog", **variables)
    assert revoked.returncode == 0, revoked.stderr
    assert rights_of(server, "bob") == {}


def test_a_new_job_takes_the_nodes_from_the_previous_user(server):
    assert server.script("slurm-prolog", SLURM_JOB_USER="carol", SLURM_JOB_NODELIST=NODES[0]).returncode == 0
    assert server.script("slurm-prolog", SLURM_JOB_USER="dave", SLURM_JOB_NODELIST=NODES[0]).returncode == 0
    assert rights_of(server, "carol") == {} and rights_of(server, "dave") == {NODES[0]: ["*"]}
    assert server.script("slurm-epilog", SLURM_JOB_USER="dave", SLURM_JOB_NODELIST=NODES[0]).returncode == 0


@pytest.mark.parametrize("hook, variables, message", [
    ("slurm-prolog", {"SLURM_JOB_NODELIST": "node-1.c1.test"}, "SLURM_JOB_USER"),
    ("slurm-prolog", {"SLURM_JOB_USER": "bob"}, "SLURM_JOB_NODELIST"),
    ("oar-prologue", {"OAR_JOB_USER": "bob"}, "node file"),
    ("oar-prologue", {"OAR_JOB_USER": "bob", "OAR_NODEFILE": "/nonexistent/nodes"}, "Cannot read"),
    ("slurm-prolog", {"SLURM_JOB_USER": "bob; rm -rf /", "SLURM_JOB_NODELIST": "node-1.c1.test"}, "Refusing"),
    ("slurm-prolog", {"SLURM_JOB_USER": "bob", "SLURM_JOB_NODELIST": "node-9.c1.test"}, "node-9.c1.test"),
])
def test_a_hook_that_cannot_set_the_rights_fails_with_the_reason(server, hook, variables, message):
    done = server.script(hook, **variables)
    assert done.returncode != 0
    assert message in done.stderr and "Traceback" not in done.stderr
