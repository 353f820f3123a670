"""server.conf: Kadeploy3's defaults (reference §3.1), our extensions, error messages."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from kadeploy.config import DEFAULT_CONNECTOR, ServerConfig, load_config
from kadeploy.config.validation import validate_model
from kadeploy.errors import ConfigError

MINIMAL = {
    "authentication": {"acl": {"whitelist": ["127.0.0.1"]}},
    "cache": {"size": 1000},
    "pxe": {"dhcp": {"repository": "/srv/tftp"}},
}


def load(data: dict, config_dir: Path = Path("/etc/kadeploy3")) -> tuple[ServerConfig, list[str]]:
    return validate_model(ServerConfig, data, "server.conf", context={"config_dir": config_dir})


def test_defaults_are_kadeploy3_defaults():
    server, warnings = load(MINIMAL)
    assert warnings == []
    assert server.database.kind == "sqlite"
    assert server.database.name == "/etc/kadeploy3/kadeploy.db"
    assert server.rights.kind == "db"
    assert server.rights.almighty_users == ["root"]
    assert server.rights.purge_deployment_timer == 900
    assert server.authentication.headers_prefix == "X-Kadeploy-"
    assert server.authentication.methods == ["acl"]
    assert server.security.secure_server is True
    assert server.security.local_only is False
    assert server.security.certificate is None
    assert server.ssh_private_key == "/etc/kadeploy3/keys/id_deploy"
    assert server.logs.logfile is None and server.logs.database is True and server.logs.debugfile is None
    assert (server.verbosity.logs, server.verbosity.clients) == (3, 3)
    assert (server.cache.directory, server.cache.size) == ("/tmp", 1000)
    assert server.network.server_hostname == socket.gethostname()
    ports = server.network.ports
    assert (ports.kadeploy_server, ports.ssh, ports.test_deploy_env, ports.probe_interval) == (25300, 22, 25300, 5.0)
    assert (server.network.vlan.hostname_suffix, server.network.vlan.set_cmd) == ("", "")
    assert (server.windows.reboot.size, server.windows.reboot.sleep_time, server.windows.check.size) == (50, 10, 50)
    deployment = server.environments.deployment
    assert (deployment.extraction_dir, deployment.rambin_dir, deployment.tarball_dir) == ("/mnt/dest", "/rambin", "/tmp")
    assert (server.environments.max_preinstall_size, server.environments.max_postinstall_size) == (20, 20)
    dhcp = server.pxe.dhcp
    assert (dhcp.method, dhcp.export.kind, dhcp.profiles.directory, dhcp.profiles.filename) == (
        "PXElinux", "tftp", "pxelinux.cfg", "ip_hex")
    assert server.pxe.localboot == server.pxe.dhcp.model_copy(update={"userfiles": server.pxe.localboot.userfiles})
    assert server.pxe.networkboot.repository == "/srv/tftp"
    assert server.hooks.end_of_deployment is None and server.hooks.end_of_reboot is None
    assert server.autoclean_threshold == 360
    assert server.external.default_connector == DEFAULT_CONNECTOR
    assert server.external.taktuk_connector == DEFAULT_CONNECTOR
    assert server.external.mkfs == [] and server.external.tar == ""


def test_sample_server_conf(config_dir):
    server = load_config(config_dir.path).server
    assert server.database.kind == "mysql"
    assert server.database.sqlalchemy_url() == "mysql+pymysql://deploy:secret@mysql.lan/deploy3"
    assert server.rights.almighty_users == ["root", "superuser"]
    assert server.authentication.methods == ["acl", "ident"]
    assert server.windows.check.size == 90
    assert server.pxe.localboot.method == "GrubPXE"
    assert server.pxe.localboot.binary == "grubpxe.0"
    assert server.pxe.localboot.profiles.filename == "ip"
    assert server.pxe.networkboot.method == "PXElinux"
    assert server.pxe.networkboot.export.server == "10.0.0.1"
    assert server.external.mkfs_args("ext4").startswith("-b 4096")
    assert server.external.mkfs_args("xfs") == ""
    assert server.hooks.end_of_deployment == "echo WORKFLOW_ID"


def test_sqlite_relative_name_is_in_config_dir(tmp_path):
    server, _ = load({**MINIMAL, "database": {"name": "db/k.sqlite"}}, tmp_path)
    assert server.database.name == str(tmp_path / "db/k.sqlite")
    assert server.database.sqlalchemy_url() == f"sqlite:///{tmp_path}/db/k.sqlite"


def test_postgresql_url_and_mandatory_login():
    server, _ = load({**MINIMAL, "database": {"kind": "postgresql", "name": "kadeploy", "login": "postgres",
                                              "host": "127.0.0.1", "port": 5432}})
    assert server.database.sqlalchemy_url() == "postgresql+psycopg2://postgres@127.0.0.1:5432/kadeploy"
    with pytest.raises(ConfigError, match=r"server.conf: database: login: mandatory field is missing"):
        load({**MINIMAL, "database": {"kind": "mysql", "name": "kadeploy"}})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"cache": None}, "server.conf: cache: expected a mapping, got nothing (null)"),
        ({"cache": {}}, "server.conf: cache/size: mandatory field is missing"),
        ({"cache": {"size": "big"}}, 'server.conf: cache/size: expected an integer, got "big"'),
        ({"pxe": {}}, "server.conf: pxe/dhcp: mandatory field is missing"),
        ({"pxe": {"dhcp": {"repository": "/t", "method": "UEFI"}}},
         'server.conf: pxe/dhcp/method: unknown PXE method "UEFI" (supported: GPXElinux, GrubPXE, IPXE, PXElinux)'),
        ({"security": {"secure_server": "yes"}},
         'server.conf: security/secure_server: expected a boolean (true or false), got "yes"'),
        ({"database": {"kind": "oracle"}}, 'server.conf: database/kind: must be one of sqlite, mysql, postgresql'),
        ({"verbosity": {"clients": 7}}, "server.conf: verbosity/clients: must be <= 4 (got 7)"),
        ({"authentication": {}}, "server.conf: authentication: you must set at least one authentication method"),
        ({"authentication": {"acl": {}}}, "server.conf: authentication/acl/whitelist: mandatory field is missing"),
        ({"authentication": {"acl": {"whitelist": ["/[a-/"]}}},
         "server.conf: authentication/acl/whitelist: invalid regexp /[a-/"),
        ({"authentication": {"ident": {"whitelist": ["10.0.0.0/99"]}}}, "invalid network '10.0.0.0/99'"),
        ({"authentication": {"certificate": {"whitelist": []}}},
         "server.conf: authentication/certificate: at least a certificate (ca_cert) or a public key"),
        ({"network": {"ports": {"ssh": 22.5}}}, "server.conf: network/ports/ssh: expected an integer, got 22.5"),
        ({"external": {"mkfs": [{"fstype": "ext4"}]}}, "server.conf: external/mkfs[0].args: mandatory field is missing"),
        ({"security": {"certificate": "c.pem"}}, "private_key: you have to specify the private key"),
    ],
)
def test_errors_name_file_key_path_and_expectation(change, message):
    with pytest.raises(ConfigError) as info:
        load({**MINIMAL, **change})
    assert message in info.value.message


def test_unknown_keys_are_warnings_with_their_path():
    data = {**MINIMAL, "colour": "blue", "cache": {"size": 10, "sise": 3},
            "external": {"mkfs": [{"fstype": "ext4", "args": "", "extra": 1}]}}
    _, warnings = load(data)
    assert sorted(warnings) == sorted([
        "server.conf: colour: unknown key, ignored",
        "server.conf: cache/sise: unknown key, ignored",
        "server.conf: external/mkfs[0].extra: unknown key, ignored",
    ])


def test_unknown_key_in_dhcp_is_reported_once_not_per_inheriting_section():
    data = {**MINIMAL, "pxe": {"dhcp": {"repository": "/t", "bogus": 1}}}
    _, warnings = load(data)
    assert warnings == ["server.conf: pxe/dhcp/bogus: unknown key, ignored"]


def test_localboot_inherits_dhcp_keys_it_does_not_set():
    data = {**MINIMAL, "pxe": {"dhcp": {"repository": "/t", "export": {"kind": "tftp", "server": "10.0.0.1"}},
                               "localboot": {"method": "IPXE", "binary": "ipxe.pxe",
                                             "export": {"kind": "http"}}}}
    server, _ = load(data)
    assert server.pxe.localboot.repository == "/t"
    assert server.pxe.localboot.export.kind == "http"
    assert server.pxe.localboot.export.server == "10.0.0.1"
    assert server.pxe.networkboot.method == "PXElinux"


def test_mac_profile_names_are_accepted():
    server, _ = load({**MINIMAL, "pxe": {"dhcp": {"repository": "/t", "profiles": {"filename": "mac"}}}})
    assert server.pxe.dhcp.profiles.filename == "mac"


def test_sqlite_in_memory_is_kept_as_is(tmp_path):
    server, _ = load({**MINIMAL, "database": {"kind": "sqlite", "name": ":memory:"}}, tmp_path)
    assert server.database.sqlalchemy_url() == "sqlite:///:memory:"
