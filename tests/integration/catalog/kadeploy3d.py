"""kadeploy3d's code on 127.0.0.1 with rights in the DB, and the CLI tools pointed at it.

It runs as the testbed's dummy daemon (`kadeploy_testbed.dummy`: the real server
whose runner touches no node); a subclass sets `module` to run `kadeploy3d` itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from kadeploy_testbed.answering import NotAnswering, wait_answering
from tests.ports import free_port

NODES = [f"node-{i}.c1.test" for i in range(1, 5)]
REPO = Path(__file__).resolve().parents[3]


class Kadeploy3d:
    """Writes etc/ (server.conf, clusters.conf, c1.conf, client.conf, envs/) and runs the daemon."""

    module = "kadeploy_testbed.dummy"

    def __init__(self, directory: Path, delay: float = 0.0) -> None:
        self.directory = directory
        self.etc = directory / "etc"
        self.envs = self.etc / "envs"
        self.port = free_port()
        self.delay = delay
        self.process: subprocess.Popen | None = None
        self._write()

    def _write(self) -> None:
        self.envs.mkdir(parents=True, exist_ok=True)
        etc = self.etc
        (etc / "partitioning.sh").write_text("#!/bin/sh\ntrue\n")
        (etc / "bootloader.sh").write_text("#!/bin/sh\ntrue\n")
        server = {
            "database": {"kind": "sqlite", "name": str(self.directory / "kadeploy.db")},
            "rights": {"kind": "db", "almighty_users": "root"},
            "authentication": {"acl": {"whitelist": ["127.0.0.1"]}},
            "security": {"secure_server": False},
            "cache": {"directory": str(self.directory / "cache"), "size": 10},
            "network": {"server_hostname": "127.0.0.1", "ports": {"kadeploy_server": self.port}},
            "pxe": {"dhcp": {"method": "PXElinux", "repository": str(self.directory / "tftpboot"),
                             "export": {"kind": "tftp", "server": "127.0.0.1"}}},
        }
        clusters = {"clusters": [{"name": "c1", "conf_file": "c1.conf",
                                  "nodes": [{"name": "node-[1-4].c1.test", "address": "10.250.0.[1-4]"}]}]}
        cluster = {
            "partitioning": {"block_device": "/dev/sda", "partitions": {"swap": 1, "prod": 2, "deploy": 3},
                             "script": str(etc / "partitioning.sh")},
            "boot": {"install_bootloader": str(etc / "bootloader.sh"),
                     "kernels": {"deploy": {"vmlinuz": "k", "initrd": "i"}}},
            "remoteops": {"reboot": [{"name": "soft", "cmd": "true"}]},
            "automata": {"macrosteps": {"SetDeploymentEnv": [{"type": "Dummy", "timeout": 600}],
                                        "BroadcastEnv": [{"type": "Dummy", "timeout": 600}],
                                        "BootNewEnv": [{"type": "Dummy", "timeout": 600}]}},
        }
        (etc / "server.conf").write_text(yaml.safe_dump(server))
        (etc / "clusters.conf").write_text(yaml.safe_dump(clusters))
        (etc / "c1.conf").write_text(yaml.safe_dump(cluster))
        (etc / "version").write_text("3.3.11.test\n")
        (etc / "client.conf").write_text(yaml.safe_dump({"default": "test", "servers": [
            {"name": "test", "hostname": "127.0.0.1", "port": self.port, "secure": False}]}))

    def env(self, user: str = "root", **extra: str) -> dict[str, str]:
        """Environment for the daemon and the CLI tools (client.conf in the same directory)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OAR_", "SLURM_", "KADEPLOY"))}
        env.update({"KADEPLOY3_CONFIG_DIR": str(self.etc), "KADEPLOY3_LOG_DIR": str(self.directory / "log"),
                    "KADEPLOY3_RUN_DIR": str(self.directory / "run"),
                    "KADEPLOY3_DUMMY_DELAY": str(self.delay), "KADEPLOY3_DUMMY_GRAB": "1", "USER": user})
        env.update(extra)
        return env

    def start(self) -> None:
        self.process = self._spawn()
        try:
            wait_answering(f"{self.url}/version", self.process, 60, printed=self._printed)
        except NotAnswering:
            self.stop()
            raise

    def _spawn(self) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", self.module], env=self.env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def _printed(self) -> str:
        """What the daemon wrote on stderr, once it has exited."""
        process = self.process
        return process.stderr.read().decode(errors="replace") if process and process.poll() is not None else ""

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def http(self, user: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"X-Kadeploy-User": user}, timeout=10)

    def tool(self, module: str, *args: str, user: str = "root", **env: str) -> subprocess.CompletedProcess:
        """Run a CLI tool (`kastat3`...) as `user`."""
        return subprocess.run([sys.executable, "-m", f"kadeploy.cli.{module}", *args], env=self.env(user, **env),
                              capture_output=True, text=True, timeout=120, check=False)

    def script(self, name: str, *args: str, **env: str) -> subprocess.CompletedProcess:
        """Run one of scripts/scheduler/ as root with the scheduler's variables."""
        return subprocess.run([str(REPO / "scripts" / "scheduler" / name), *args], env=self.env("root", **env),
                              capture_output=True, text=True, timeout=120, check=False)

    def wait_done(self, client: httpx.Client, path: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = client.get(path).json()
            if info["done"]:
                return info
            time.sleep(0.1)
        raise AssertionError(f"{path} did not finish within {timeout} s")
