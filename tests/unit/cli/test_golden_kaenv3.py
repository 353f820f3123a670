"""kaenv3's output, byte for byte as Kadeploy3 3.3.11 prints it (bin/kaenv3 `print_headers`,
`print_short`, `print_full`, `result`)."""

from __future__ import annotations

from kadeploy.cli.kaenv3 import list_lines, print_lines_yaml, short_line

ENV = {"name": "debian12-min", "version": 3, "description": "Debian 12: minimal", "author": "admin@example.org",
       "visibility": "public", "destructive": False, "os": "linux",
       "image": {"file": "server:///images/debian12-min.tgz", "kind": "tar", "compression": "gzip"},
       "postinstalls": [{"archive": "/home/alice/post.tgz", "compression": "gzip",
                         "script": "traitement.ash /rambin"}],
       "boot": {"kernel": "/vmlinuz", "initrd": "/initrd.img", "kernel_params": "console=ttyS0,115200n8"},
       "filesystem": "ext4", "partition_type": 131, "multipart": False, "user": "root"}


def test_listing_header_and_columns() -> None:
    # sprintf("%-21s %-7s %-11s %.35s\n", ...) for the two header lines
    assert list_lines([ENV])[:2] == [
        "Name                  Version User        Description",
        "####                  ####### ####        ###########",
    ]
    assert list_lines([ENV])[2] == "debian12-min          3       root        Debian 12: minimal"
    assert list_lines([]) == ["No environment has been found"]


def test_description_is_cut_to_what_fits_in_80_columns() -> None:
    # tot = 21 + 7 + 11 + 3 = 42: up to 38 characters are printed whole, longer ones cut to 35 + '...'
    env = dict(ENV, description="x" * 38)
    assert short_line(env) == f"{'debian12-min':<21} {'3':<7} {'root':<11} " + "x" * 38
    env = dict(ENV, description="x" * 39)
    assert short_line(env) == f"{'debian12-min':<21} {'3':<7} {'root':<11} " + "x" * 35 + "..."


def test_long_names_and_users_shift_the_columns_as_print_short() -> None:
    # name of 24 (tmp = 3 < 7): version column "%-4s ", tot = 24 + 4 + 11 + 3 = 42
    env = dict(ENV, name="n" * 24, description="d" * 40)
    assert short_line(env) == "n" * 24 + " " + "3   " + " " + "root       " + " " + "d" * 35 + "..."
    # name of 30 (tmp = 9 >= 7): "%s ", tot += env['version'].size, 8 for a Ruby Integer
    env = dict(ENV, name="n" * 30, user="a-very-long-user", description="d" * 30)
    tot = 30 + 8 + 16 + 3
    assert short_line(env) == "n" * 30 + " 3 " + "a-very-long-user " + "d" * (80 - tot - 3) + "..."


def test_print_is_ruby_to_yaml_without_the_user() -> None:
    # print_full: env.delete('user'); debug env.to_yaml (Psych: '...' for ': ', "..." for a leading '/')
    assert print_lines_yaml([ENV], None, "root") == (
        "---\n"
        "name: debian12-min\n"
        "version: 3\n"
        "description: 'Debian 12: minimal'\n"
        "author: admin@example.org\n"
        "visibility: public\n"
        "destructive: false\n"
        "os: linux\n"
        "image:\n"
        "  file: server:///images/debian12-min.tgz\n"
        "  kind: tar\n"
        "  compression: gzip\n"
        "postinstalls:\n"
        "- archive: \"/home/alice/post.tgz\"\n"
        "  compression: gzip\n"
        "  script: traitement.ash /rambin\n"
        "boot:\n"
        "  kernel: \"/vmlinuz\"\n"
        "  initrd: \"/initrd.img\"\n"
        "  kernel_params: console=ttyS0,115200n8\n"
        "filesystem: ext4\n"
        "partition_type: 131\n"
        "multipart: false\n")


def test_print_prefers_the_users_own_environments_unless_a_user_is_named() -> None:
    # result(:print): without -u, `ret.select { |e| e["user"] == USER }`, all of them if none is
    mine, theirs = dict(ENV, user="alice", version=1), dict(ENV, user="root", version=2)
    assert "version: 1\n" in print_lines_yaml([theirs, mine], None, "alice")
    assert "version: 2\n" not in print_lines_yaml([theirs, mine], None, "alice")
    assert "version: 2\n" in print_lines_yaml([theirs], None, "alice")
    assert print_lines_yaml([theirs, mine], "root", "alice").count("---\n") == 2
    assert print_lines_yaml([], None, "alice") == "No environment has been found\n"
