"""Macro-step implementations chosen by `--force-steps`, fallbacks and breakpoints.

One batch of four deployments side by side:
* node 1: `--breakpoint SetDeploymentEnvUntrusted:reboot`: the PXE profile is switched
  but the node is not rebooted; it is reported OK (breakpointed).
* node 2: Classical fails (the deployment environment's sshd is killed after the
  broadcast by a custom operation) and the fallback BootNewEnvHardReboot boots the
  node through its BMC.
* node 3: Untrusted + Chain + Classical.
* node 4: a deployment on the prod partition (2), with the deploy key installed, so
  that the next batch can use SetDeploymentEnvProd (no first reboot).
"""

from __future__ import annotations

import socket

import pytest
import yaml
from scenario import assert_batch_ok, workflow_id

pytestmark = [pytest.mark.e2e, pytest.mark.root, pytest.mark.testbed]

# The deployment environment loses its sshd when BootNewEnv starts (the operation's own
# session dies with it): BootNewEnvClassical cannot reach the node any more.
KILL_SSHD = {
    "BootNewEnvClassical": {
        "umount_deploy_part": {
            "pre-ops": [{"action": "exec", "name": "kill_sshd", "command": "pkill -x sshd; sleep 5"}],
        },
    },
}


def _ip_hex(ip: str) -> str:
    return "".join(f"{int(part):02X}" for part in ip.split("."))


@pytest.fixture(scope="module")
def automata_batch(site, tmp_path_factory):
    out = tmp_path_factory.mktemp("automata")
    custom = out / "kill-sshd.yaml"
    custom.write_text(yaml.safe_dump(KILL_SSHD))
    n1, n2, n3, n4 = site.nodes[:4]
    before = site.node_status()[n1]

    def deploy(node: str, *args: str) -> list[str]:
        return ["kadeploy3", "-e", "debian12-min", "-m", node, "-o", str(out / f"{node}.ok"),
                "-n", str(out / f"{node}.ko"), *args]

    results = site.tools({
        n1: deploy(n1, "-k", f"{site.user_key}.pub", "--breakpoint", "SetDeploymentEnvUntrusted:reboot"),
        n2: deploy(n2, "-k", f"{site.user_key}.pub", "--custom-steps", str(custom), "-V", "4", "--force-steps",
                   "SetDeploymentEnv|SetDeploymentEnvUntrusted:0:200&BroadcastEnv|BroadcastEnvKascade:0:200"
                   "&BootNewEnv|BootNewEnvClassical:0:100,BootNewEnvHardReboot:0:150"),
        n3: deploy(n3, "-k", f"{site.user_key}.pub", "--force-steps",
                   "SetDeploymentEnv|SetDeploymentEnvUntrusted:0:200&BroadcastEnv|BroadcastEnvChain:0:200"
                   "&BootNewEnv|BootNewEnvClassical:0:150"),
        n4: deploy(n4, "-k", str(site.admin_keys), "-p", "2"),
    })
    assert_batch_ok(results, out)
    return results, before


def _steps(site, result) -> list[str]:
    return site.tool("kastat3", "-w", workflow_id(result), "-F", "step1,step2,step3,success").stdout.split()


def test_breakpoint_at_reboot_switches_pxe_but_does_not_reboot(site, automata_batch) -> None:
    _, before = automata_batch
    node = site.nodes[0]
    status = site.node_status()[node]
    # still the system it ran before, never rebooted during the deployment
    assert status["state"] == before["state"] and status["boot_count"] == before["boot_count"], (before, status)
    profile = (site.directory / "tftpboot" / "pxelinux.cfg" / _ip_hex(socket.gethostbyname(node))).read_text()
    assert "deploy-vmlinuz" in profile
    state = yaml.safe_load(site.tool("kanodes3", "-s", "-m", node).stdout)
    assert state[node]["state"] in ("deployed", "brk"), state


def test_classical_failure_falls_back_to_hard_reboot(site, automata_batch) -> None:
    results, _ = automata_batch
    node = site.nodes[1]
    site.assert_debian_on_partition(node)
    assert "Performing a Deploy[BootNewEnvHardReboot] step" in results[node].stdout, results[node].stdout
    assert _steps(site, results[node]) == ["SetDeploymentEnvUntrusted,BroadcastEnvKascade,BootNewEnvHardReboot,true"]


def test_untrusted_chain_classical(site, automata_batch) -> None:
    results, _ = automata_batch
    node = site.nodes[2]
    site.assert_debian_on_partition(node)
    assert _steps(site, results[node]) == ["SetDeploymentEnvUntrusted,BroadcastEnvChain,BootNewEnvClassical,true"]


def test_prod_partition_deployment_then_set_deployment_env_prod(site, automata_batch, tmp_path) -> None:
    node = site.nodes[3]
    site.assert_debian_on_partition(node, 2)
    before = site.node_status()[node]
    result = site.tool("kadeploy3", "-e", "debian12-min", "-m", node, "-k", f"{site.user_key}.pub",
                       "-o", str(tmp_path / "ok"), "--force-steps",
                       "SetDeploymentEnv|SetDeploymentEnvProd:0:100&BroadcastEnv|BroadcastEnvKascade:0:200"
                       "&BootNewEnv|BootNewEnvClassical:0:150")
    assert (tmp_path / "ok").read_text().split() == [node], result.stdout
    assert "wait_reboot" not in result.stdout.split("Performing a Deploy[BroadcastEnv")[0]
    site.assert_debian_on_partition(node, 3)
    assert _steps(site, result) == ["SetDeploymentEnvProd,BroadcastEnvKascade,BootNewEnvClassical,true"]
    assert before["state"] == "partition 2"
