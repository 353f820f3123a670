"""Each PXE method's profile, as switch_pxe writes it, is fetched by the VM's real firmware
(iPXE ROM, then PXELINUX, iPXE script or GRUB) and boots the deployment kernel.

Slow and root-only: one 1-VM QEMU testbed per method, without kadeploy3d.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from kadeploy.boot.pxe import BootTarget, PXEMethodSettings, PXEProfiles
from kadeploy.config import load_config
from tests.qemu.conftest import qemu_site, wait_port

pytestmark = [pytest.mark.slow, pytest.mark.root]

BOOT_TIMEOUT = float(os.environ.get("KADEPLOY_QEMU_BOOT_TIMEOUT", "900"))
# PXElinux also boots the deployment kernel in every deployment of test_qemu_deploy.py
METHODS = os.environ.get("KADEPLOY_QEMU_PXE_METHODS", "IPXE,GrubPXE,PXElinux").split(",")


@pytest.mark.parametrize("method", METHODS)
def test_pxe_method_boots_the_deployment_kernel(method: str) -> None:
    with qemu_site(1, method, server=False) as site:
        cfg = load_config(site.etc)
        dhcp = cfg.server.pxe.dhcp
        settings = PXEMethodSettings(method=dhcp.method, repository=Path(dhcp.repository),
                                     profiles_directory=dhcp.profiles.directory,
                                     profiles_filename=dhcp.profiles.filename,
                                     export_kind=dhcp.export.kind, export_server=dhcp.export.server)
        kernel = cfg.clusters["qemu"].boot.kernels.deploy
        written = PXEProfiles(dhcp=settings).deploy_kernel([BootTarget(site.nodes[0], "10.202.1.1")],
                                                          kernel.vmlinuz, kernel.initrd, kernel.params)
        assert written.ok == [site.nodes[0]], written.ko
        assert "off" in site.ipmi(1, "status").stdout
        power = site.ipmi(1, "on")
        assert power.returncode == 0, power.stderr
        seconds = wait_port("10.202.1.1", 25300, BOOT_TIMEOUT)
        wait_port("10.202.1.1", 22, 120)
        cmdline = site.ssh(site.nodes[0], "cat /proc/cmdline", key=site.deploy_key).stdout
        assert kernel.params.split()[0] in cmdline
        assert "on" in site.ipmi(1, "status").stdout
        assert site.ipmi(1, "off").returncode == 0
        deadline = time.monotonic() + 30  # the BMC asks QEMU to stop, then waits for the process to end
        while "off" not in site.ipmi(1, "status").stdout:
            assert time.monotonic() < deadline, "still on 30s after power off"
            time.sleep(1)
        print(f"\n{method}: power on -> deployment environment reachable in {seconds:.0f}s")
