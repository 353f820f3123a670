"""kareboot3 (simple, set_pxe, deploy_env, recorded_env, `-c`), kapower3 (on, off, status)
and the soft -> hard escalation, against the testbed BMCs (Kadeploy3's test_kareboot.rb
and test_kapower.rb). Checks are made on the nodes and on the testbed's view of them.
"""

from __future__ import annotations

import time

import pytest
import yaml
from scenario import machine_args

pytestmark = [pytest.mark.e2e, pytest.mark.root, pytest.mark.testbed]


@pytest.fixture(scope="module")
def deployed(site, tmp_path_factory):
    """Every node runs debian12-min with the deploy key (soft reboots by ssh work);
    node 1 runs a copy of it tagged destructive (for `kareboot3 -c`)."""
    out = tmp_path_factory.mktemp("reboot")
    destructive = yaml.safe_load(site.environments["debian12-min"].read_text())
    destructive.update(name="debian12-destructive", destructive=True, visibility="private")
    env_file = out / "destructive.yaml"
    env_file.write_text(yaml.safe_dump(destructive))
    site.tool("kaenv3", "-a", str(env_file))
    n1, *others = site.nodes[:4]
    results = site.tools({
        "destructive": ["kadeploy3", "-e", "debian12-destructive", "-m", n1, "-k", str(site.admin_keys),
                        "-o", str(out / "d.ok")],
        "others": ["kadeploy3", "-e", "debian12-min", *machine_args(others),
                   "-k", str(site.admin_keys), "-o", str(out / "o.ok")],
    })
    assert sorted((out / "d.ok").read_text().split() + (out / "o.ok").read_text().split()) == sorted(site.nodes[:4]), \
        "\n".join(r.stdout + r.stderr for r in results.values())
    yield
    site.tool("kaenv3", "-d", "debian12-destructive", check=False)


def _rebooted_since(site, node: str, seconds: float) -> bool:
    return float(site.node_status()[node]["since"]) < seconds


def test_simple_reboot_and_soft_to_hard_escalation(site, deployed, tmp_path) -> None:
    n1, n2 = site.nodes[2], site.nodes[3]
    # n2 loses its sshd: the soft reboot (ssh reboot) fails and the BMC (ipmitool reset) takes over
    site.ssh(n2, "nohup sh -c 'sleep 1; pkill -x sshd' >/dev/null 2>&1 </dev/null &")
    time.sleep(3)
    assert site.ssh(n2, "true", check=False, timeout=15).returncode != 0
    started = time.monotonic()
    results = site.tools({
        n1: ["kareboot3", "-r", "simple", "-m", n1, "-o", str(tmp_path / "1.ok"), "-V", "3"],
        n2: ["kareboot3", "-r", "simple", "-m", n2, "-o", str(tmp_path / "2.ok"), "-V", "3"],
    })
    elapsed = time.monotonic() - started
    for index, node in ((1, n1), (2, n2)):
        assert (tmp_path / f"{index}.ok").read_text().split() == [node], results[node].stdout
        assert _rebooted_since(site, node, elapsed + 1), site.node_status()[node]
        site.assert_debian_on_partition(node)
    assert "Performing a soft reboot" in results[n1].stdout
    assert "Performing a hard reboot" not in results[n1].stdout
    assert "Performing a hard reboot" in results[n2].stdout, results[n2].stdout


def test_power_off_status_on(site, deployed, tmp_path) -> None:
    node = site.nodes[1]
    site.tool("kapower3", "--off", "-m", node, "-l", "hard", "-o", str(tmp_path / "off.ok"))
    assert (tmp_path / "off.ok").read_text().split() == [node]
    assert site.node_status()[node]["power"] == "off"
    status = site.tool("kapower3", "--status", "-m", node).stdout
    # Kadeploy3's block (kapower.rb power_get): ---, one line per node OK, ---
    lines = status.splitlines()
    at = lines.index(f"{node}: Chassis Power is off")
    assert (lines[at - 1], lines[at + 1]) == ("---", "---"), status
    site.tool("kapower3", "--on", "-m", node, "-o", str(tmp_path / "on.ok"))
    assert (tmp_path / "on.ok").read_text().split() == [node]
    assert site.node_status()[node]["power"] == "on"
    status = site.tool("kapower3", "--status", "-m", node).stdout
    assert f"{node}: Chassis Power is on" in status, status
    # powered on, the node boots its deployed system again (PXE local boot of partition 3)
    site.wait_node_state(node, lambda entry: entry["state"] == "partition 3" and entry["detail"] != "booting", 60)
    deadline = time.monotonic() + 60
    while site.ssh(node, "true", check=False).returncode != 0:
        assert time.monotonic() < deadline, "the node did not come back after power on"
        time.sleep(1)
    site.assert_debian_on_partition(node)


def test_check_destructive_refuses_a_recorded_env_reboot(site, deployed) -> None:
    node = site.nodes[0]
    before = site.node_status()[node]
    result = site.tool("kareboot3", "-r", "recorded_env", "-e", "debian12-min", "-p", "3", "-c", "-m", node,
                       check=False)
    assert result.returncode == 30, result.stdout + result.stderr
    assert "destructive" in (result.stdout + result.stderr)
    after = site.node_status()[node]
    assert after["state"] == before["state"] and after["boot_count"] == before["boot_count"]


def test_deploy_env_then_recorded_env(site, deployed, tmp_path) -> None:
    node = site.nodes[0]
    site.tool("kareboot3", "-r", "deploy_env", "-m", node, "-k", f"{site.user_key}.pub", "-o", str(tmp_path / "ok"))
    assert (tmp_path / "ok").read_text().split() == [node]
    assert site.node_status()[node]["state"] == "deploy-env"
    assert site.ssh(node, "cat /etc/hostname").stdout.strip() == node  # the deployment environment
    state = yaml.safe_load(site.tool("kanodes3", "-s", "-m", node).stdout)
    assert state[node]["state"] == "deploy_env"
    site.tool("kareboot3", "-r", "recorded_env", "-e", "debian12-min", "-p", "3", "-m", node,
              "-o", str(tmp_path / "ok2"))
    assert (tmp_path / "ok2").read_text().split() == [node]
    site.assert_debian_on_partition(node, key=site.user_key)
    state = yaml.safe_load(site.tool("kanodes3", "-s", "-m", node).stdout)
    assert state[node]["state"] == "recorded_env"


def test_set_pxe_with_user_profile_files_and_singularities(site, deployed, tmp_path) -> None:
    node = site.nodes[2]
    extra = tmp_path / "notes.txt"
    extra.write_text("uploaded by kareboot3 -x\n")
    profile = tmp_path / "profile"
    # the partition to chainload comes from the pattern file: an unsubstituted profile cannot boot
    profile.write_text("# FILES_PREFIX--notes.txt\nDEFAULT mine\nLABEL mine\n\tCOM32 /chain.c32\n"
                       "\tAPPEND hd0 NODE_SINGULARITY\n")
    pattern = tmp_path / "pattern"
    pattern.write_text(f"{node},3\n")
    site.tool("kareboot3", "-r", "set_pxe", "-m", node, "-w", str(profile), "-x", str(extra),
              "--set-pxe-pattern", str(pattern), "-o", str(tmp_path / "ok"))
    assert (tmp_path / "ok").read_text().split() == [node]
    site.assert_debian_on_partition(node)
    uploaded = site.directory / "tftpboot" / "userfiles" / "pxe-root--notes.txt"
    assert uploaded.read_text() == extra.read_text()
    import socket
    ip_hex = "".join(f"{int(p):02X}" for p in socket.gethostbyname(node).split("."))
    written = (site.directory / "tftpboot" / "pxelinux.cfg" / ip_hex).read_text()
    assert "APPEND hd0 3" in written and "userfiles/pxe-root--notes.txt" in written, written
