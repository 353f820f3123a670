"""Writes a small Kadeploy3 configuration directory for tests that start the real kadeploy3d."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

NODES = [f"node-{i}.c1.test" for i in range(1, 5)]


def write_config_dir(directory: Path, port: int, database: Path, *, secure: bool = False,
                     server_extra: dict[str, Any] | None = None) -> Path:
    """server.conf (sqlite, ACL from localhost), clusters.conf (4 nodes), c1.conf with Dummy automata.

    `server_extra` adds (or replaces) top-level server.conf sections, e.g. `logs`.
    """
    etc = directory / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "partitioning.sh").write_text("#!/bin/sh\ntrue\n")
    (etc / "bootloader.sh").write_text("#!/bin/sh\ntrue\n")
    server = {
        "database": {"kind": "sqlite", "name": str(database)},
        "rights": {"kind": "dummy", "almighty_users": "root"},
        "authentication": {"acl": {"whitelist": ["127.0.0.1"]}},
        "security": {"secure_server": secure},
        "cache": {"directory": str(directory / "cache"), "size": 100},
        "network": {"server_hostname": "127.0.0.1", "ports": {"kadeploy_server": port}},
        "pxe": {"dhcp": {"method": "PXElinux", "repository": str(directory / "tftpboot"),
                         "export": {"kind": "tftp", "server": "127.0.0.1"}}},
    }
    server.update(server_extra or {})
    clusters = {"clusters": [{"name": "c1", "conf_file": "c1.conf",
                              "nodes": [{"name": "node-[1-4].c1.test", "address": "10.250.0.[1-4]"}]}]}
    cluster = {
        "partitioning": {"block_device": "/dev/sda", "partitions": {"swap": 1, "prod": 2, "deploy": 3},
                         "script": str(etc / "partitioning.sh")},
        "boot": {"install_bootloader": str(etc / "bootloader.sh"),
                 "kernels": {"deploy": {"vmlinuz": "k", "initrd": "i"}}},
        "remoteops": {"reboot": [{"name": "soft", "cmd": "true"}]},
        "automata": {"macrosteps": {"SetDeploymentEnv": [{"type": "Dummy", "timeout": 600}],
                                    "BroadcastEnv": [{"type": "Dummy", "timeout": 600}],
                                    "BootNewEnv": [{"type": "Dummy", "timeout": 600}]}},
    }
    (etc / "server.conf").write_text(yaml.safe_dump(server))
    (etc / "clusters.conf").write_text(yaml.safe_dump(clusters))
    (etc / "c1.conf").write_text(yaml.safe_dump(cluster))
    (etc / "version").write_text("3.3.11.test\n")
    return etc
