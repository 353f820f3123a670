"""`-v` and `-I` of every tool, byte for byte as Kadeploy3 3.3.11 prints them.

lib/kadeploy3/client/client.rb `do_version` (l. 342-358): "Kadeploy version: #{res.strip}", prefixed
"(#{hostname}) " for each server with -M; `do_info` (l. 361-393) and `print_arraystr` (l. 627-647):
the variables joined by ", " into lines of at most $COLUMNS (80) characters, then `puts`.
"""

from __future__ import annotations

import pytest

from kadeploy.cli import kadeploy3, kastat3
from kadeploy.client.session import arraystr_lines

INFO = {"pxe": "PXElinux",
        "automata": {"c1": {"SetDeploymentEnv": [{"name": "SetDeploymentEnvUntrusted", "retries": 2,
                                                  "timeout": 200}],
                            "BootNewEnv": [{"name": "BootNewEnvKexec", "retries": 0, "timeout": 150},
                                           {"name": "BootNewEnvHardReboot", "retries": 1, "timeout": 120}]}},
        "supported_fs": {"c1": ["ext2", "ext3", "ext4"]},
        "vars": ["KADEPLOY_CLUSTER", "KADEPLOY_DEPLOY_PART", "KADEPLOY_BLOCK_DEVICE", "KADEPLOY_DEPLOY_PART_NUM",
                 "KADEPLOY_ENV", "KADEPLOY_ENV_KERNEL"]}


def _with_info(fake):
    original = type(fake).route
    fake.route = lambda method, path, query, body: (
        (200, {}, INFO) if path == "/info" else original(fake, method, path, query, body))
    return fake


def test_version(fake_server, capsys, monkeypatch) -> None:
    monkeypatch.delenv("KADEPLOY3_VERSION", raising=False)
    fake_server(["n1"])
    assert kastat3.main(["-v"]) == 0
    assert capsys.readouterr().out == "Kadeploy version: 3.3.11.stable\n"


def test_version_of_every_server_with_multi_server(fake_server, capsys, monkeypatch) -> None:
    monkeypatch.delenv("KADEPLOY3_VERSION", raising=False)
    fake_server(["n1"], name="nancy")
    fake_server(["n2"], name="lyon")
    assert kadeploy3.main(["-M", "-v"]) == 0
    # "(#{inf[0]}) ": the server's hostname, not its name
    assert capsys.readouterr().out == "(127.0.0.1) Kadeploy version: 3.3.11.stable\n" * 2


def test_version_from_the_environment_needs_no_server(capsys, monkeypatch) -> None:
    # client.rb l. 778-782: the KADEPLOY3_VERSION hack
    monkeypatch.setenv("KADEPLOY3_VERSION", "3.3.11")
    assert kastat3.main(["-v"]) == 0
    assert capsys.readouterr().out == "3.3.11\n"


def test_server_info(fake_server, capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    _with_info(fake_server(["n1"]))
    assert kastat3.main(["-I"]) == 0
    assert capsys.readouterr().out == (
        "Kadeploy server configuration:\n"
        "  Custom PXE boot method: PXElinux\n"
        "  Automata configuration:\n"
        "    c1:\n"
        "      SetDeploymentEnv: SetDeploymentEnvUntrusted,2,200\n"          # s.values.join(',')
        "      BootNewEnv: BootNewEnvKexec,0,150; BootNewEnvHardReboot,1,120\n"  # .join('; ')
        "  Deployment environment:\n"
        "    Supported file systems:\n"
        "      c1: ext2,ext3,ext4\n"
        "    Variables exported to custom scripts:\n"
        "      KADEPLOY_CLUSTER, KADEPLOY_DEPLOY_PART, KADEPLOY_BLOCK_DEVICE\n"  # 67 + 2 + 24 > 80
        "      KADEPLOY_DEPLOY_PART_NUM, KADEPLOY_ENV, KADEPLOY_ENV_KERNEL\n")


def test_server_info_with_multi_server_prefixes_every_line(fake_server, capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    _with_info(fake_server(["n1"], name="nancy"))
    assert kastat3.main(["-M", "-I"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "(127.0.0.1) Kadeploy server configuration:"
    assert all(line.startswith("(127.0.0.1) ") for line in lines) and len(lines) == 12
    # the prefix counts in the 80 columns: 79 characters, then 79 + 2 + 24 > 80
    assert lines[-2:] == ["(127.0.0.1)       KADEPLOY_CLUSTER, KADEPLOY_DEPLOY_PART, KADEPLOY_BLOCK_DEVICE",
                          "(127.0.0.1)       KADEPLOY_DEPLOY_PART_NUM, KADEPLOY_ENV, KADEPLOY_ENV_KERNEL"]


@pytest.mark.parametrize("columns, expected", [
    (80, ["  a, b, c"]),
    (7, ["  a, b", "  c"]),       # "  a, b" + "c" + 2 = 9 > 7
    (0, ["  a", "  b", "  c"]),   # COLUMNS that Ruby's to_i reads as 0: one value per line
])
def test_print_arraystr_wraps_at_columns(columns, expected) -> None:
    assert arraystr_lines(["a", "b", "c"], "  ", columns) == expected


def test_print_arraystr_of_nothing_is_an_empty_line(monkeypatch) -> None:
    # ret == '' and `$stdout.puts ''` prints a bare newline
    assert arraystr_lines([], "      ") == [""]
    monkeypatch.setenv("COLUMNS", "11abc")  # String#to_i: 11, and "  abcd" + "efgh" + 2 > 11
    assert arraystr_lines(["abcd", "efgh"], "  ") == ["  abcd", "  efgh"]
