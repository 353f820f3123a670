"""load_config / check_config over a whole directory; command.conf; client.conf."""

from __future__ import annotations

import logging

import pytest

from kadeploy.config import check_config, load_client_config, load_config
from kadeploy.errors import ConfigError, ErrorCode


def test_sample_directory_loads_without_warnings(config_dir):
    cfg = load_config(config_dir.path)
    assert cfg.config_dir == config_dir.path.resolve()
    assert set(cfg.clusters) == {"graphene", "vm"}
    assert cfg.version == "3.3.11.stable"
    assert cfg.warnings == []
    assert check_config(config_dir.path) == []


def test_command_conf_overrides_by_short_or_full_name(config_dir):
    cfg = load_config(config_dir.path)
    assert cfg.node_command("vm-001", "reboot_hard") == "vmware-cmd /home/vmware/vm-001/vm-001.vmx reset hard"
    assert cfg.node_command("griffon-1.nancy.grid5000.fr", "power_status") == "lanpower -s griffon-1"
    assert cfg.node_command("griffon-2.nancy.grid5000.fr", "power_status") is None
    assert cfg.node_command("vm-002", "reboot_soft") is None


def test_command_conf_unknown_node_and_kind_are_warnings(config_dir, caplog):
    config_dir.write("command.conf", {"ghost-1": {"reboot_soft": "x"}, "vm-002": {"reboot_gently": "y", "console": "c"}})
    with caplog.at_level(logging.WARNING, logger="kadeploy.config"):
        cfg = load_config(config_dir.path)
    assert cfg.warnings == [
        "command.conf: ghost-1: the node does not exist in clusters.conf, ignored",
        "command.conf: vm-002/reboot_gently: unknown command kind, ignored",
    ]
    assert cfg.commands == {"vm-002": {"console": "c"}}
    assert "ghost-1: the node does not exist" in caplog.text


def test_command_conf_wrong_type_is_an_error(config_dir):
    config_dir.write("command.conf", {"vm-002": {"console": 3}})
    with pytest.raises(ConfigError, match="command.conf: vm-002/console: expected a string, got 3"):
        load_config(config_dir.path)


def test_optional_files_may_be_absent(config_dir):
    (config_dir.path / "command.conf").unlink()
    (config_dir.path / "version").unlink()
    cfg = load_config(config_dir.path)
    assert cfg.commands == {} and cfg.version is None


def test_legacy_file_names_are_accepted_with_a_warning(config_dir):
    for current, legacy in [("server.conf", "server_conf.yml"), ("clusters.conf", "clusters.yml"),
                            ("command.conf", "cmd.yml")]:
        (config_dir.path / current).rename(config_dir.path / legacy)
    cfg = load_config(config_dir.path)
    assert len(cfg.nodes) == 97
    assert cfg.warnings == [
        "server_conf.yml: deprecated file name, consider renaming it to 'server.conf'",
        "clusters.yml: deprecated file name, consider renaming it to 'clusters.conf'",
        "cmd.yml: deprecated file name, consider renaming it to 'command.conf'",
    ]


def test_unknown_keys_in_every_file_are_warnings(config_dir):
    config_dir.edit("server.conf", "windows/reboot/sleeptime", 3)
    config_dir.edit("clusters.conf", "clusters/1/colour", "red")
    config_dir.edit("vm.conf", "boot/kernels/deploy/initramfs", "x")
    config_dir.edit("vm.conf", "name", "vm")
    warnings = check_config(config_dir.path)
    assert sorted(warnings) == sorted([
        "server.conf: windows/reboot/sleeptime: unknown key, ignored",
        "clusters.conf: clusters[1].colour: unknown key, ignored",
        "vm.conf: name: unknown key, ignored",
        "vm.conf: boot/kernels/deploy/initramfs: unknown key, ignored",
    ])


def test_missing_server_conf_and_missing_directory(config_dir, tmp_path):
    (config_dir.path / "server.conf").unlink()
    with pytest.raises(ConfigError, match="server.conf: file not found in"):
        load_config(config_dir.path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nowhere")


def test_invalid_yaml_names_file_and_line(config_dir):
    (config_dir.path / "vm.conf").write_text("partitioning:\n  block_device: [/dev/sda\n")
    with pytest.raises(ConfigError) as info:
        load_config(config_dir.path)
    assert info.value.message.startswith("vm.conf: invalid YAML (line 3")
    assert info.value.code == ErrorCode.BAD_CONFIGURATION


def test_top_level_must_be_a_mapping(config_dir):
    config_dir.write("server.conf", "- a\n- b\n")
    with pytest.raises(ConfigError, match="server.conf: expected a mapping at the top level, got a list"):
        load_config(config_dir.path)


def test_several_errors_are_all_reported(config_dir):
    config_dir.edit("server.conf", "cache/size", "x")
    config_dir.edit("server.conf", "rights/kind", "ldap")
    with pytest.raises(ConfigError) as info:
        load_config(config_dir.path)
    lines = info.value.message.splitlines()
    assert lines == [
        'server.conf: rights/kind: must be one of db, dummy (got "ldap")',
        'server.conf: cache/size: expected an integer, got "x"',
    ]


# --- client.conf ---------------------------------------------------------------------------

def test_client_conf_sample(config_dir):
    client = load_client_config(config_dir.path / "client.conf")
    assert client.default == "nancy"
    nancy = client.server()
    assert (nancy.hostname, nancy.port, nancy.secure, nancy.auth_headers_prefix) == (
        "kadeploy.nancy.grid5000.fr", 25300, True, None)
    assert nancy.base_url == "https://kadeploy.nancy.grid5000.fr:25300"
    lille = client.server("lille")
    assert lille.secure is True and lille.auth_headers_prefix == "X-Kadeploy-"
    with pytest.raises(KeyError):
        client.server("rennes")


def test_client_conf_errors_and_legacy_name(config_dir):
    path = config_dir.path / "client.conf"
    config_dir.edit("client.conf", "default", "rennes")
    with pytest.raises(ConfigError, match='client.conf: default: no server is named "rennes"'):
        load_client_config(path)
    config_dir.edit("client.conf", "default", "lille")
    config_dir.edit("client.conf", "servers/0/port", "25300")
    with pytest.raises(ConfigError, match='client.conf: servers\\[0\\].port: expected an integer, got "25300"'):
        load_client_config(path)
    config_dir.edit("client.conf", "servers/0/port", 25301)
    path.rename(config_dir.path / "client_conf.yml")
    client = load_client_config(path)
    assert client.server().port == 25301
    assert client.warnings == ["client_conf.yml: deprecated file name, consider renaming it to 'client.conf'"]
