"""kadeploy-capture: the command run on the node, the description written, and a real capture of a tree."""

from __future__ import annotations

import io
import os
import shlex
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from kadeploy.catalog.environment import parse_environment
from kadeploy.cli import capture
from kadeploy.cli.common import OptionError

DEPLOYED = {"id": 4, "name": "debian12-min", "version": 2, "user": "root", "visibility": "public", "os": "linux",
            "description": "Debian 12", "author": "admins", "destructive": False,
            "image": {"file": "server:///envs/debian12.tgz", "kind": "tar", "compression": "gzip"},
            "postinstalls": [{"archive": "server:///envs/post.tgz", "compression": "gzip", "script": "run"}],
            "boot": {"kernel": "/vmlinuz", "initrd": "/initrd.img", "kernel_params": "quiet"},
            "filesystem": "ext4", "partition_type": 131, "multipart": False}


def test_compression_follows_the_file_name():
    assert capture.compression_of(Path("a/img.tgz"), None) == "gzip"
    assert capture.compression_of(Path("img.tar.zst"), None) == "zstd"
    assert capture.compression_of(Path("img.tzst"), "gzip") == "gzip"
    with pytest.raises(OptionError, match=".tgz or .tzst"):
        capture.compression_of(Path("img.tar"), None)


def test_the_node_side_script_has_tgz_g5k_options():
    script = capture.capture_script("zstd")
    assert "mount --bind / \"$snapshot\"" in script  # a non-recursive view of / without its mounts
    tar = script[script.index("tar "):]
    for option in ("--numeric-owner", "--one-file-system", "--xattrs", "--acls", "-C \"$snapshot\" -cf - ."):
        assert option in tar
    assert "--exclude=./etc/udev/rules.d/70-persistent-net.rules" in tar
    assert tar.endswith("| zstd -q -c -T0") and capture.capture_script("gzip").endswith("| gzip -c")
    assert "umount" in script.split("trap", 1)[1]  # the bind mount never outlives the capture
    with pytest.raises(OptionError):
        capture.capture_script("lz4")


def test_ssh_command_quotes_the_script_once_for_the_remote_shell():
    command = capture.ssh_command("node-1.c1.testbed", "echo 'a b'; true", identity=Path("/k/id"), port=2222)
    assert command[0] == "ssh" and command[-2] == "node-1.c1.testbed"
    assert command[command.index("-i") + 1] == "/k/id" and command[command.index("-p") + 1] == "2222"
    assert shlex.split(command[-1]) == ["sh", "-c", "echo 'a b'; true"]
    assert "BatchMode=yes" in command


def test_derived_description_is_valid_and_ready_for_kaenv3():
    env = capture.derived_description(DEPLOYED, image_uri="http://files/mine.tzst", compression="zstd", name=None,
                                      node="node-1", author="alice")
    assert (env["name"], env["version"], env["visibility"], env["author"]) == ("debian12-min-captured", 3,
                                                                               "private", "alice")
    assert env["image"] == {"file": "http://files/mine.tzst", "kind": "tar", "compression": "zstd"}
    assert env["boot"] == DEPLOYED["boot"] and env["filesystem"] == "ext4"
    assert "postinstalls" not in env and "id" not in env and "user" not in env
    assert "based on debian12-min version 2 of root" in env["description"]
    parsed = parse_environment(yaml.safe_dump(env), "captured.yaml")
    assert parsed.image_kind_short == "tzst" and parsed.warnings == []
    named = capture.derived_description(DEPLOYED, image_uri="/x.tgz", compression="gzip", name="mine", node="n",
                                        author="a")
    assert (named["name"], named["version"]) == ("mine", 1)


def test_a_failed_capture_leaves_no_file(tmp_path):
    output = tmp_path / "img.tgz"
    with pytest.raises(OptionError, match=r"exit status 3\): broken"):
        capture.run_capture(["sh", "-c", "echo partial; echo broken >&2; exit 3"], output, timeout=10)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.root
def test_capture_of_a_tree_keeps_static_dev_and_drops_mounted_subtrees(tmp_path):
    """The node-side script run for real (locally, as root) on a small root filesystem."""
    root = tmp_path / "root"
    for directory in ("dev", "proc", "etc/udev/rules.d", "home/alice", "mnt/data"):
        (root / directory).mkdir(parents=True)
    os.mknod(root / "dev" / "null", 0o666 | 0o020000, os.makedev(1, 3))
    (root / "etc" / "hostname").write_text("node-1\n")
    os.chown(root / "etc" / "hostname", 12345, 54321)
    (root / "etc/udev/rules.d/70-persistent-net.rules").write_text("SUBSYSTEM==net, NAME=eth0\n")
    (root / "home/alice/notes").write_text("kept\n")
    (root / "mnt/data/under").write_text("beneath the mount\n")
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(root / "mnt/data")], check=True, timeout=10)
    try:
        (root / "mnt/data/mounted").write_text("on the tmpfs\n")
        output = tmp_path / "img.tzst"
        script = capture.capture_script("zstd", root=str(root))
        size = capture.run_capture(["sh", "-c", script], output, timeout=60)
    finally:
        subprocess.run(["umount", str(root / "mnt/data")], check=True, timeout=10)
    assert size == output.stat().st_size > 0
    raw = subprocess.run(["zstd", "-q", "-d", "-c", str(output)], capture_output=True, check=True, timeout=30).stdout
    with tarfile.open(fileobj=io.BytesIO(raw)) as archive:
        members = {member.name.lstrip("./"): member for member in archive.getmembers()}
    assert members["dev/null"].ischr() and (members["dev/null"].devmajor, members["dev/null"].devminor) == (1, 3)
    assert (members["etc/hostname"].uid, members["etc/hostname"].gid) == (12345, 54321)
    assert "home/alice/notes" in members and "mnt/data/under" in members
    assert "mnt/data/mounted" not in members
    assert "etc/udev/rules.d/70-persistent-net.rules" not in members
    assert not list(Path("/tmp").glob("kadeploy-capture.*"))
