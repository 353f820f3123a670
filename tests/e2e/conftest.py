"""The end-to-end harness: a real testbed, a real kadeploy3d, the real CLI tools.

One session-scoped `Site` brings up a 4-node netns testbed in its own
directory, starts `kadeploy3d` on the configuration the testbed wrote
(SQLite, local files), registers the debian12-min environments built by
`kadeploy-testbed image build` as public ones, and tears everything down at
the end. Scenarios run the user tools as subprocesses, exactly as a user
would, and check the outcome on the nodes over SSH.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml

from kadeploy_testbed.answering import wait_answering
from tests.deployed import assert_debian_on_partition
from tests.processgroups import stop_process

E2E_DIR = Path(os.environ.get("KADEPLOY_E2E_DIR", "/var/lib/kadeploy-testbed-e2e"))
# 6 nodes: the scenarios use the first 4; the reboot-window check needs more nodes than the window
NODES = int(os.environ.get("KADEPLOY_E2E_NODES", "6"))
SSH_OPTIONS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
               "-o", "BatchMode=yes", "-o", "ConnectTimeout=5"]


@dataclass
class Site:
    """A running testbed + server, and how to use them."""

    directory: Path
    nodes: list[str]
    node_file: Path
    user_key: Path
    environments: dict[str, Path]
    server: subprocess.Popen | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def etc(self) -> Path:
        return self.directory / "etc"

    def tool(self, *args: str, user: str = "root", check: bool = True, timeout: float = 900,
             input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a Kadeploy tool (kadeploy3, kaenv3...) as `user`; fail the test with its output if asked."""
        env = dict(self.env, USER=user)
        result = subprocess.run(list(args), capture_output=True, text=True, env=env, timeout=timeout, input=input)
        if check and result.returncode != 0:
            pytest.fail(f"{' '.join(args)} exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}")
        return result

    def ssh(self, node: str, command: str, *, check: bool = True, key: Path | None = None,
            timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a command on a node as root with the user's key (what `-k` installed)."""
        result = subprocess.run(["ssh", *SSH_OPTIONS, "-i", str(key or self.user_key), f"root@{node}", command],
                                capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            pytest.fail(f"ssh {node} {command!r} exited {result.returncode}: {result.stderr}")
        return result

    def testbed(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["kadeploy-testbed", "--dir", str(self.directory), *args], capture_output=True,
                              text=True, check=check, timeout=120)

    def start_server(self) -> None:
        """Start kadeploy3d on the testbed configuration and wait until it answers."""
        with (self.directory / "log" / "kadeploy3d.out").open("ab") as log:
            self.server = subprocess.Popen(["kadeploy3d"], env=self.env, stdout=log, stderr=subprocess.STDOUT)
        wait_answering("http://10.200.0.1:25300/version", self.server, 30)

    def stop_server(self, *, crash: bool = False) -> None:
        """Stop kadeploy3d: SIGTERM, or SIGKILL to play a crash."""
        if self.server is None or self.server.poll() is not None:
            return
        if crash:
            self.server.kill()
            self.server.wait(timeout=30)
        else:
            stop_process(self.server)

    @contextlib.contextmanager
    def other_server(self, name: str, port: int,
                     edit: Callable[[Path], None] = lambda etc: None) -> Iterator[dict[str, str]]:
        """Another kadeploy3d on the testbed: the site's configuration copied to `<dir>/<name>/etc`
        with its own port, database, cache and client.conf, changed by `edit(etc)`, then started
        with debian12-min registered. Yields the tools' environment for it; stops it at the end.
        Its log is `<dir>/<name>/output.log`."""
        etc = self.directory / name / "etc"
        if etc.parent.exists():
            shutil.rmtree(etc.parent)
        shutil.copytree(self.etc, etc)
        server = yaml.safe_load((etc / "server.conf").read_text())
        server["network"]["ports"]["kadeploy_server"] = port
        server["database"]["name"] = str(etc.parent / "kadeploy.db")
        server["cache"]["directory"] = str(etc.parent / "cache")
        (etc / "server.conf").write_text(yaml.safe_dump(server, sort_keys=False))
        (etc / "client.conf").write_text(yaml.safe_dump({
            "default": name, "servers": [{"name": name, "hostname": "10.200.0.1", "port": port, "secure": False}]}))
        edit(etc)
        env = dict(self.env, KADEPLOY3_CONFIG_DIR=str(etc), KADEPLOY3_LOG_DIR=str(etc.parent),
                   KADEPLOY3_RUN_DIR=str(etc.parent), USER="root")
        with (etc.parent / "kadeploy3d.out").open("wb") as log:
            process = subprocess.Popen(["kadeploy3d"], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_answering(f"http://10.200.0.1:{port}/version", process, 30)
            subprocess.run(["kaenv3", "-a", str(self.environments["debian12-min"])], check=True, env=env,
                           capture_output=True, timeout=120)
            yield env
        finally:
            stop_process(process)

    def api(self, method: str, path: str, *, user: str = "root", **kwargs) -> httpx.Response:
        """A direct HTTP request to kadeploy3d (what the tools do), for polling a workflow's state."""
        return httpx.request(method, f"http://10.200.0.1:25300{path}", headers={"X-Kadeploy-User": user},
                             timeout=10, **kwargs)

    @property
    def deploy_key_pub(self) -> Path:
        return self.etc / "keys" / "id_deploy.pub"

    @property
    def admin_keys(self) -> Path:
        """The user key plus the server's deploy key: what lets a deployed system be
        reached by the server afterwards (SetDeploymentEnvKexec, SetDeploymentEnvProd,
        soft reboots), as Grid'5000's reference images do."""
        path = self.directory / "user_and_deploy_keys"
        if not path.exists():
            path.write_text(Path(f"{self.user_key}.pub").read_text() + self.deploy_key_pub.read_text())
        return path

    def tools(self, commands: Mapping[str, Sequence[str]], *, user: str = "root",
              timeout: float = 900) -> dict[str, subprocess.CompletedProcess[str]]:
        """Run several tools at once (each on its own nodes), as several users of one site would.

        Why: a deployment takes about 35 s whatever the node count, so scenarios on
        disjoint nodes run side by side to keep the suite short.
        """
        env = dict(self.env, USER=user)
        started = {name: subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                          env=env) for name, argv in commands.items()}
        results = {}
        deadline = time.monotonic() + timeout
        for name, process in started.items():
            try:
                stdout, stderr = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                stdout, stderr = process.communicate()
            results[name] = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
        return results

    def node_status(self) -> dict[str, dict[str, object]]:
        """What the testbed says of each node: power, state (deploy-env, partition N, hung...), since."""
        answer = json.loads(self.testbed("status", "--json").stdout)
        return {entry["node"]: entry for entry in answer}

    def wait_node_state(self, node: str, predicate, timeout: float = 60) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while True:
            entry = self.node_status()[node]
            if predicate(entry):
                return entry
            if time.monotonic() > deadline:
                pytest.fail(f"{node} did not reach the expected state within {timeout}s: {entry}")
            time.sleep(0.5)

    def disk(self, node: str) -> str:
        """The host loop device behind a node's /dev/sda (its partitions are <loop>pN)."""
        state = json.loads((self.directory / "state.json").read_text())
        index = node.split(".")[0].rsplit("-", 1)[1]
        return state["loops"][index]

    def blkid(self, node: str, partition: int | None, tag: str) -> str:
        """A tag (UUID, TYPE, PTUUID...) read on the host from the node's disk, bypassing caches."""
        device = self.disk(node) + (f"p{partition}" if partition else "")
        result = subprocess.run(["blkid", "-p", "-o", "value", "-s", tag, device], capture_output=True,
                                text=True, timeout=30)
        return result.stdout.strip()

    def assert_debian_on_partition(self, node: str, partition: int = 3, *, key: Path | None = None) -> None:
        """The node runs the deployed Debian 12 (its own sshd) from partition `partition`."""
        assert_debian_on_partition(lambda command: self.ssh(node, command, key=key).stdout, node, partition)


_RUNNING: list[Site] = []  # the site while it is up, for the early teardown below


def _take_down(site: Site) -> None:
    """Stop kadeploy3d and remove the testbed; idempotent."""
    if site in _RUNNING:
        _RUNNING.remove(site)
    site.stop_server()
    subprocess.run(["kadeploy-testbed", "--dir", str(E2E_DIR), "down"], capture_output=True, timeout=120,
                   check=False)


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Take the testbed down right after the last end-to-end test, not at the end of the session.

    Why: a full run (`.ci/run`) goes on with tests/testbed, which brings up its own testbed on
    the same bridge; only one can be up at a time. trylast: module fixtures are torn down first.
    """
    here = Path(__file__).parent
    if nextitem is None or Path(str(nextitem.path)).parent != here:
        while _RUNNING:
            _take_down(_RUNNING[0])


@pytest.fixture(scope="session")
def site() -> Iterator[Site]:
    from kadeploy_testbed.images import ensure_user_images

    if subprocess.run(["ip", "link", "show", "ktb0"], capture_output=True).returncode == 0:
        pytest.fail("A testbed is already up (bridge ktb0 exists): take it down with `kadeploy-testbed down` "
                    "before running the end-to-end suite")
    images = ensure_user_images()
    if E2E_DIR.exists():
        subprocess.run(["kadeploy-testbed", "--dir", str(E2E_DIR), "down"], capture_output=True, timeout=120)
        shutil.rmtree(E2E_DIR, ignore_errors=True)
    site = Site(E2E_DIR, [], E2E_DIR / "nodes", E2E_DIR / "user_key", dict(images.descriptions))
    try:
        subprocess.run(["kadeploy-testbed", "--dir", str(E2E_DIR), "up", "--nodes", str(NODES)], check=True,
                       capture_output=True, timeout=300)
        user_key = E2E_DIR / "user_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(user_key)], check=True)
        nodes = [line.strip() for line in (E2E_DIR / "nodes").read_text().splitlines() if line.strip()]
        site = Site(E2E_DIR, nodes, E2E_DIR / "nodes", user_key, dict(images.descriptions))
        (E2E_DIR / "log").mkdir(exist_ok=True)
        (E2E_DIR / "run").mkdir(exist_ok=True)
        site.env = dict(os.environ, KADEPLOY3_CONFIG_DIR=str(site.etc), KADEPLOY3_LOG_DIR=str(E2E_DIR / "log"),
                        KADEPLOY3_RUN_DIR=str(E2E_DIR / "run"))
        # files the scenarios publish as server:// (changed images for the checksum cases)
        (E2E_DIR / "files").mkdir(exist_ok=True)
        server_conf = site.etc / "server.conf"
        conf = yaml.safe_load(server_conf.read_text())
        conf.setdefault("environments", {}).setdefault("server_dirs", []).append(str(E2E_DIR / "files"))
        server_conf.write_text(yaml.safe_dump(conf, sort_keys=False))
        site.start_server()
        for name, description in sorted(site.environments.items()):
            site.tool("kaenv3", "-a", str(description))
        _RUNNING.append(site)
        yield site
    finally:
        _take_down(site)
