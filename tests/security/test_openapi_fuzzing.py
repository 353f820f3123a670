"""Schemathesis against the /openapi.json of a real kadeploy3d: no server error, answers as declared.

The daemon is the testbed's dummy kadeploy3d (the real server, a runner that
touches no node) on 127.0.0.1 in ACL mode, as tests/integration/catalog
starts it. `alice` holds rights on two of the four nodes and has recorded an
environment; `st run` (every phase: coverage with its boundary and negative
values, fuzzing, stateful) goes through every operation of the document, once
as `alice` and once as `root` (an administrator), with a bounded number of
examples per operation so that both runs take a few minutes on two cores.

Checks: `not_a_server_error`; `response_schema_conformance` and
`response_headers_conformance` where the document declares the answer (the 400
declares Kadeploy3's error headers); and `kadeploy3_answers`
(schemathesis_hooks.py): only Kadeploy3's statuses, error headers and message
on every 400, no traceback in a body. Afterwards the daemon is alive and its
log holds no traceback. `KADEPLOY_FUZZ_EXAMPLES` (default 20) sets the
examples per operation, `KADEPLOY_FUZZ_SEED` the seed (default fixed, so a
failure reproduces; any other value explores further).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[0] / "integration" / "catalog"))
from kadeploy3d import Kadeploy3d  # noqa: E402

from tests.requirements import require  # noqa: E402

require("schemathesis")
sys.path.insert(0, str(HERE))
from schemathesis_hooks import ENV_NAME, SCRATCH_NAME  # noqa: E402

EXAMPLES = int(os.environ.get("KADEPLOY_FUZZ_EXAMPLES", "20"))
SEED = os.environ.get("KADEPLOY_FUZZ_SEED", "16016016016")
CHECKS = "not_a_server_error,response_schema_conformance,response_headers_conformance,kadeploy3_answers"
RUN_TIMEOUT = 300
# one worker: Hypothesis describes a strategy's lambdas by parsing their source with `ast`, which is not
# thread-safe; with `--workers 2` a run now and then dies of "AST constructor recursion depth mismatch"

# the `st` command, run by this interpreter (its script directory need not be on PATH)
ST = [sys.executable, "-c", "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())"]


class FuzzedKadeploy3d(Kadeploy3d):
    """The catalog tests' daemon, its stderr kept in a file (a fuzzing run writes more than a pipe holds)."""

    def _spawn(self) -> subprocess.Popen:
        self.stderr = self.directory / "kadeploy3d.stderr"
        with open(self.stderr, "wb") as err:
            return subprocess.Popen([sys.executable, "-m", self.module], env=self.env(),
                                    stdout=subprocess.DEVNULL, stderr=err)

    def _printed(self) -> str:
        return self.stderr.read_text(errors="replace")

    def logged_tracebacks(self) -> str:
        """What the daemon wrote around each traceback (its log files and stderr)."""
        found = []
        for path in [self.stderr, *sorted((self.directory / "log").glob("*"))]:
            if path.is_file():
                text = path.read_text(errors="replace")
                if "Traceback (most recent call last)" in text:
                    found.append(f"--- {path.name}\n{text[-4000:]}")
        return "\n".join(found)


def _tgz() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        data = b"fuzz\n"
        info = tarfile.TarInfo("etc/fuzz")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def give_alice_her_footing(daemon: FuzzedKadeploy3d) -> None:
    """Rights on node-1 and node-2 and her two environments, whatever an earlier run deleted."""
    with daemon.http("root") as root:
        granted = root.post("/rights", json={"username": "alice", "nodes": ["node-1.c1.test", "node-2.c1.test"],
                                             "partitions": ["*"], "overwrite": True})
        assert granted.status_code == 200 or "already set" in granted.text, granted.text
    image = daemon.envs / "fuzz-env.tgz"
    with daemon.http("alice") as alice:
        for name in (ENV_NAME, SCRATCH_NAME):
            if alice.get("/environments", params={"username": "alice", "name": name}).json():
                continue
            recorded = alice.post("/environments", json={"environment": {
                "name": name, "version": 1, "os": "linux", "filesystem": "ext4",
                "boot": {"kernel": "/vmlinuz", "initrd": "/initrd.img"},
                "image": {"file": f"server://{image}", "kind": "tar", "compression": "gzip"}}})
            assert recorded.status_code == 200, recorded.text


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzedKadeploy3d]:
    daemon = FuzzedKadeploy3d(tmp_path_factory.mktemp("fuzzed-kadeploy3d"))
    (daemon.envs / "fuzz-env.tgz").write_bytes(_tgz())
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.mark.parametrize("user", ["alice", "root"])
def test_no_server_error_and_declared_answers_on_every_operation(server: FuzzedKadeploy3d, user: str,
                                                                 tmp_path: Path) -> None:
    give_alice_her_footing(server)
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "schemathesis_hooks",
           "KADEPLOY_FUZZ_IMAGE": str(server.envs / "fuzz-env.tgz"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))}
    report = tmp_path / "report"
    command = [*ST, "run", f"{server.url}/openapi.json", "-H", f"X-Kadeploy-User: {user}",
               "--checks", CHECKS, "--max-examples", str(EXAMPLES), "--seed", SEED, "--workers", "1",
               "--request-timeout", "30", "--suppress-health-check", "all", "--generation-database", "none",
               "--warnings", "off", "--report", "junit", "--report-dir", str(report)]
    started = time.monotonic()
    run = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=RUN_TIMEOUT,
                         check=False)
    elapsed = time.monotonic() - started
    output = run.stdout[-12000:] + run.stderr[-4000:]
    assert run.returncode == 0, f"schemathesis as {user} found failures ({elapsed:.0f} s):\n{output}"
    assert "62 selected" in run.stdout or "Tested:" in run.stdout, output
    assert server.process is not None and server.process.poll() is None, "kadeploy3d died during the run"
    assert httpx.get(f"{server.url}/version", timeout=5).status_code == 200
    tracebacks = server.logged_tracebacks()
    assert not tracebacks, f"kadeploy3d logged tracebacks while fuzzed as {user}:\n{tracebacks}"
