"""Environment descriptions: Kadeploy3's YAML format (reference §4).

`parse_environment(text, source)` validates a description field by field and
raises `KadeployError(INVALID_ENVIRONMENT)` with a message naming the source,
the key path and what is wrong (`env.yaml: image/kind: must be one of tar,
dd, fsa (got "tgz")`); unknown keys become `EnvironmentDescription.warnings`.
`to_api_dict()` gives the shape `GET /environments` returns, `to_yaml()` what
`kaenv3 -p` prints, both in Kadeploy3's key order.

Beyond Kadeploy3: `zstd` compression for tar and dd images and for pre/post
archives (short kinds `tzst`, `ddzst`). Checksums are not part of the
description: the catalog stores them beside it.

Imports `kadeploy.config.validation` (the shared strict-model machinery) and
`kadeploy.errors` only.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, Field, PrivateAttr, ValidationError, field_validator

from kadeploy.config.validation import (
    ConfigModel,
    describe_value,
    format_validation_error,
    unknown_keys,
    yaml_error_message,
)
from kadeploy.errors import ErrorCode, KadeployError
from kadeploy.vocabulary import REGISTRIES, Kind

#: The image kinds an environment may name; `ImageSpec.kind` lists the same
#: three for pydantic's message, and a unit test holds the two together.
IMAGE_KINDS = tuple(REGISTRIES[Kind.IMAGE_KIND].declare(kind, kind, summary) for kind, summary in (
    ("tar", "a tar archive of the root filesystem, extracted onto the formatted partition"),
    ("dd", "a raw image of the partition (or, multipart, of the disk), written as it is"),
    ("fsa", "an fsarchiver archive, stored in the deployment environment then restored (multipart too)"),
))
COMPRESSIONS = ("gzip", "bzip2", "xz", "zstd")
FSA_COMPRESSION_LEVELS = range(0, 10)
SQL_INT_MAX = 2 ** 31 - 1  # versions and partition numbers are stored in SQL INTEGER columns
#: A device fsarchiver can be told to write (`id=N,dest=DEVICE`): an absolute path
#: without the comma that separates fsarchiver's restfs options, nor blanks.
_DEVICE = re.compile(r"/[^,\s]+")


def _device_path(value: str) -> str:
    if not _DEVICE.fullmatch(value):
        raise ValueError(f"expected a device path like /dev/sda3 (absolute, without commas nor blanks), "
                         f"got {describe_value(value)}")
    return value


DevicePath = Annotated[str, AfterValidator(_device_path)]

_SHORT_KINDS = {
    ("tar", "gzip"): "tgz",
    ("tar", "bzip2"): "tbz2",
    ("tar", "xz"): "txz",
    ("tar", "zstd"): "tzst",
    ("dd", "gzip"): "ddgz",
    ("dd", "bzip2"): "ddbz2",
    ("dd", "xz"): "ddxz",
    ("dd", "zstd"): "ddzst",
}

#: Kadeploy3's order of keys when it prints a description (`Environment::YAML_SORT`).
YAML_KEY_ORDER = (
    "name", "version", "description", "author", "visibility", "destructive", "os", "image",
    "preinstall", "postinstalls", "boot", "multipart", "filesystem", "partition_type", "options",
)


def _invalid(message: str) -> KadeployError:
    return KadeployError(ErrorCode.INVALID_ENVIRONMENT, message)


def image_kind_short(kind: str, compression: str | int) -> str:
    """Kadeploy3's short image kind: (`tar`, `gzip`) -> `tgz`, (`fsa`, 3) -> `fsa3`."""
    if kind == "fsa":
        return f"fsa{compression}"
    return _SHORT_KINDS[(kind, str(compression))]


def image_kind_long(short: str) -> tuple[str, str | int]:
    """The inverse of `image_kind_short`: `ddxz` -> (`dd`, `xz`); ValueError if unknown."""
    for (kind, compression), name in _SHORT_KINDS.items():
        if name == short:
            return kind, compression
    if short.startswith("fsa") and short[3:].isdigit() and int(short[3:]) in FSA_COMPRESSION_LEVELS:
        return "fsa", int(short[3:])
    raise ValueError(f"unknown image kind {short!r}")


class ImageSpec(ConfigModel):
    """`image`: the system image and how it is packed."""

    file: str = Field(min_length=1)
    kind: Literal["tar", "dd", "fsa"]
    compression: Any = None  # gzip/bzip2/xz/zstd for tar and dd, 0..9 for fsa: checked in `_rules`

    @property
    def short_kind(self) -> str:
        return image_kind_short(self.kind, self.compression)


class ArchiveSpec(ConfigModel):
    """A `preinstall` or `postinstalls` entry: a tar archive and the script to run in it."""

    archive: str = Field(min_length=1)
    compression: Literal["gzip", "bzip2", "xz", "zstd"]
    script: str = "none"

    @property
    def short_kind(self) -> str:
        return image_kind_short("tar", self.compression)


class BootSpec(ConfigModel):
    """`boot`: what to boot inside the image (paths inside the image)."""

    kernel: str = ""
    initrd: str = ""
    kernel_params: str = ""
    hypervisor: str = ""
    hypervisor_params: str = ""
    block_device: DevicePath | None = None  # multipart only
    partition: int | None = Field(default=None, ge=1, le=SQL_INT_MAX)  # multipart only


class PartitionMapping(ConfigModel):
    """One filesystem of an fsa image (its id in the archive) and the device it is restored to."""

    id: int = Field(ge=0, le=SQL_INT_MAX)
    device: DevicePath


class EnvironmentOptions(ConfigModel):
    """`options`: when given, Kadeploy3 requires its `partitions` list."""

    partitions: list[PartitionMapping]


class EnvironmentDescription(ConfigModel):
    """One environment as described in YAML (reference §4), validated.

    `user` is the owner: absent from users' files, set by the server (from the
    request, or the description for almighty users).
    """

    name: str = Field(min_length=1)
    version: int = Field(default=1, ge=0, le=SQL_INT_MAX)
    description: str = ""
    author: str = ""
    visibility: Literal["private", "shared", "public"] = "private"
    destructive: bool = False
    os: Literal["linux", "xen", "other"]
    image: ImageSpec
    preinstall: ArchiveSpec | None = None
    postinstalls: list[ArchiveSpec] = Field(default_factory=list)
    boot: BootSpec = Field(default_factory=BootSpec)
    filesystem: str = ""
    partition_type: int = Field(default=0, ge=0, le=255)
    multipart: bool = False
    options: EnvironmentOptions | None = None
    user: str | None = None

    _warnings: list[str] = PrivateAttr(default_factory=list)

    @field_validator("partition_type", mode="before")
    @classmethod
    def _hex_partition_type(cls, value: Any) -> Any:
        # `0x83` unquoted is already 131 for YAML; a string is read as hex, as
        # Kadeploy3 stores and passes partition types (KADEPLOY_PART_TYPE=83).
        if isinstance(value, str):
            text = value.strip().lower()
            text = text[2:] if text.startswith("0x") else text
            try:
                return int(text, 16)
            except ValueError:
                raise ValueError(f"expected a partition type as an integer or hex string like 0x83, got \"{value}\"") from None
        return value

    @property
    def warnings(self) -> list[str]:
        """Unknown keys found while parsing (`<source>: <path>: unknown key, ignored`)."""
        return self._warnings

    @property
    def image_kind_short(self) -> str:
        """tgz, tbz2, txz, tzst, ddgz, ddbz2, ddxz, ddzst or fsaN."""
        return self.image.short_kind

    @property
    def partition_type_hex(self) -> str:
        """The partition type as Kadeploy3 stores it and passes it to scripts (`83`)."""
        return format(self.partition_type, "x")

    def to_api_dict(self) -> dict[str, Any]:
        """The hash Kadeploy3 returns (`Environment#to_hash` plus `user`): empty fields left out."""
        result: dict[str, Any] = {"name": self.name, "version": self.version}
        if self.description:
            result["description"] = self.description
        if self.author:
            result["author"] = self.author
        result["visibility"] = self.visibility
        result["destructive"] = self.destructive
        result["os"] = self.os
        compression = int(self.image.compression) if self.image.kind == "fsa" else self.image.compression
        result["image"] = {"file": self.image.file, "kind": self.image.kind, "compression": compression}
        if self.preinstall is not None:
            result["preinstall"] = self.preinstall.model_dump(include={"archive", "compression", "script"})
        if self.postinstalls:
            result["postinstalls"] = [
                post.model_dump(include={"archive", "compression", "script"}) for post in self.postinstalls
            ]
        boot = {
            key: value
            for key, value in self.boot.model_dump(
                include={"kernel", "initrd", "kernel_params", "hypervisor", "hypervisor_params",
                         "block_device", "partition"}
            ).items()
            if value not in ("", None)
        }
        if boot:
            result["boot"] = {key: boot[key] for key in BootSpec.model_fields if key in boot}
        if self.filesystem:
            result["filesystem"] = self.filesystem
        result["partition_type"] = self.partition_type
        result["multipart"] = self.multipart
        if self.options is not None and self.options.partitions:
            result["options"] = {"partitions": [part.model_dump(include={"id", "device"})
                                                for part in self.options.partitions]}
        if self.user is not None:
            result["user"] = self.user
        return result

    def to_yaml(self) -> str:
        """The description as `kaenv3 -p` prints it (Kadeploy3's key order, then `user`)."""
        data = self.to_api_dict()
        ordered = {key: data[key] for key in YAML_KEY_ORDER if key in data}
        ordered.update({key: value for key, value in data.items() if key not in ordered})
        return "---\n" + yaml.safe_dump(ordered, sort_keys=False, default_flow_style=False, allow_unicode=True)


def _rules(env: EnvironmentDescription) -> list[tuple[str, str]]:
    """Cross-field rules of §4, as (key path, problem) pairs."""
    problems: list[tuple[str, str]] = []
    image = env.image
    if image.kind == "fsa":
        if image.compression is None:
            image.compression = 0
        # an integer, as Kadeploy3 reads it (`"3"` is refused there too)
        if isinstance(image.compression, bool) or not isinstance(image.compression, int) \
                or image.compression not in FSA_COMPRESSION_LEVELS:
            problems.append(("image/compression",
                             f"must be an integer from 0 to 9 for an fsa image (got {describe_value(image.compression)})"))
    elif image.compression is None:
        problems.append(("image/compression", "mandatory field is missing"))
    elif image.compression not in COMPRESSIONS:
        problems.append(("image/compression", f"must be one of {', '.join(COMPRESSIONS)} for a {image.kind} image "
                                              f"(got {describe_value(image.compression)})"))
    if image.kind == "tar":
        if not env.boot.kernel:
            problems.append(("boot/kernel", f"mandatory for OS {env.os} with the tar image kind"))
        if not env.filesystem:
            problems.append(("filesystem", f"mandatory for OS {env.os} with the tar image kind"))
        if env.os == "xen" and not env.boot.hypervisor:
            problems.append(("boot/hypervisor", "mandatory for OS xen with the tar image kind"))
    if env.multipart:
        if image.kind != "fsa":
            # Kadeploy3 accepted it and then ignored the partition map: only fsarchiver restores several
            problems.append(("multipart", f"only an fsa image holds several partitions (image/kind is {image.kind})"))
        if env.options is None or not env.options.partitions:
            problems.append(("options/partitions", "mandatory for a multipart environment "
                                                   "(a list of {id, device}: where each filesystem of the archive goes)"))
        if env.boot.block_device is None:
            problems.append(("boot/block_device", "mandatory for a multipart environment"))
        if env.boot.partition is None:
            problems.append(("boot/partition", "mandatory for a multipart environment"))
    if env.options is not None:
        ids: set[int] = set()
        devices: set[str] = set()
        for index, part in enumerate(env.options.partitions):
            if part.id in ids:
                problems.append((f"options/partitions[{index}].id", f"partition id {part.id} is already defined"))
            if part.device in devices:
                problems.append((f"options/partitions[{index}].device",
                                 f"partition device \"{part.device}\" is already defined"))
            ids.add(part.id)
            devices.add(part.device)
    return problems


def environment_from_dict(data: Any, source: str) -> EnvironmentDescription:
    """Validate an already-parsed description (e.g. the JSON body of a request)."""
    if not isinstance(data, dict):
        raise _invalid(f"{source}: expected a mapping (an environment description), got {describe_value(data)}")
    try:
        env = EnvironmentDescription.model_validate(data)
    except ValidationError as exc:
        raise _invalid(format_validation_error(exc, source)) from None
    problems = _rules(env)
    if problems:
        raise _invalid("\n".join(f"{source}: {path}: {problem}" for path, problem in problems))
    env._warnings = [f"{source}: {path}: unknown key, ignored" for path in unknown_keys(env)]
    env._warnings += [f"{source}: {path}: {problem}" for path, problem in _ignored_fields(env)]
    return env


def _ignored_fields(env: EnvironmentDescription) -> list[tuple[str, str]]:
    """Fields a deployment of this description will not use, as (key path, why) warnings."""
    ignored: list[tuple[str, str]] = []
    partitions = env.options.partitions if env.options is not None else []
    if partitions and env.image.kind != "fsa":
        ignored.append(("options/partitions", f"only used by fsa images, ignored for a {env.image.kind} image"))
    elif len(partitions) > 1 and not env.multipart:
        # Kadeploy3's warning: a non-multipart fsa image restores one filesystem
        ignored.append(("options/partitions", "several partitions for a non-multipart environment: only the "
                                              f"first one (id {partitions[0].id}) is restored, on the "
                                              "deployment partition"))
    if not env.multipart:
        for key in ("block_device", "partition"):
            if getattr(env.boot, key) is not None:
                ignored.append((f"boot/{key}", "only used by multipart environments, ignored"))
    return ignored


def parse_environments(text: str, source: str) -> list[EnvironmentDescription]:
    """Parse a YAML stream of one or more descriptions (`---` separated)."""
    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        raise _invalid(yaml_error_message(exc, source)) from None
    if not documents:
        raise _invalid(f"{source}: the environment description is empty")
    return [environment_from_dict(doc, source) for doc in documents]


def parse_environment(text: str, source: str) -> EnvironmentDescription:
    """Parse exactly one environment description from YAML text."""
    environments = parse_environments(text, source)
    if len(environments) > 1:
        raise _invalid(f"{source}: expected one environment description, found {len(environments)}")
    return environments[0]
