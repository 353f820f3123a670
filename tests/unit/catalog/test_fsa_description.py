"""FSArchiver (`fsa`) and multipart descriptions: what `kaenv3 -a` accepts, refuses and warns about.

Kadeploy3's rules (`common/environment.rb`): an fsa compression is an integer
0..9 (default 0); `options`, when given, must hold `partitions`; a multipart
environment needs `options/partitions`, `boot/block_device` and
`boot/partition`; ids and devices may not repeat; several partitions on a
non-multipart environment only warn (the first is restored).
"""

from __future__ import annotations

import pytest

from kadeploy.catalog.environment import environment_from_dict
from kadeploy.errors import ErrorCode, KadeployError

MULTIPART = {
    "name": "debian12-min-fsa",
    "os": "linux",
    "multipart": True,
    "image": {"file": "server:///images/debian12-min.fsa", "kind": "fsa", "compression": 3},
    "boot": {"kernel": "/vmlinuz", "initrd": "/initrd.img", "block_device": "/dev/sda", "partition": 3},
    "filesystem": "ext4",
    "partition_type": 0x83,
    "options": {"partitions": [{"id": 0, "device": "/dev/sda3"}, {"id": 1, "device": "/dev/sda5"}]},
}


def refused(data: dict) -> str:
    with pytest.raises(KadeployError) as info:
        environment_from_dict(data, "env.yaml")
    assert info.value.code == ErrorCode.INVALID_ENVIRONMENT
    return info.value.message


def with_(**changes: object) -> dict:
    return {**MULTIPART, **changes}


def test_multipart_fsa_description_is_accepted_and_printed_back_unchanged():
    env = environment_from_dict(MULTIPART, "env.yaml")
    assert env.image_kind_short == "fsa3"
    assert [(p.id, p.device) for p in env.options.partitions] == [(0, "/dev/sda3"), (1, "/dev/sda5")]
    assert env.warnings == []
    shown = env.to_api_dict()
    assert shown["image"] == {"file": "server:///images/debian12-min.fsa", "kind": "fsa", "compression": 3}
    assert shown["boot"]["block_device"] == "/dev/sda" and shown["boot"]["partition"] == 3
    assert environment_from_dict(shown, "again").to_api_dict() == shown


def test_fsa_needs_no_compression_and_defaults_to_level_0():
    env = environment_from_dict(with_(image={"file": "f.fsa", "kind": "fsa"}), "env.yaml")
    assert env.image.compression == 0 and env.image_kind_short == "fsa0"


@pytest.mark.parametrize("level", ["3", 3.0, True, -1, 10, "gzip"])
def test_fsa_compression_other_than_an_integer_0_to_9_is_refused(level):
    message = refused(with_(image={"file": "f.fsa", "kind": "fsa", "compression": level}))
    assert "env.yaml: image/compression: must be an integer from 0 to 9 for an fsa image" in message


def test_multipart_without_its_partition_map_or_boot_partition_is_refused():
    message = refused({key: value for key, value in MULTIPART.items() if key not in ("options", "boot")})
    assert "env.yaml: options/partitions: mandatory for a multipart environment" in message
    assert "env.yaml: boot/block_device: mandatory for a multipart environment" in message
    assert "env.yaml: boot/partition: mandatory for a multipart environment" in message
    assert "options/partitions: mandatory" in refused(with_(options={"partitions": []}))


def test_options_without_partitions_is_refused_as_kadeploy3_does():
    assert "env.yaml: options/partitions: mandatory field is missing" in refused(with_(options={}))


def test_multipart_is_refused_for_an_image_that_is_not_fsa():
    message = refused(with_(image={"file": "f.tgz", "kind": "tar", "compression": "gzip"}))
    assert "env.yaml: multipart: only an fsa image holds several partitions (image/kind is tar)" in message


def test_repeated_partition_ids_and_devices_are_refused():
    message = refused(with_(options={"partitions": [{"id": 0, "device": "/dev/sda3"}, {"id": 0, "device": "/dev/sda3"}]}))
    assert "env.yaml: options/partitions[1].id: partition id 0 is already defined" in message
    assert 'env.yaml: options/partitions[1].device: partition device "/dev/sda3" is already defined' in message


@pytest.mark.parametrize("device", ["sda3", "/dev/sda3,mkfs=xfs", "/dev/sda 3", ""])
def test_a_device_fsarchiver_could_not_be_given_is_refused(device):
    message = refused(with_(options={"partitions": [{"id": 0, "device": device}]}))
    assert "env.yaml: options/partitions[0].device" in message


def test_negative_ids_and_partition_numbers_are_refused():
    assert "options/partitions[0].id" in refused(with_(options={"partitions": [{"id": -1, "device": "/dev/sda3"}]}))
    assert "boot/partition" in refused(with_(boot={**MULTIPART["boot"], "partition": 0}))
    assert "boot/block_device" in refused(with_(boot={**MULTIPART["boot"], "block_device": "sda"}))


def test_several_partitions_without_multipart_warn_that_only_the_first_is_restored():
    env = environment_from_dict(with_(multipart=False, boot={"kernel": "/vmlinuz"},
                                      options={"partitions": [{"id": 1, "device": "/dev/sda3"},
                                                              {"id": 0, "device": "/dev/sda5"}]}), "env.yaml")
    assert env.warnings == ["env.yaml: options/partitions: several partitions for a non-multipart environment: "
                            "only the first one (id 1) is restored, on the deployment partition"]


def test_fields_a_deployment_would_not_use_are_warned_about():
    env = environment_from_dict(with_(multipart=False), "env.yaml")
    assert "env.yaml: boot/block_device: only used by multipart environments, ignored" in env.warnings
    assert "env.yaml: boot/partition: only used by multipart environments, ignored" in env.warnings
    tar = environment_from_dict(with_(multipart=False, boot={"kernel": "/vmlinuz"},
                                      image={"file": "f.tgz", "kind": "tar", "compression": "gzip"}), "env.yaml")
    assert tar.warnings == ["env.yaml: options/partitions: only used by fsa images, ignored for a tar image"]
