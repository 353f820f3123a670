"""No value substituted into an administrator's template or a node command changes the command's structure.

For every template kind (VLAN `set_cmd`, power/reboot/console commands,
BroadcastEnvCustom's command) and every node command built from a request or
an environment, Hypothesis draws the user-controlled values and the filled
command must parse (bash grammar, bashlex) into the same tree as the template
filled with a plain word, with the template's words and the values as words.
"""

from __future__ import annotations

import re
import shlex

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from kadeploy.boot.commands import DEFAULT_CONNECTOR, check_hostname, node_address, substitute
from kadeploy.errors import KadeployError
from kadeploy.steps import commands
from kadeploy.steps.plan import DeployPlan
from kadeploy.templates import fill
from kadeploy.vlan import check_vlan_id, set_vlan_command, vlan_hostname
from tests.security.shellshape import shape, words

# no example database: the checkout is shared and CI starts from a fresh clone
PROPERTY = settings(max_examples=150, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])

# Any text a user may send (JSON strings: no lone surrogates; NUL cannot reach an argv).
ANY_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)
# Values that carry the placeholders and the shell's own syntax, to find what random text would miss.
NASTY = st.sampled_from([
    "USER", "VLAN_ID", "NODES", "ENVFILE", "NODEFILE", "DECOMPRESS", "TAKTUK_CONNECTOR", "HOSTNAME_FQDN",
    "GROUP_SHORT", "DEFAULT_CONNECTOR", "'", '"', "'; reboot; '", "$(id)", "`id`", "a b", "x\ny", "-rf",
    "a;b", "a&&b", "a|b", "> /etc/passwd", "\\", "$USER", "${IFS}", "#", "~root", "*", "\u202eevil",
])
VALUE = st.one_of(ANY_TEXT, NASTY)
VLAN = st.from_regex(re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,20}"), fullmatch=True)
HOSTNAME = st.from_regex(re.compile(r"[a-z0-9][a-z0-9-]{0,10}(\.[a-z0-9-]{1,8}){0,3}"), fullmatch=True)

SET_CMD_TEMPLATES = [
    "kadeploy-testbed vlan --dir /var/lib/kadeploy-testbed --vlan VLAN_ID NODES",
    "sudo -u kavlan /usr/bin/kavlan -s -i VLAN_ID -u USER NODES",
    "set-vlan VLAN_ID USER NODES && logger -t kavlan USER moved to VLAN_ID; echo done | tee -a /var/log/x",
]
POWER_TEMPLATES = [
    "ssh -q -o BatchMode=yes root@HOSTNAME_FQDN /sbin/reboot",
    "ipmitool -I lanplus -H HOSTNAME_SHORT-bmc.mycluster -U admin -E chassis power cycle",
    "DEFAULT_CONNECTOR root@HOSTNAME_FQDN 'nohup /sbin/poweroff >/dev/null 2>&1 &'",
    "pdu-cycle --outlets GROUP_SHORT --nodes GROUP_FQDN || echo failed HOSTNAME_FQDN >&2",
]
BROADCAST_TEMPLATES = [
    "kastafior -i ENVFILE -f NODEFILE -c 'TAKTUK_CONNECTOR' -- 'DECOMPRESS'",
    "cat ENVFILE | my-broadcast --nodes NODEFILE --connector \"TAKTUK_CONNECTOR\" && echo ENVFILE done",
]


def _assert_structure(filled: str, benign: str, expected_words: list[str]) -> None:
    assert shape(filled) == shape(benign), (filled, benign)
    assert words(filled) == expected_words, filled


@pytest.mark.parametrize("template", SET_CMD_TEMPLATES)
@PROPERTY
@given(user=VALUE, vlan=VLAN, nodes=st.lists(HOSTNAME, min_size=1, max_size=3))
@example(user="VLAN_ID", vlan="USER", nodes=["node-1.c1"])
@example(user="NODES", vlan="NODES", nodes=["node-1.c1"])
def test_set_vlan_values_never_change_the_command(template, user, vlan, nodes):
    filled = set_vlan_command(template, nodes, vlan, user)
    benign = set_vlan_command(template, nodes, "4", "alice")
    expected: list[str] = []
    for word in words(template):
        if word == "NODES":
            expected += [part for node in nodes for part in ("-m", node)]
        else:
            expected.append(fill(word, raw={"VLAN_ID": vlan, "USER": user}))
    _assert_structure(filled, benign, expected)


@PROPERTY
@given(vlan=VALUE)
@example(vlan="4\n")
@example(vlan="-4")
def test_a_vlan_id_is_a_name_label_or_refused(vlan):
    try:
        check_vlan_id(vlan)
    except KadeployError:
        return
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}", vlan)
    assert shlex.quote(vlan) == vlan  # needs no quoting anywhere it goes, host names included
    assert vlan_hostname("n-1.c1.site", "-kavlan-VLAN_ID", vlan) == f"n-1-kavlan-{vlan}.c1.site"


@pytest.mark.parametrize("template", POWER_TEMPLATES)
@PROPERTY
@given(hostname=st.one_of(HOSTNAME, VALUE), group=st.lists(HOSTNAME, min_size=1, max_size=3))
@example(hostname="node-1.c1\n", group=["node-1.c1"])
@example(hostname="node-1;reboot", group=["node-1"])
def test_power_command_node_names_never_change_the_command(template, hostname, group):
    try:
        check_hostname(hostname)
    except KadeployError:
        with pytest.raises(KadeployError):
            substitute(template, hostname, group=group)
        return
    members = [hostname, *group]
    filled = substitute(template, hostname, group=members)
    benign = substitute(template, "n", group=["n"] * len(members))
    with_connector = fill(template, raw={"DEFAULT_CONNECTOR": DEFAULT_CONNECTOR})
    short = [member.split(".", 1)[0] for member in members]
    values = {"HOSTNAME_FQDN": hostname, "HOSTNAME_SHORT": hostname.split(".", 1)[0],
              "GROUP_FQDN": ",".join(members), "GROUP_SHORT": ",".join(short)}
    _assert_structure(filled, benign, [fill(word, raw=values) for word in words(with_connector)])


@PROPERTY
@given(hostname=VALUE)
def test_a_power_driver_address_is_a_host_name_or_refused(hostname):
    try:
        address = node_address("HOSTNAME_SHORT-bmc.c1.site", hostname)
    except KadeployError:
        return
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]*-bmc\.c1\.site", address)


@pytest.mark.parametrize("template", BROADCAST_TEMPLATES)
@PROPERTY
@given(image_path=VALUE, node_file=VALUE)
@example(image_path="/var/cache/kadeploy/NODEFILE", node_file="/tmp/ENVFILE")
@example(image_path="/c/DECOMPRESS", node_file="/tmp/TAKTUK_CONNECTOR")
def test_custom_broadcast_paths_never_change_the_command(template, image_path, node_file):
    sink, connector = "gzip -cd | tar -C /mnt/dest -xf -", DEFAULT_CONNECTOR
    filled = commands.custom_broadcast(template, image_path, node_file, sink, connector)
    benign = commands.custom_broadcast(template, "/env", "/nodes", sink, connector)
    admin_part = fill(template, raw={"DECOMPRESS": sink, "TAKTUK_CONNECTOR": connector})
    values = {"ENVFILE": image_path, "NODEFILE": node_file}
    _assert_structure(filled, benign, [fill(word, raw=values) for word in words(admin_part)])


def test_a_value_never_brings_a_placeholder_that_a_later_substitution_fills():
    # Kadeploy3's chain of replacements would have made `set USER alice` into `set alice alice`
    assert set_vlan_command("set VLAN_ID USER", [], "USER", "alice") == "set USER alice"
    assert (commands.custom_broadcast("b ENVFILE NODEFILE", "/c/NODEFILE", "/tmp/n", "cat", "ssh")
            == "b /c/NODEFILE /tmp/n")
    assert substitute("DEFAULT_CONNECTOR x", "n1", default_connector="ssh HOSTNAME_FQDN") == "ssh HOSTNAME_FQDN x"
    assert commands.custom_send_destination("$KADEPLOY_ENV_EXTRACTION_DIR/x", {
        "KADEPLOY_ENV_EXTRACTION_DIR": "/mnt/KADEPLOY_ENV", "KADEPLOY_ENV": "debian"}) == "/mnt/KADEPLOY_ENV/x"


# -- node commands: every request or environment field a user controls ----------------------------------


def _plan(**fields: str) -> DeployPlan:
    return DeployPlan(cluster="c1", block_device=fields.pop("block_device", "/dev/sda"), deploy_part_num=3,
                      swap_part_num=1, tmp_part_num=5, **fields)


@PROPERTY
@given(values=st.dictionaries(st.sampled_from(["KADEPLOY_ENV", "KADEPLOY_ENV_KERNEL_PARAMS", "KADEPLOY_FS_TYPE",
                                               "KADEPLOY_ENV_KERNEL", "KADEPLOY_OS_KIND"]), VALUE, min_size=1))
def test_exported_variables_never_change_the_command(values):
    benign = {name: "x" for name in values}
    assignments = [f"{name}={value}" for name, value in values.items()]
    for build in (commands.export_statement, commands.run_script):
        command = build(values) + "true"
        assert shape(command) == shape(build(benign) + "true")
        found = words(command)
        start = found.index(assignments[0])
        assert found[start:start + len(assignments)] == assignments
    assert shape(commands.run_archive_script(_plan(), "setup.sh --fast", values)) == \
        shape(commands.run_archive_script(_plan(), "setup.sh --fast", benign))


@PROPERTY
@given(script=VALUE)
def test_an_archive_script_line_is_one_command_of_words(script):
    try:
        script_words = shlex.split(script)
    except ValueError:
        return  # refused by the archive's validation (unbalanced quotes): nothing is run
    assume(script_words and script.strip() != "none")
    command = commands.run_archive_script(_plan(), script, {})
    assert command is not None
    benign = commands.run_archive_script(_plan(), " ".join(["w"] * len(script_words)), {})
    assert shape(command) == shape(benign)
    assert words(command)[-len(script_words):][1:] == script_words[1:]


@PROPERTY
@given(filesystem=VALUE, block_device=VALUE.filter(lambda v: v != ""), kernel=VALUE, initrd=VALUE,
       params=VALUE, image_file=VALUE)
@example(filesystem="ext4; reboot", block_device="/dev/sda$(id)", kernel="../../etc/passwd", initrd="'",
         params="quiet' && reboot '", image_file="x\ny")
def test_environment_and_request_fields_never_change_node_commands(filesystem, block_device, kernel, initrd,
                                                                   params, image_file):
    plan = _plan(filesystem=filesystem, block_device=block_device, env_kernel=kernel, env_initrd=initrd,
                 env_kernel_params=params, image_file=image_file, reformat_tmp=filesystem)
    digit = block_device[-1:].isdigit()
    # the same branches as the drawn values (mkfs options depend on the filesystem's family)
    family = filesystem if filesystem in ("", "xfs") else ("ext4" if filesystem.startswith("ext") else "fs")
    benign = _plan(filesystem=family, block_device="/dev/sd0" if digit else "/dev/sda",
                   env_kernel="k" if kernel else "", env_initrd="i" if initrd else "", env_kernel_params="p",
                   image_file="f", reformat_tmp=family)
    for build in (commands.format_deploy_part, commands.format_tmp_part, commands.format_swap_part,
                  commands.mount_deploy_part, commands.mount_tmp_part, commands.umount_deploy_part,
                  commands.check_kernel_files, commands.same_kernel_check, commands.switch_root_request):
        assert shape(build(plan)) == shape(build(benign)), build.__name__
    kexec = commands.kexec_load(kernel or "k", initrd, params, "/mnt/dest")
    assert shape(kexec) == shape(commands.kexec_load("k", "i" if initrd else "", "p", "/mnt/dest"))
    assert f"--append={params}" in words(kexec)
    assert shape(commands.same_root_device_check(block_device)) == shape(commands.same_root_device_check("/d"))
    assert shape(commands.append_authorized_keys(block_device)) == shape(commands.append_authorized_keys("/r"))


# -- the oracle itself ----------------------------------------------------------------------------------


@pytest.mark.parametrize("line", [
    "a 'b c' \"d e\" f\\ g", "x'$(id)'y \"q\\\"uote\"", "echo '/r'/'$(id)' 'it'\"'\"'s'", "a=1 b='$X' c",
])
def test_the_tokeniser_removes_quotes_as_bash_does(line):
    import subprocess
    printed = subprocess.run(["bash", "-c", f"set -f; printf '%s\\0' {line}"], capture_output=True, text=True,
                             check=True).stdout
    assert words(line) == printed.split("\0")[:-1]


def test_the_tokeniser_sees_operators_and_expansions():
    assert shape("a $(b) `c` $d ${e} *.f ~g '$h' \"$i\" && j; k | l > m 2>&1") == [
        ("word",), ("word", "command"), ("word", "command"), ("word", "parameter"), ("word", "parameter"),
        ("word", "glob"), ("word", "tilde"), ("word",), ("word", "parameter"), ("operator", "&&"), ("word",),
        ("operator", ";"), ("word",), ("operator", "|"), ("word",), ("operator", ">"), ("word",), ("word",),
        ("operator", ">&"), ("word",)]
