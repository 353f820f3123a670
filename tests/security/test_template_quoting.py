"""--check-config refuses a template that puts a user value where our shell quoting would not hold.

`kadeploy.templates.fill` inserts each user value (VLAN_ID, USER, ENVFILE,
NODEFILE, WORKFLOW_ID) `shlex.quote`d. Inside the administrator's own double
quotes those quotes become literal and a `$(...)` in the value runs; inside
single quotes or after a backslash the value ends up unquoted; ssh, eval and
sh -c read their arguments as shell again. Such a template is refused when the
configuration is loaded, naming the file, the key and the placeholder.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kadeploy.config import load_config
from kadeploy.errors import ConfigError
from kadeploy.steps.commands import custom_broadcast
from kadeploy.templates import QUOTED_PLACEHOLDERS, unsafe_placeholders
from kadeploy.vlan import set_vlan_command

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration" / "server"))
from configdir import write_config_dir  # noqa: E402

NAMES = ("VLAN_ID", "USER")
SAFE = ["kavlan NODES -s -i VLAN_ID -u USER", "kavlan --vlan=VLAN_ID -u USER_X", "true; kavlan VLAN_ID",
        "ssh gw true; kavlan -i VLAN_ID", 'echo "$(kavlan -i VLAN_ID)"', "kavlan $(ssh gw list) VLAN_ID",
        "sh script.sh USER", 'echo "a"USER', "echo 'VLAN:' VLAN_ID"]
UNSAFE = {
    'kavlan -i "VLAN_ID" -u USER': "inside double quotes",
    "echo 'kavlan: VLAN_ID'": "inside single quotes",
    "kavlan -u \\USER": "right after a backslash",
    "ssh gw kavlan -i VLAN_ID": "reads them as shell again",
    "/usr/bin/ssh -p 22 gw kavlan VLAN_ID": "reads them as shell again",
    "sudo -E sh -c kavlan\\ USER": "reads them as shell again",
    "X=1 eval kavlan USER": "reads them as shell again",
    "su - kavlan -c USER": "reads them as shell again",
    "ssh gw $(cat list) VLAN_ID": "reads them as shell again",
    'bash -ec "kavlan $(echo USER)"': "reads them as shell again",
}


@pytest.mark.parametrize("template", SAFE)
def test_placeholders_that_stand_as_words_are_accepted(template):
    assert unsafe_placeholders(template, NAMES) == []


@pytest.mark.parametrize("template", sorted(UNSAFE))
def test_placeholders_where_the_quoting_would_not_hold_are_found(template):
    found = unsafe_placeholders(template, NAMES)
    assert found and UNSAFE[template] in found[0][1], found


def test_the_checked_names_are_the_ones_the_templates_receive_quoted():
    """QUOTED_PLACEHOLDERS is what vlan.set_vlan_command and steps.commands.custom_broadcast quote."""
    value = "a b$(x)"
    vlan_names = QUOTED_PLACEHOLDERS["network/vlan/set_cmd"]
    assert set_vlan_command(" ".join(vlan_names), [], "42", value) == f"42 {shlex.quote(value)}"
    assert custom_broadcast(" ".join(QUOTED_PLACEHOLDERS["localops/broadcastenv/cmd"]), value, value, "", "") \
        == f"{shlex.quote(value)} {shlex.quote(value)}"


def config_dir(tmp_path: Path, *, server: dict | None = None, broadcast_cmd: str | None = None) -> Path:
    etc = write_config_dir(tmp_path, 25999, tmp_path / "kadeploy.db", server_extra=server)
    if broadcast_cmd is not None:
        cluster = yaml.safe_load((etc / "c1.conf").read_text())
        cluster["localops"] = {"broadcastenv": {"cmd": broadcast_cmd}}
        (etc / "c1.conf").write_text(yaml.safe_dump(cluster))
    return etc


NETWORK = {"server_hostname": "127.0.0.1", "ports": {"kadeploy_server": 25999}}


@pytest.mark.parametrize(("server", "broadcast_cmd", "file", "key", "name"), [
    ({"network": {**NETWORK, "vlan": {"set_cmd": 'kavlan NODES -i "VLAN_ID" -u USER'}}}, None,
     "server.conf", "network/vlan/set_cmd", "VLAN_ID"),
    ({"network": {**NETWORK, "vlan": {"set_cmd": "ssh gw kavlan NODES -i VLAN_ID -u USER"}}}, None,
     "server.conf", "network/vlan/set_cmd", "VLAN_ID"),
    ({"hooks": {"end_of_deployment": "echo 'done: WORKFLOW_ID'"}}, None, "server.conf", "hooks/end_of_deployment",
     "WORKFLOW_ID"),
    (None, 'cat "ENVFILE" | tee NODEFILE', "c1.conf", "localops/broadcastenv/cmd", "ENVFILE"),
])
def test_loading_names_the_file_the_key_and_the_placeholder(tmp_path, server, broadcast_cmd, file, key, name):
    etc = config_dir(tmp_path, server=server, broadcast_cmd=broadcast_cmd)
    with pytest.raises(ConfigError) as refused:
        load_config(etc)
    message = str(refused.value)
    assert file in message and key in message and f"placeholder {name}" in message, message


def test_the_same_templates_written_as_words_load(tmp_path):
    etc = config_dir(tmp_path, server={"network": {**NETWORK, "vlan": {"set_cmd": "kavlan NODES -i VLAN_ID -u USER"}},
                                       "hooks": {"end_of_deployment": "echo WORKFLOW_ID"}},
                     broadcast_cmd="cat ENVFILE | tee NODEFILE")
    config = load_config(etc)
    assert config.server.network.vlan.set_cmd == "kavlan NODES -i VLAN_ID -u USER"


def test_kadeploy3d_check_config_refuses_it(tmp_path):
    config_dir(tmp_path, server={"network": {**NETWORK, "vlan": {"set_cmd": 'kavlan NODES -u "USER"'}}})
    env = {**os.environ, "KADEPLOY3_CONFIG_DIR": str(tmp_path / "etc"), "KADEPLOY3_LOG_DIR": str(tmp_path / "log"),
           "KADEPLOY3_RUN_DIR": str(tmp_path / "run")}
    refused = subprocess.run([sys.executable, "-m", "kadeploy_testbed.dummy", "--check-config"], env=env,
                             capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert "server.conf" in refused.stderr and "network/vlan/set_cmd" in refused.stderr
    assert "placeholder USER is inside double quotes" in refused.stderr, refused.stderr
