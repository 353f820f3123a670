"""The QEMU-mode harness: real VMs, firmware, kernels; kadeploy3d and the real CLI tools.

`qemu_site(nodes, method)` brings a QEMU testbed up (`kadeploy-testbed up --mode
qemu`), starts kadeploy3d on the configuration it wrote, registers debian12-min
(unless `environments=False`: a site that deploys nothing needs no user image)
and tears everything down afterwards. Only one QEMU testbed exists at a time
(one bridge `ktq0`), so sites are created one after the other.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.requirements import require

QEMU_DIR = Path(os.environ.get("KADEPLOY_QEMU_DIR", "/var/lib/kadeploy-testbed-qemu"))
CACHE = Path("/var/cache/kadeploy-testbed")
SSH_OPTIONS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
               "-o", "BatchMode=yes", "-o", "ConnectTimeout=5"]
SERVER_URL = "http://10.202.0.1:25300"


QEMU_REQUIREMENTS = ("root", "qemu", "dnsmasq", "ipmitool", "ipmi_sim", "grub", "kadeploy3d", "cpio",
                     "qemu-bridge-free")


@dataclass
class QemuSite:
    directory: Path
    nodes: list[str]
    user_key: Path
    env: dict[str, str] = field(default_factory=dict)
    server: subprocess.Popen[bytes] | None = None

    @property
    def etc(self) -> Path:
        return self.directory / "etc"

    @property
    def deploy_key(self) -> Path:
        return self.etc / "keys" / "id_deploy"

    def tool(self, *args: str, timeout: float = 1800, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(list(args), capture_output=True, text=True, env=self.env, timeout=timeout,
                                check=False)
        if check and result.returncode != 0:
            pytest.fail(f"{' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
        return result

    def ssh(self, node: str, command: str, *, key: Path | None = None, timeout: float = 30,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["ssh", *SSH_OPTIONS, "-i", str(key or self.user_key), f"root@{node}", command],
                                capture_output=True, text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            pytest.fail(f"ssh {node} {command!r} exited {result.returncode}: {result.stderr}")
        return result

    def ipmi(self, node_index: int, action: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ipmitool", "-I", "lanplus", "-C", "3", "-N", "1", "-R", "3", "-H",
                               f"node-{node_index}-bmc.qemu.testbed", "-U", "admin", "-P", "testbed",
                               "chassis", "power", action], capture_output=True, text=True, timeout=30, check=False)


def wait_port(address: str, port: int, timeout: float) -> float:
    """Seconds until `address:port` accepts a TCP connection; fails the test after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            with socket.create_connection((address, port), timeout=2):
                return time.monotonic() - started
        except OSError:
            time.sleep(2)
    pytest.fail(f"{address}:{port} not open after {timeout:.0f}s")


def _testbed(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["kadeploy-testbed", "--dir", str(QEMU_DIR), *args], capture_output=True, text=True,
                          timeout=1800, check=False)


@contextmanager
def qemu_site(nodes: int, method: str = "PXElinux", server: bool = True, *, power_method: str = "ipmi",
              environments: bool = True) -> Iterator[QemuSite]:
    require(*QEMU_REQUIREMENTS, *(("images",) if environments else ()),
            *(("sushy-tools",) if power_method == "redfish" else ()))
    up = _testbed("up", "--mode", "qemu", "--nodes", str(nodes), "--pxe-method", method,
                  "--power-method", power_method)
    if up.returncode != 0:
        _testbed("down", "--mode", "qemu")
        pytest.fail(f"kadeploy-testbed up --mode qemu failed:\n{up.stdout}\n{up.stderr}")
    site = QemuSite(directory=QEMU_DIR, nodes=[f"node-{k}.qemu.testbed" for k in range(1, nodes + 1)],
                    user_key=QEMU_DIR / "userkey")
    try:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(site.user_key)], check=True,
                       timeout=30)
        site.env = dict(os.environ, KADEPLOY3_CONFIG_DIR=str(site.etc), KADEPLOY3_LOG_DIR=str(QEMU_DIR / "log"),
                        KADEPLOY3_RUN_DIR=str(QEMU_DIR / "krun"), USER="root")
        if server:
            (QEMU_DIR / "log").mkdir(exist_ok=True)
            with (QEMU_DIR / "log" / "kadeploy3d.out").open("ab") as log:
                site.server = subprocess.Popen(["kadeploy3d"], env=site.env, stdout=log, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(f"{SERVER_URL}/version", timeout=5).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if site.server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("kadeploy3d did not start on the QEMU configuration")
                time.sleep(1)
            if environments:
                site.tool("kaenv3", "-a", str(CACHE / "user-images" / "debian12-min.yaml"))
        yield site
    finally:
        if site.server is not None and site.server.poll() is None:
            site.server.terminate()
            try:
                site.server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                site.server.kill()
                site.server.wait(timeout=30)
        for made in ("userkey", "userkey.pub"):
            (QEMU_DIR / made).unlink(missing_ok=True)
        for made in ("log", "krun"):  # kadeploy3d's logs go with the testbed (copy them on failure if needed)
            shutil.rmtree(QEMU_DIR / made, ignore_errors=True)
        down = _testbed("down", "--mode", "qemu")
        assert down.returncode == 0, down.stderr
