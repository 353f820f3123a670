"""Environment descriptions (reference §4): examples parse, defaults, rules, messages."""

from __future__ import annotations

import pytest
import yaml

from kadeploy.catalog.environment import (
    EnvironmentDescription,
    environment_from_dict,
    image_kind_long,
    image_kind_short,
    parse_environment,
    parse_environments,
)
from kadeploy.errors import ErrorCode, KadeployError

REFERENCE_EXAMPLES = """\
---
name: wheezy-min
version: 1
description: Debian 7.
author: support-staff@lists.grid5000.fr
visibility: public
destructive: false
os: linux
image: {file: "server:///etc/kadeploy3/envs/wheezy-x64-min-1.4.tgz", kind: tar, compression: gzip}
postinstalls:
- {archive: "http://server/post/g5k-postinstall.tgz", compression: gzip, script: "traitement.ash /rambin"}
boot: {kernel: /vmlinuz, initrd: /initrd.img, kernel_params: "console=tty0 console=ttyS0,115200n8"}
filesystem: ext4
partition_type: 131
multipart: false
---
name: freebsd
version: 1
os: other
image: {file: /grid5000/freebsd.ddgz, kind: dd, compression: gzip}
---
name: debian-multipart
os: linux
multipart: true
image: {kind: fsa, compression: 3, file: /grid5000/debian-multipart.fsa}
boot: {kernel: /vmlinuz, initrd: /initrd.img, block_device: /dev/sda, partition: 2}
filesystem: ext3
partition_type: 0x83
options:
  partitions: [{id: 0, device: /dev/sda1}, {id: 1, device: /dev/sda2}, {id: 2, device: /dev/sda3}]
"""

TAR_ENV = {
    "name": "debian12-min",
    "os": "linux",
    "image": {"file": "http://srv/debian12.tzst", "kind": "tar", "compression": "zstd"},
    "boot": {"kernel": "/vmlinuz", "initrd": "/initrd.img"},
    "filesystem": "ext4",
}


def invalid(data, source="env.yaml") -> str:
    with pytest.raises(KadeployError) as info:
        environment_from_dict(data, source)
    assert info.value.code == ErrorCode.INVALID_ENVIRONMENT
    return info.value.message


def test_reference_examples_parse():
    wheezy, freebsd, multipart = parse_environments(REFERENCE_EXAMPLES, "examples.yaml")
    assert (wheezy.name, wheezy.version, wheezy.visibility, wheezy.os) == ("wheezy-min", 1, "public", "linux")
    assert wheezy.image_kind_short == "tgz"
    assert wheezy.postinstalls[0].script == "traitement.ash /rambin"
    assert wheezy.postinstalls[0].short_kind == "tgz"
    assert wheezy.boot.kernel_params == "console=tty0 console=ttyS0,115200n8"
    assert (wheezy.partition_type, wheezy.partition_type_hex) == (131, "83")
    assert freebsd.image_kind_short == "ddgz" and freebsd.os == "other"
    assert multipart.image_kind_short == "fsa3" and multipart.partition_type == 0x83
    assert [p.device for p in multipart.options.partitions] == ["/dev/sda1", "/dev/sda2", "/dev/sda3"]
    assert (multipart.boot.block_device, multipart.boot.partition) == ("/dev/sda", 2)
    assert all(env.warnings == [] for env in (wheezy, freebsd, multipart))


def test_defaults():
    env = parse_environment(yaml.safe_dump({"name": "x", "os": "other",
                                            "image": {"file": "/x.dd.gz", "kind": "dd", "compression": "gzip"}}),
                            "env.yaml")
    assert (env.version, env.description, env.author, env.visibility, env.destructive) == (1, "", "", "private", False)
    assert (env.preinstall, env.postinstalls, env.filesystem, env.partition_type, env.multipart, env.options) == (
        None, [], "", 0, False, None)
    assert env.boot.model_dump() == {"kernel": "", "initrd": "", "kernel_params": "", "hypervisor": "",
                                     "hypervisor_params": "", "block_device": None, "partition": None}
    assert env.user is None


@pytest.mark.parametrize(
    ("kind", "compression", "short"),
    [("tar", "gzip", "tgz"), ("tar", "bzip2", "tbz2"), ("tar", "xz", "txz"), ("tar", "zstd", "tzst"),
     ("dd", "gzip", "ddgz"), ("dd", "bzip2", "ddbz2"), ("dd", "xz", "ddxz"), ("dd", "zstd", "ddzst"),
     ("fsa", 0, "fsa0"), ("fsa", 9, "fsa9")],
)
def test_short_kinds_both_ways(kind, compression, short):
    assert image_kind_short(kind, compression) == short
    assert image_kind_long(short) == (kind, compression)
    env = environment_from_dict({**TAR_ENV, "image": {"file": "f", "kind": kind, "compression": compression}}, "e")
    assert env.image_kind_short == short


def test_fsa_compression_defaults_to_0_and_must_be_an_integer_as_in_kadeploy3():
    assert environment_from_dict({**TAR_ENV, "image": {"file": "f", "kind": "fsa"}}, "e").image_kind_short == "fsa0"
    assert 'image/compression: must be an integer from 0 to 9 for an fsa image (got "7")' in invalid(
        {**TAR_ENV, "image": {"file": "f", "kind": "fsa", "compression": "7"}})
    with pytest.raises(ValueError):
        image_kind_long("tgzz")


@pytest.mark.parametrize(
    ("value", "expected"), [(131, 131), (0x83, 131), ("0x83", 131), ("83", 131), ("0X8e", 0x8E), (0, 0)]
)
def test_partition_type_int_or_hex_string(value, expected):
    assert environment_from_dict({**TAR_ENV, "partition_type": value}, "e").partition_type == expected


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"image": {"file": "f", "kind": "tgz", "compression": "gzip"}},
         'env.yaml: image/kind: must be one of tar, dd, fsa (got "tgz")'),
        ({"image": {"file": "f", "kind": "tar", "compression": "lz4"}},
         'env.yaml: image/compression: must be one of gzip, bzip2, xz, zstd for a tar image (got "lz4")'),
        ({"image": {"file": "f", "kind": "dd"}}, "env.yaml: image/compression: mandatory field is missing"),
        ({"image": {"file": "f", "kind": "fsa", "compression": 12}},
         "env.yaml: image/compression: must be an integer from 0 to 9 for an fsa image (got 12)"),
        ({"image": {"file": "f", "kind": "fsa", "compression": "gzip"}},
         'env.yaml: image/compression: must be an integer from 0 to 9 for an fsa image (got "gzip")'),
        ({"image": {"kind": "tar", "compression": "gzip"}}, "env.yaml: image/file: mandatory field is missing"),
        ({"image": None}, "env.yaml: image: expected a mapping, got nothing (null)"),
        ({"name": 12}, "env.yaml: name: expected a string, got 12"),
        ({"version": "2"}, 'env.yaml: version: expected an integer, got "2"'),
        ({"visibility": "secret"}, 'env.yaml: visibility: must be one of private, shared, public (got "secret")'),
        ({"os": "windows"}, 'env.yaml: os: must be one of linux, xen, other (got "windows")'),
        ({"destructive": "no"}, 'env.yaml: destructive: expected a boolean (true or false), got "no"'),
        ({"partition_type": "zz"}, 'env.yaml: partition_type: expected a partition type as an integer or hex string'),
        ({"partition_type": 300}, "env.yaml: partition_type: must be <= 255 (got 300)"),
        ({"boot": {"kernel": ""}}, "env.yaml: boot/kernel: mandatory for OS linux with the tar image kind"),
        ({"filesystem": ""}, "env.yaml: filesystem: mandatory for OS linux with the tar image kind"),
        ({"os": "xen"}, "env.yaml: boot/hypervisor: mandatory for OS xen with the tar image kind"),
        ({"postinstalls": [{"archive": "p.tgz", "compression": "rar"}]},
         'env.yaml: postinstalls[0].compression: must be one of gzip, bzip2, xz, zstd (got "rar")'),
        ({"postinstalls": {"archive": "p.tgz"}}, "env.yaml: postinstalls: expected a list, got a mapping"),
        ({"preinstall": {"compression": "gzip"}}, "env.yaml: preinstall/archive: mandatory field is missing"),
        ({"multipart": True}, "env.yaml: options/partitions: mandatory for a multipart environment"),
        ({"options": {"partitions": [{"id": 0, "device": "/dev/sda1"}, {"id": 0, "device": "/dev/sda2"}]}},
         "env.yaml: options/partitions[1].id: partition id 0 is already defined"),
    ],
)
def test_bad_descriptions_name_source_field_and_expectation(change, message):
    assert message in invalid({**TAR_ENV, **change})


def test_missing_mandatory_fields():
    message = invalid({"image": {"file": "f", "kind": "dd", "compression": "xz"}})
    assert message.splitlines() == ["env.yaml: name: mandatory field is missing",
                                    "env.yaml: os: mandatory field is missing"]


def test_multipart_needs_boot_device_and_partition():
    message = invalid({**TAR_ENV, "multipart": True, "options": {"partitions": [{"id": 0, "device": "/dev/sda1"}]}})
    assert "env.yaml: boot/block_device: mandatory for a multipart environment" in message
    assert "env.yaml: boot/partition: mandatory for a multipart environment" in message


def test_dd_image_needs_no_kernel_nor_filesystem():
    env = environment_from_dict({"name": "raw", "os": "linux",
                                 "image": {"file": "/raw.dd.xz", "kind": "dd", "compression": "xz"}}, "e")
    assert env.image_kind_short == "ddxz"


def test_unknown_keys_are_warnings():
    env = environment_from_dict({**TAR_ENV, "colour": "blue", "boot": {**TAR_ENV["boot"], "kernal": "/x"}}, "env.yaml")
    assert sorted(env.warnings) == ["env.yaml: boot/kernal: unknown key, ignored",
                                    "env.yaml: colour: unknown key, ignored"]
    assert "colour" not in env.to_api_dict()


def test_yaml_errors_and_document_counts():
    with pytest.raises(KadeployError, match=r"env.yaml: invalid YAML \(line 2, column 1\)"):
        parse_environment("name: [x\n", "env.yaml")
    with pytest.raises(KadeployError, match="env.yaml: the environment description is empty"):
        parse_environment("", "env.yaml")
    with pytest.raises(KadeployError, match="env.yaml: expected one environment description, found 3"):
        parse_environment(REFERENCE_EXAMPLES, "env.yaml")
    with pytest.raises(KadeployError, match="env.yaml: expected a mapping"):
        parse_environment("- a\n", "env.yaml")


def test_api_dict_has_kadeploy3_shape():
    wheezy = parse_environments(REFERENCE_EXAMPLES, "examples.yaml")[0]
    wheezy.user = "root"
    assert wheezy.to_api_dict() == {
        "name": "wheezy-min", "version": 1, "description": "Debian 7.",
        "author": "support-staff@lists.grid5000.fr", "visibility": "public", "destructive": False, "os": "linux",
        "image": {"file": "server:///etc/kadeploy3/envs/wheezy-x64-min-1.4.tgz", "kind": "tar", "compression": "gzip"},
        "postinstalls": [{"archive": "http://server/post/g5k-postinstall.tgz", "compression": "gzip",
                          "script": "traitement.ash /rambin"}],
        "boot": {"kernel": "/vmlinuz", "initrd": "/initrd.img", "kernel_params": "console=tty0 console=ttyS0,115200n8"},
        "filesystem": "ext4", "partition_type": 131, "multipart": False, "user": "root",
    }
    freebsd = parse_environments(REFERENCE_EXAMPLES, "examples.yaml")[1]
    assert "boot" not in freebsd.to_api_dict() and "filesystem" not in freebsd.to_api_dict()


@pytest.mark.parametrize("index", [0, 1, 2])
def test_yaml_round_trip(index):
    env = parse_environments(REFERENCE_EXAMPLES, "examples.yaml")[index]
    text = env.to_yaml()
    assert text.startswith("---\nname: ")
    again = parse_environment(text, "printed.yaml")
    assert again == env
    keys = list(yaml.safe_load(text))
    assert keys.index("name") < keys.index("os") < keys.index("image") < keys.index("partition_type")


def test_model_is_usable_directly():
    env = EnvironmentDescription.model_validate(TAR_ENV)
    assert env.image.short_kind == "tzst"
