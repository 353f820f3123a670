"""clusters.conf and cluster files: ranges, defaults of §3.3, automata, rules, errors."""

from __future__ import annotations

import pytest

from kadeploy.config import TimeoutExpr, load_config
from kadeploy.errors import ConfigError


def error_of(config_dir) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(config_dir.path)
    return info.value.message


# --- clusters.conf -------------------------------------------------------------------------

def test_node_and_address_ranges_are_expanded_together(config_dir):
    cfg = load_config(config_dir.path)
    assert len(cfg.nodes) == 1 + 92 + 4
    node = cfg.nodes["griffon-17.nancy.grid5000.fr"]
    assert (node.address, node.cluster, node.mac, node.short_name) == ("10.0.65.17", "graphene", None, "griffon-17")
    assert cfg.nodes["graphene-1.nancy.grid5000.fr"].mac == "00:16:3e:00:00:01"
    assert cfg.nodes["vm-003"].address == "10.0.67.3"
    assert cfg.clusters["vm"].nodes == ["vm-001", "vm-002", "vm-003", "vm-004"]
    assert cfg.clusters["graphene"].nodes[:2] == ["graphene-1.nancy.grid5000.fr", "griffon-1.nancy.grid5000.fr"]
    assert cfg.cluster_of("vm-002").name == "vm"


def test_mismatching_range_counts_are_an_error(config_dir):
    config_dir.edit("clusters.conf", "clusters/0/nodes/1/address", "10.0.65.[1-91]")
    message = error_of(config_dir)
    assert message.startswith("clusters.conf: clusters[0].nodes[1]: incoherent number of hostnames and addresses")
    assert "92 names" in message and "91 addresses" in message


def test_wrong_type_in_clusters_conf_names_the_path(config_dir):
    config_dir.edit("clusters.conf", "clusters/1/nodes/0/address", 12)
    assert error_of(config_dir) == "clusters.conf: clusters[1].nodes[0].address: expected a string, got 12"


def test_missing_conf_file_key_and_missing_cluster_file(config_dir):
    config_dir.edit("clusters.conf", "clusters/1/conf_file", ...)
    assert error_of(config_dir) == "clusters.conf: clusters[1].conf_file: mandatory field is missing"
    config_dir.edit("clusters.conf", "clusters/1/conf_file", "nope.conf")
    assert "clusters.conf: clusters[1].conf_file: cluster file" in error_of(config_dir)


def test_node_defined_twice_is_an_error(config_dir):
    config_dir.edit("clusters.conf", "clusters/1/nodes/0/name", "griffon-[1-4].nancy.grid5000.fr")
    assert "node griffon-1.nancy.grid5000.fr is already defined in cluster graphene" in error_of(config_dir)


def test_bad_node_range_and_bad_mac(config_dir):
    config_dir.edit("clusters.conf", "clusters/1/nodes/0/name", "vm-[1-4")
    assert error_of(config_dir).startswith("clusters.conf: clusters[1].nodes[0].name: Invalid node")
    config_dir.edit("clusters.conf", "clusters/1/nodes/0/name", "vm-[1-4]")
    config_dir.edit("clusters.conf", "clusters/1/nodes/0/mac", "00:11")
    assert 'clusters.conf: clusters[1].nodes[0].mac: invalid MAC address "00:11"' in error_of(config_dir)


def test_mac_on_a_range_is_refused(config_dir):
    config_dir.edit("clusters.conf", "clusters/1/nodes/0/mac", "00:16:3E:00:00:09")
    assert "a MAC address can only be given for a single node" in error_of(config_dir)


# --- cluster files --------------------------------------------------------------------------

def test_sample_cluster_file_values(config_dir):
    cluster = load_config(config_dir.path).clusters["graphene"]
    assert cluster.name == "graphene" and cluster.prefix == "gra"
    assert cluster.partitioning.block_device == "/dev/sda"
    parts = cluster.partitioning.partitions
    assert (parts.swap, parts.prod, parts.deploy, parts.tmp) == (1, 2, 3, 5)
    assert cluster.partitioning.deploy_part == "/dev/sda3"
    assert cluster.partitioning.script.startswith("#!/bin/bash\n# Sample partitioning script")
    assert cluster.partitioning.script_path == str(config_dir.path / "scripts/parted-sample")
    assert "grub-install" in cluster.boot.install_bootloader
    assert cluster.boot.install_bootloader_path == str(config_dir.path / "scripts/install_grub2")
    assert cluster.boot.kernels.deploy.supported_fs == ["ext2", "ext3", "ext4", "vfat"]
    assert cluster.boot.kernels.user.params == "console=tty0 console=ttyS1,38400n8"
    assert cluster.timeouts.reboot == TimeoutExpr("200 + 150 * Math.log(n)")
    assert cluster.timeouts.kexec.evaluate(10) == 60
    very_hard = cluster.remoteops.command("reboot", "very_hard")
    assert very_hard.group == str(config_dir.path / "pdu_groups")
    assert very_hard.groups[1] == ["griffon-3.nancy.grid5000.fr", "griffon-4.nancy.grid5000.fr"]
    assert cluster.remoteops.command("power_on", "soft") is None
    assert cluster.remoteops.command("console", "soft").cmd == "conman -d conman HOSTNAME_SHORT"
    assert cluster.pxe.headers.dhcp == "PROMPT 1\nSERIAL 0 38400\nTIMEOUT 50\n"
    assert cluster.pxe.headers.localboot == "set timeout=5"
    automata = cluster.automata
    assert [impl.name for impl in automata["SetDeploymentEnv"]] == ["SetDeploymentEnvKexec", "SetDeploymentEnvUntrusted"]
    kastafior = automata["BroadcastEnv"][0]
    assert (kastafior.type, kastafior.retries, kastafior.timeout) == ("Kastafior", 1, 900)
    post = kastafior.microstep("send_environment").post_ops[0]
    assert (post.action, post.scattering, post.label) == ("send", "chain", "send-hostname")
    assert post.file == str(config_dir.path / "hostname")
    assert [(i.name, i.retries, i.timeout) for i in automata["BootNewEnv"]] == [
        ("BootNewEnvKexec", 0, 100), ("BootNewEnvHardReboot", 1, 300)]


def test_cluster_file_defaults(config_dir):
    cluster = load_config(config_dir.path).clusters["vm"]
    parts = cluster.partitioning.partitions
    assert (parts.swap, parts.prod, parts.tmp) == (-1, -1, -1)
    assert cluster.partitioning.disable_swap is True
    assert cluster.boot.sleep_time_before_ping == 20
    assert cluster.boot.kernels.user.params == ""
    assert cluster.boot.kernels.deploy.params == ""
    assert cluster.timeouts.reboot.evaluate(1) == 120 and cluster.timeouts.kexec.evaluate(1) == 60
    assert cluster.remoteops.level_name == ["soft", "hard", "very_hard"]
    assert cluster.localops.broadcastenv.cmd is None and cluster.localops.broadcastenv.decompress is True
    assert cluster.preinstall.files == [] and cluster.postinstall.files == []
    assert cluster.kexec.repository == "/dev/shm/kexec_repository"
    assert cluster.use_ip_to_deploy is True
    assert cluster.pxe.headers.networkboot == "DEFAULT network"  # legacy `netboot` key
    hard = cluster.remoteops.command("reboot", "hard")
    assert (hard.driver, hard.address, hard.user, hard.password, hard.cmd) == (
        "ipmi", "HOSTNAME_SHORT-bmc", "admin", "secret", None)
    # Kadeploy3's default automaton when `automata` is absent
    assert {interface: [(i.name, i.timeout, i.retries) for i in impls]
            for interface, impls in cluster.automata.items()} == {
        "SetDeploymentEnv": [("SetDeploymentEnvUntrusted", 200, 2)],
        "BroadcastEnv": [("BroadcastEnvKascade", 300, 2)],
        "BootNewEnv": [("BootNewEnvClassical", 150, 0), ("BootNewEnvHardReboot", 120, 1)],
    }


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("partitioning/block_device", ..., "vm.conf: partitioning/block_device: mandatory field is missing"),
        ("partitioning/partitions/deploy", ..., "vm.conf: partitioning/partitions/deploy: mandatory field is missing"),
        ("partitioning/disable_swap", False,
         "vm.conf: partitioning: partitions/swap: mandatory field is missing (unless disable_swap is true)"),
        ("partitioning/script", "scripts/missing", "vm.conf: partitioning/script: cannot read"),
        ("boot/install_bootloader", ..., "vm.conf: boot/install_bootloader: mandatory field is missing"),
        ("boot/kernels/deploy/vmlinuz", ..., "vm.conf: boot/kernels/deploy/vmlinuz: mandatory field is missing"),
        ("remoteops", ..., "vm.conf: remoteops: mandatory field is missing"),
        ("remoteops/reboot/0/cmd", ..., "vm.conf: remoteops/reboot[0]: cmd: mandatory field is missing"),
        ("remoteops/reboot/1/address", ..., "vm.conf: remoteops/reboot[1]: address: mandatory field is missing"),
        ("remoteops/reboot/1/driver", "snmp", 'vm.conf: remoteops/reboot[1].driver: unknown power driver "snmp" (supported: ipmi, redfish)'),
        ("remoteops/reboot/0/name", "gentle", 'remoteops: reboot[0].name: must be one of soft, hard, very_hard (got "gentle")'),
        ("remoteops/reboot/0/group", "no-such-file", "vm.conf: remoteops/reboot[0]: cannot read"),
        ("timeouts", {"reboot": "__import__('os')"}, 'vm.conf: timeouts/reboot: invalid timeout expression "__import__(\'os\')"'),
        ("timeouts", {"reboot": [1]}, "vm.conf: timeouts/reboot: expected a number or an expression of n"),
        ("boot/sleep_time_before_ping", "20", 'vm.conf: boot/sleep_time_before_ping: expected an integer, got "20"'),
        ("hooks/use_ip_to_deploy", 1, "vm.conf: hooks/use_ip_to_deploy: expected a boolean (true or false), got 1"),
        ("preinstall", {"files": [{"file": "a.tgz", "format": "zip"}]},
         'vm.conf: preinstall/files[0].format: must be one of tgz, tbz2, txz, tzst (got "zip")'),
    ],
)
def test_cluster_file_errors(config_dir, key, value, message):
    config_dir.edit("vm.conf", key, value)
    assert message in error_of(config_dir)


def test_netboot_and_networkboot_together_are_refused(config_dir):
    config_dir.edit("vm.conf", "pxe/headers/networkboot", "x")
    assert "vm.conf: pxe/headers: netboot and networkboot are the same header" in error_of(config_dir)


AUTOMATA = {
    "macrosteps": {
        "SetDeploymentEnv": [{"type": "Untrusted", "timeout": 200}],
        "BroadcastEnv": [{"type": "Kascade", "timeout": 300}],
        "BootNewEnv": [{"type": "Classical", "timeout": 150}],
    }
}


def with_automata(config_dir, **changes):
    automata = {"macrosteps": {**AUTOMATA["macrosteps"], **changes}}
    config_dir.edit("vm.conf", "automata", automata)


def test_full_implementation_names_are_accepted(config_dir):
    with_automata(config_dir, BroadcastEnv=[{"type": "BroadcastEnvChain", "timeout": 10}])
    impl = load_config(config_dir.path).clusters["vm"].automata["BroadcastEnv"][0]
    assert (impl.type, impl.name) == ("Chain", "BroadcastEnvChain")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"BroadcastEnv": [{"type": "Rsync", "timeout": 10}]},
         'vm.conf: automata/macrosteps/BroadcastEnv[0]: type: unknown BroadcastEnv implementation "Rsync" '
         "(supported: Bittorrent, Chain, Custom, Dummy, Kascade, Kastafior, Tree)"),
        ({"SetDeploymentEnv": [{"type": "Classical", "timeout": 10}]},
         'unknown SetDeploymentEnv implementation "Classical"'),
        ({"BootNewEnv": []}, "vm.conf: automata/macrosteps/BootNewEnv: expected at least 1 item(s), got 0"),
        ({"BootNewEnv": [{"timeout": 10}]}, "vm.conf: automata/macrosteps/BootNewEnv[0].type: mandatory field is missing"),
        ({"BootNewEnv": [{"type": "Classical", "timeout": 100}]},
         "vm.conf: automata/macrosteps/BootNewEnv[0].timeout: the timeout of BootNewEnvClassical (100 s) is lower "
         "than timeouts/reboot (120 s with n=1)"),
        ({"SetDeploymentEnv": [{"type": "Kexec", "timeout": 30}]},
         "the timeout of SetDeploymentEnvKexec (30 s) is lower than timeouts/kexec (60 s with n=1)"),
        ({"BroadcastEnv": [{"type": "Custom", "timeout": 10}]},
         "vm.conf: localops/broadcastenv/cmd: mandatory field is missing (BroadcastEnvCustom is used)"),
        ({"SetDeploymentEnv": [{"type": "Nfsroot", "timeout": 300}]},
         'vm.conf: automata/macrosteps/SetDeploymentEnv[0]: type: the SetDeploymentEnv implementation "Nfsroot" '
         "is not supported by this Kadeploy (supported: Dummy, Kexec, Prod, Untrusted, UntrustedCustomPreInstall)"),
        ({"BootNewEnv": [{"type": "PivotRoot", "timeout": 30}, {"type": "Classical", "timeout": 300}]},
         "vm.conf: automata/macrosteps/BootNewEnv[0].timeout: the timeout of BootNewEnvPivotRoot (30 s) is lower "
         "than timeouts/kexec (60 s with n=1)"),
        ({"BroadcastEnv": [{"type": "Kascade", "timeout": 10, "microsteps": [{"name": "rsync"}]}]},
         'vm.conf: automata/macrosteps/BroadcastEnv[0].microsteps[0].name: unknown micro-step "rsync"'),
        ({"BroadcastEnv": [{"type": "Kascade", "microsteps": [
            {"name": "sync", "pre-ops": [{"action": "exec"}]}]}]},
         "vm.conf: automata/macrosteps/BroadcastEnv[0].microsteps[0].pre-ops[0]: command: mandatory field is missing"),
        ({"BroadcastEnv": [{"type": "Kascade", "microsteps": [
            {"name": "sync", "substitute": [{"action": "run", "file": "nope.sh"}]}]}]},
         "microsteps[0].substitute[0]: file: " ),
        ({"BroadcastEnv": [{"type": "Kascade", "retries": -1}]},
         "vm.conf: automata/macrosteps/BroadcastEnv[0].retries: must be >= 0 (got -1)"),
    ],
)
def test_automata_errors(config_dir, changes, message):
    with_automata(config_dir, **changes)
    assert message in error_of(config_dir)


def test_zero_timeout_means_none_and_skips_the_reboot_check(config_dir):
    with_automata(config_dir, BootNewEnv=[{"type": "Classical"}])
    assert load_config(config_dir.path).clusters["vm"].automata["BootNewEnv"][0].timeout == 0


def test_reboot_timeout_expression_is_checked_against_macrostep_timeouts(config_dir):
    config_dir.edit("vm.conf", "timeouts", {"reboot": "200 + 150 * Math.log(n)"})
    with_automata(config_dir)  # Untrusted 200 >= 200, Classical 150 < 200
    assert "BootNewEnvClassical (150 s) is lower than timeouts/reboot (200 s with n=1)" in error_of(config_dir)


def test_custom_operation_defaults(config_dir):
    (config_dir.path / "myscript.sh").write_text("echo hi\n")
    with_automata(config_dir, BroadcastEnv=[{"type": "Kascade", "microsteps": [
        {"name": "install_bootloader", "timeout": 30, "retries": 1, "breakpoint": True,
         "substitute": [{"action": "run", "name": "grub", "file": "myscript.sh", "params": "-v"}],
         "post-ops": [{"action": "exec", "command": "sync"}]}]}])
    micro = load_config(config_dir.path).clusters["vm"].automata["BroadcastEnv"][0].microsteps[0]
    assert (micro.timeout, micro.retries, micro.raisable, micro.breakpoint) == (30, 1, True, True)
    sub = micro.substitute[0]
    assert (sub.label, sub.file, sub.params, sub.timeout, sub.retries, sub.scattering) == (
        "grub", str(config_dir.path / "myscript.sh"), "-v", 0, 0, "tree")
    assert micro.post_ops[0].label == "exec" and micro.pre_ops == []


def test_request_automata_use_full_names():
    from kadeploy.config import parse_request_automata

    automata = parse_request_automata({
        "SetDeploymentEnv": [{"name": "SetDeploymentEnvDummy", "retries": 1, "timeout": 20}],
        "BroadcastEnv": [{"name": "BroadcastEnvDummy", "timeout": 20}],
        "BootNewEnv": [{"name": "BootNewEnvDummy"}],
    })
    assert [(impls[0].name, impls[0].retries, impls[0].timeout) for impls in automata.values()] == [
        ("SetDeploymentEnvDummy", 1, 20), ("BroadcastEnvDummy", 0, 20), ("BootNewEnvDummy", 0, 0)]
    with pytest.raises(ConfigError, match='automata: BootNewEnv\\[0\\]: type: unknown BootNewEnv implementation "BootNewEnvFast"'):
        parse_request_automata({"SetDeploymentEnv": [{"name": "SetDeploymentEnvDummy"}],
                                "BroadcastEnv": [{"name": "BroadcastEnvDummy"}],
                                "BootNewEnv": [{"name": "BootNewEnvFast"}]})


def test_custom_level_names_apply_to_remoteops_and_command_conf(config_dir):
    config_dir.edit("vm.conf", "remoteops", {
        "level_name": "gentle, firm",
        "reboot": [{"name": "gentle", "cmd": "a"}, {"name": "firm", "cmd": "b"}],
    })
    config_dir.write("command.conf", {"vm-001": {"reboot_firm": "c", "reboot_hard": "d"}})
    cfg = load_config(config_dir.path)
    assert cfg.clusters["vm"].remoteops.level_name == ["gentle", "firm"]
    assert cfg.node_command("vm-001", "reboot_firm") == "c"
    assert cfg.warnings == ["command.conf: vm-001/reboot_hard: unknown command kind, ignored"]
    config_dir.edit("vm.conf", "remoteops/level_name", ["a", "b", "c", "d"])
    assert "vm.conf: remoteops/level_name: expected at most 3 item(s), got 4" in error_of(config_dir)


# --- topology (our extension) --------------------------------------------------------------

def test_topology_maps_nodes_to_switches_and_orders_the_chain(config_dir):
    from kadeploy.broadcast.topology import chain_order
    config_dir.edit("vm.conf", "topology", {"switches": [
        {"name": "core"},
        {"name": "sw-b", "parent": "core", "nodes": "n-[1-2].vm"},
        {"name": "sw-a", "parent": "core", "nodes": ["n-3.vm"]},
    ]})
    cluster = load_config(config_dir.path).clusters["vm"]
    topology = cluster.topology
    assert topology.node_switches() == {"n-1.vm": "sw-b", "n-2.vm": "sw-b", "n-3.vm": "sw-a"}
    assert topology.switch_parents() == {"sw-b": "core", "sw-a": "core"}
    assert chain_order(["n-1.vm", "n-2.vm", "n-3.vm"], topology.node_switches(),
                       topology.switch_parents()) == ["n-3.vm", "n-1.vm", "n-2.vm"]


@pytest.mark.parametrize(("switches", "message"), [
    ([{"name": "sw-a", "parent": "core"}], "unknown parent switch 'core'"),
    ([{"name": "sw-a", "nodes": "n-1.vm"}, {"name": "sw-b", "nodes": "n-1.vm"}], "n-1.vm is on both sw-a and sw-b"),
    ([{"nodes": "n-1.vm"}], "topology/switches[0].name: mandatory field is missing"),
])
def test_topology_errors_name_the_switch(config_dir, switches, message):
    config_dir.edit("vm.conf", "topology", {"switches": switches})
    text = error_of(config_dir)
    assert "vm.conf" in text and message in text, text
