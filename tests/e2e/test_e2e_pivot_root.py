"""BootNewEnvPivotRoot on the netns testbed: the kernel check, the fallback to Kexec, and the statistics.

What this testbed can prove: its nodes run the host's kernel, never the
image's, so the environment's kernel (debian12-min's Debian kernel, read from
its bzImage header on the deployed partition) is not the running one and
BootNewEnvPivotRoot must not apply; the node goes on to the next
implementation (Kexec) with a line saying both versions, and the statistics
hold both implementations. The switch itself (a PID 1 exec'ing switch_root,
no firmware) is proven on the QEMU testbed (tests/qemu/test_qemu_deploy.py).
"""

from __future__ import annotations

import os

import pytest
from scenario import workflow_id

pytestmark = [pytest.mark.e2e, pytest.mark.root, pytest.mark.testbed]

STEPS = ("SetDeploymentEnv|SetDeploymentEnvUntrusted:0:200&BroadcastEnv|BroadcastEnvChain:0:200"
         "&BootNewEnv|BootNewEnvPivotRoot:0:150,BootNewEnvKexec:0:150")


def test_another_kernel_falls_back_to_kexec_saying_why_and_kastat_shows_both(site) -> None:
    node = site.nodes[0]
    result = site.tool("kadeploy3", "-e", "debian12-min", "-m", node, "-k", f"{site.user_key}.pub",
                       "-V", "4", "--force-steps", STEPS)
    assert "The deployment is successful on nodes" in result.stdout, result.stdout
    running = os.uname().release  # the netns nodes run the host's kernel
    said = [line for line in result.stdout.splitlines() if "BootNewEnvPivotRoot does not apply" in line]
    assert len(said) == 1, result.stdout
    assert f"the environment's kernel is 6." in said[0] and f"the running kernel is {running})" in said[0]
    assert "the next implementation of the macro-step will boot it" in said[0]
    assert "Performing a Deploy[BootNewEnvKexec] step" in result.stdout
    site.assert_debian_on_partition(node)

    wid = workflow_id(result)
    record = site.tool("kastat3", "-w", wid, "-F", "step3,retry_step3,success").stdout.split()
    assert record == ["BootNewEnvKexec,1,true"], record
    steps = site.tool("kastat3", "-w", wid, "--steps").stdout
    micro = [line.split()[0] for line in steps.splitlines() if line.startswith("BootNewEnv")]
    assert "BootNewEnvKexec" in micro and "BootNewEnvPivotRoot/check_same_kernel" in micro, steps
