"""testbed.fake room: the configuration directory of a fake testbed.

The same files as netns mode (`testbed.configdir.write_config`: server.conf,
clusters.conf, cluster files, command.conf, client.conf, version, keys,
scripts, node files) and the same PXE repository skeleton, then adjusted for
loopback: the server on 127.0.0.1, nodes' sshd on `ssh_port`, power commands
through `etc/scripts/fake-bmc`, timeouts and automata sized from the boot-time
distribution and the number of nodes.
"""

from __future__ import annotations

import math
import shlex
from pathlib import Path
from typing import Any

import yaml

from kadeploy_testbed.cli import write_tftpboot
from kadeploy_testbed.configdir import (
    ConfigPaths,
    cluster_conf,
    server_conf,
    write_config,
)
from kadeploy_testbed.fake.settings import FakeSettings, fake_layout
from kadeploy_testbed.state import control_socket

SERVER_ADDRESS = "127.0.0.1"

# sh + socat: the cheapest real process a power command can be (kadeploy.boot.power runs it
# with /bin/sh); the answer is the control socket's JSON line.
FAKE_BMC_SCRIPT = """#!/bin/sh
# kadeploy-testbed fake mode: power command of a fake node (usage: fake-bmc ACTION HOSTNAME)
# ACTION: on, off, cycle, reset, status (the BMC) or soft, soft-off (the running OS)
case "$1" in on|off|cycle|reset|status|soft|soft-off) ;; *) echo "fake-bmc: bad action $1" >&2; exit 2;; esac
case "$2" in *[!A-Za-z0-9.-]*|'') echo "fake-bmc: bad node name $2" >&2; exit 2;; esac
answer=$(printf '{"op": "power", "bmc": true, "node": "%s", "action": "%s"}\\n' "$2" "$1" \\
         | socat -t 30 -T 30 - UNIX-CONNECT:SOCKET 2>&1)
case "$answer" in
  *'"ok": true'*)
    if [ "$1" = status ]; then printf '%s\\n' "$answer" | sed -n 's/.*"status": "\\([a-z]*\\)".*/\\1/p'; fi
    exit 0;;
  *'"error": '*) printf '%s\\n' "$answer" | sed -n 's/.*"error": "\\(.*\\)"}.*/\\1/p' >&2; exit 1;;
  *) echo "fake-bmc: no answer from the fake testbed (${answer:-nothing})" >&2; exit 1;;
esac
"""


def timeouts(settings: FakeSettings) -> dict[str, str]:
    """Reboot and kexec timeouts: the slowest boot with margin, plus a little per node."""
    boot = settings.boot_distribution()
    kexec = settings.kexec_distribution()
    return {"reboot": f"{math.ceil(boot.high * 1.5 + 10)} + n / 100",
            "kexec": f"{math.ceil(kexec.high * 1.5 + 10)} + n / 100"}


def automata(settings: FakeSettings) -> dict[str, Any]:
    """Kadeploy3's usual automaton (Untrusted, Kascade, Kexec, Classical, HardReboot) with fitting timeouts.

    HardReboot last, as in Kadeploy3's default automaton and its examples: a
    node whose kexec hung cannot run Classical's first command over SSH
    (umount_deploy_part: "Connection refused"); only a power cycle brings it
    back. Without it, the model run at 4,000 nodes lost 117 nodes (2.9 %).
    """
    boot = settings.boot_distribution()
    kexec = settings.kexec_distribution()
    n = settings.nodes
    reboot = math.ceil(boot.high * 1.5 + 10 + n / 100)
    kexec_timeout = math.ceil(kexec.high * 1.5 + 10 + n / 100)
    return {"macrosteps": {
        "SetDeploymentEnv": [{"type": "Untrusted", "retries": 2, "timeout": reboot + 60 + n // 20}],
        "BroadcastEnv": [{"type": "Kascade", "retries": 2, "timeout": 300 + n // 10}],
        "BootNewEnv": [{"type": "Kexec", "retries": 0, "timeout": kexec_timeout + 30 + n // 50},
                       {"type": "Classical", "retries": 0, "timeout": reboot + 30 + n // 50},
                       {"type": "HardReboot", "retries": 1, "timeout": reboot + 30 + n // 50}],
    }}


def fake_server_conf(settings: FakeSettings, private_key: Path) -> dict[str, Any]:
    conf = server_conf(settings.path, private_key)
    boot = settings.boot_distribution()
    conf["authentication"] = {"acl": {"whitelist": [SERVER_ADDRESS]}}
    conf["network"] = {
        "server_hostname": SERVER_ADDRESS,
        "ports": {"kadeploy_server": settings.server_port, "ssh": settings.ssh_port,
                  "test_deploy_env": settings.marker_port,
                  "probe_interval": round(max(0.5, min(5.0, boot.low / 4)), 2)},
    }
    conf["windows"] = {"reboot": {"size": 50, "sleep_time": 1}, "check": {"size": 50}}
    # the executor's tree mode as configured by default (auto_propagate, tree_arity 0): fake nodes
    # host the real agent's logic (fake/agenthost.py)
    conf["pxe"]["dhcp"]["export"]["server"] = SERVER_ADDRESS  # type: ignore[index]
    environments = dict(conf.get("environments") or {})
    environments["server_dirs"] = [*environments.get("server_dirs", []), str(envs_dir(settings))]
    conf["environments"] = environments
    return conf


def envs_dir(settings: FakeSettings) -> Path:
    """Where images for fake deployments go (`server://<dir>/envs/...`)."""
    return settings.path / "envs"


def fake_cluster_conf(settings: FakeSettings, cluster: str, private_key: Path) -> dict[str, Any]:
    conf = cluster_conf(cluster, settings.path, private_key, "admin", "testbed")
    bmc = shlex.quote(str(settings.path / "etc" / "scripts" / "fake-bmc"))
    boot = settings.boot_distribution()
    conf["boot"]["sleep_time_before_ping"] = max(1, math.floor(min(20.0, boot.low / 2)))  # type: ignore[index]
    conf["timeouts"] = timeouts(settings)
    conf["remoteops"] = {
        "reboot": [{"name": "soft", "cmd": f"{bmc} soft HOSTNAME_FQDN"},
                   {"name": "hard", "cmd": f"{bmc} reset HOSTNAME_FQDN"},
                   {"name": "very_hard", "cmd": f"{bmc} cycle HOSTNAME_FQDN"}],
        "power_on": [{"name": "hard", "cmd": f"{bmc} on HOSTNAME_FQDN"}],
        "power_off": [{"name": "soft", "cmd": f"{bmc} soft-off HOSTNAME_FQDN"},
                      {"name": "hard", "cmd": f"{bmc} off HOSTNAME_FQDN"}],
        "power_status": [{"name": "soft", "cmd": f"{bmc} status HOSTNAME_FQDN"}],
    }
    conf["automata"] = automata(settings)
    # fake nodes' names are in no resolver: reach them at their clusters.conf (loopback) addresses
    conf["hooks"] = {"use_ip_to_deploy": True}
    return conf


def _write_yaml(path: Path, data: object) -> None:
    path.write_text(yaml.safe_dump(data, sort_keys=False, default_flow_style=False))


def write_fake_config(settings: FakeSettings) -> ConfigPaths:
    """Write `<dir>/etc`, the node files and `<dir>/tftpboot` for a fake testbed."""
    directory = settings.path
    layout = fake_layout(settings.nodes, settings.clusters)
    paths = write_config(directory, layout, "admin", "testbed")
    _write_yaml(paths.etc / "server.conf", fake_server_conf(settings, paths.private_key))
    for cluster in layout.clusters:
        _write_yaml(paths.etc / f"{cluster}.conf", fake_cluster_conf(settings, cluster, paths.private_key))
    _write_yaml(paths.etc / "client.conf", {
        "default": "testbed",
        "servers": [{"name": "testbed", "hostname": SERVER_ADDRESS, "port": settings.server_port, "secure": False}],
    })
    script = paths.etc / "scripts" / "fake-bmc"
    script.write_text(FAKE_BMC_SCRIPT.replace("SOCKET", shlex.quote(str(control_socket(directory)))))
    script.chmod(0o755)
    write_tftpboot(directory)
    envs_dir(settings).mkdir(parents=True, exist_ok=True)
    return paths
