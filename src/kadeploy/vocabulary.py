"""The workflow's vocabulary: which names Kadeploy3 knows, and which this implementation provides.

Room: the bottom of the package (imports only `kadeploy.errors`), so that the
config room, the catalogue, the API and the tools can all check a name.

Each kind of name (macro-step implementation, micro-step, broadcast method,
power driver, PXE method, image kind) has one `Registry`. An implementation
declares itself once, beside its code, with `REGISTRIES[kind].declare(...)`
(or a decorator built on it); nothing else lists the names. The modules that
hold those declarations are the kind's *providers* (`PROVIDERS`, as Ironic's
entry points): `Registry.names()` imports them first, so a check made from
the lowest room still sees every declaration.

A name that Kadeploy3 knows and that no provider declares is refused as *not
supported* (`UnsupportedName`); a name nobody knows is *unknown*
(`UnknownName`). Both are `ValueError`s so that pydantic attaches the file and
key path to the message where a configuration file is validated; the API edge
turns them into a `KadeployError` with the request's error code.
"""

from __future__ import annotations

import enum
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


class Kind(enum.Enum):
    """The kinds of names an administrator or a user writes."""

    MACROSTEP = "macro-step implementation"
    MICROSTEP = "micro-step"
    BROADCAST = "broadcast method"
    POWER_DRIVER = "power driver"
    PXE_METHOD = "PXE method"
    IMAGE_KIND = "image kind"
    EXEC_MODE = "executor mode"


#: Names Kadeploy3 3.3.11 accepts (its `stepdeploy.rb`, `microsteps.rb`,
#: `netboot.rb` and environment code), whether or not we provide them. A name
#: listed here and not declared is "not supported"; one listed nowhere is "unknown".
KADEPLOY3_NAMES: dict[Kind, frozenset[str]] = {
    Kind.MACROSTEP: frozenset({
        "SetDeploymentEnvUntrusted", "SetDeploymentEnvKexec", "SetDeploymentEnvUntrustedCustomPreInstall",
        "SetDeploymentEnvProd", "SetDeploymentEnvNfsroot", "SetDeploymentEnvDummy",
        "BroadcastEnvChain", "BroadcastEnvKascade", "BroadcastEnvKastafior", "BroadcastEnvTree",
        "BroadcastEnvBittorrent", "BroadcastEnvCustom", "BroadcastEnvDummy",
        "BootNewEnvKexec", "BootNewEnvPivotRoot", "BootNewEnvClassical", "BootNewEnvHardReboot",
        "BootNewEnvDummy",
    }),
    Kind.MICROSTEP: frozenset({
        "switch_pxe", "set_vlan", "reboot", "wait_reboot", "send_key_in_deploy_env",
        "create_partition_table", "format_deploy_part", "mount_deploy_part", "format_tmp_part",
        "format_swap_part", "mount_tmp_part", "send_deployment_kernel", "sync", "kexec",
        "manage_admin_pre_install", "check_nodes", "send_environment", "decompress_environment",
        "manage_admin_post_install", "manage_user_post_install", "check_kernel_files", "send_key",
        "install_bootloader", "umount_deploy_part", "reboot_from_deploy_env", "load_drivers",
        "power", "dummy",
    }),
    Kind.BROADCAST: frozenset({"chain", "kascade", "kastafior", "tree", "bittorrent", "custom"}),
    Kind.POWER_DRIVER: frozenset(),  # Kadeploy3 only runs command templates
    Kind.PXE_METHOD: frozenset({"PXElinux", "GPXElinux", "IPXE", "GrubPXE"}),
    Kind.IMAGE_KIND: frozenset({"tar", "dd", "fsa"}),
    Kind.EXEC_MODE: frozenset(),  # Kadeploy3 runs everything through TakTuk
}

#: The modules whose import declares every name of a kind (one line per provider).
PROVIDERS: dict[Kind, tuple[str, ...]] = {
    Kind.MACROSTEP: ("kadeploy.steps.macrosteps",),
    Kind.MICROSTEP: ("kadeploy.steps.micro",),
    Kind.BROADCAST: ("kadeploy.broadcast", "kadeploy.steps.micro.image"),
    Kind.POWER_DRIVER: ("kadeploy.boot.drivers",),
    Kind.PXE_METHOD: ("kadeploy.boot.nbp",),
    Kind.IMAGE_KIND: ("kadeploy.catalog.environment",),
    Kind.EXEC_MODE: ("kadeploy.remote.executor",),
}


class UnknownName(ValueError):
    """A name that neither Kadeploy3 nor this implementation knows."""


class UnsupportedName(ValueError):
    """A name Kadeploy3 knows and this implementation does not provide (yet)."""


@dataclass(frozen=True)
class Declaration(Generic[T]):
    """One declared name: what it is, the object that implements it, and a line for docs and --help."""

    kind: Kind
    name: str
    value: T
    summary: str


class Registry(Generic[T]):
    """The names of one kind that this implementation provides."""

    def __init__(self, kind: Kind) -> None:
        self.kind = kind
        self._declared: dict[str, Declaration[T]] = {}
        self._loaded = False

    def declare(self, name: str, value: T, summary: str = "") -> T:
        """Register `name`; a second declaration of the same name is a programming error."""
        if name in self._declared and self._declared[name].value is not value:
            raise RuntimeError(f"{self.kind.value} {name!r} is declared twice")
        self._declared[name] = Declaration(self.kind, name, value, summary)
        return value

    def decorator(self, name: str, summary: str = "") -> Callable[[T], T]:
        """`@REGISTRIES[kind].decorator("name")` above the code that implements it."""
        def register(value: T) -> T:
            return self.declare(name, value, summary)
        return register

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in PROVIDERS[self.kind]:
                importlib.import_module(module)

    def declarations(self) -> list[Declaration[T]]:
        self._load()
        return [self._declared[name] for name in sorted(self._declared)]

    def names(self) -> list[str]:
        self._load()
        return sorted(self._declared)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._declared

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> T:
        """The implementation of `name`; `UnsupportedName` / `UnknownName` say why there is none."""
        self._load()
        declared = self._declared.get(name)
        if declared is not None:
            return declared.value
        raise refusal(self.kind, name, self.names())

    def check(self, name: str) -> str:
        """`name` itself when provided, else the refusal as in `get`."""
        self.get(name)
        return name


def refusal(kind: Kind, name: str, provided: list[str]) -> ValueError:
    """The error for a name we do not provide, worded for the one who wrote it."""
    choices = ", ".join(provided)
    if name in KADEPLOY3_NAMES[kind]:
        return UnsupportedName(f"the {kind.value} \"{name}\" is not supported by this Kadeploy "
                               f"(supported: {choices})")
    return UnknownName(f"unknown {kind.value} \"{name}\" (supported: {choices})")


REGISTRIES: dict[Kind, Registry] = {kind: Registry(kind) for kind in Kind}


def markdown_table() -> str:
    """Every name of every kind, provided or refused, as the Markdown table `docs/design.md` holds.

    `python -m kadeploy.vocabulary` prints it; a unit test checks the docs
    hold exactly this text, so the docs cannot drift from the declarations.
    """
    lines = ["| Kind | Name | Here | What it does |", "|---|---|---|---|"]
    for kind in Kind:
        provided = {declaration.name: declaration for declaration in REGISTRIES[kind].declarations()}
        for name in sorted(provided.keys() | KADEPLOY3_NAMES[kind]):
            declaration = provided.get(name)
            if declaration is None:
                lines.append(f"| {kind.value} | `{name}` | refused | Kadeploy3's; not supported by this Kadeploy |")
            else:
                origin = "" if name in KADEPLOY3_NAMES[kind] or not KADEPLOY3_NAMES[kind] else " (ours)"
                lines.append(f"| {kind.value} | `{name}` | provided{origin} | {declaration.summary} |")
    return "\n".join(lines)


if __name__ == "__main__":
    # run as a script this file is `__main__`, a second copy: read the registries the providers fill
    from kadeploy.vocabulary import markdown_table as table

    print(table())


def registry(kind: Kind) -> Registry:
    return REGISTRIES[kind]
