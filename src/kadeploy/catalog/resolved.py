"""The environment an operation uses, resolved once at the API edge (room `catalog`).

A deployment (or a `recorded_env` reboot) names its environment either by a
full description (anonymous) or by name in the catalogue (recorded). Either
way the server parses it here, once, into a `ResolvedEnvironment`: the
validated `EnvironmentDescription` plus what only a recorded environment has,
its catalogue id and the checksums stored beside its files. Everything after
the API edge (rights checks, the runner, the file grabber, the workflow
records) reads attributes of it, never a hash.

Imports `catalog.environment` and `errors` only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kadeploy.catalog.environment import EnvironmentDescription, environment_from_dict
from kadeploy.errors import ErrorCode, KadeployError

#: keys the catalogue stores beside a file reference (`md5`, Kadeploy3's name) or on the record (`id`)
_CHECKSUM_KEYS = ("md5", "checksum")


def _checksum(spec: Any) -> str | None:
    if not isinstance(spec, dict):
        return None
    for key in _CHECKSUM_KEYS:
        if spec.get(key):
            return str(spec[key])
    return None


def _without_checksum(spec: Any) -> Any:
    if not isinstance(spec, dict):
        return spec
    return {key: value for key, value in spec.items() if key not in _CHECKSUM_KEYS}


@dataclass(frozen=True)
class FileChecksums:
    """The checksums a recorded environment's files must still match (none for an anonymous one)."""

    image: str | None = None
    preinstall: str | None = None
    postinstalls: tuple[str | None, ...] = ()


@dataclass(frozen=True)
class ResolvedEnvironment:
    """An environment as an operation uses it.

    `description.user` is always set: the requester for an anonymous
    environment, the owner for a recorded one. `id` is the catalogue id of a
    recorded environment, None for an anonymous one.
    """

    description: EnvironmentDescription
    id: int | None = None
    checksums: FileChecksums = field(default_factory=FileChecksums)

    @classmethod
    def anonymous(cls, description: dict[str, Any], user: str,
                  source: str = "anonymous environment") -> ResolvedEnvironment:
        """A description given in the request, owned by `user` (error 7 naming what is wrong)."""
        parsed = environment_from_dict(description, source)
        return cls(parsed.model_copy(update={"user": user}))

    @classmethod
    def recorded(cls, record: dict[str, Any]) -> ResolvedEnvironment:
        """A catalogue record (`db.environments.to_api`): its description, id and stored checksums."""
        name = record.get("name", "")
        description = {key: value for key, value in record.items() if key != "id"}
        for key in ("image", "preinstall"):
            if key in description:
                description[key] = _without_checksum(description[key])
        if isinstance(description.get("postinstalls"), list):
            description["postinstalls"] = [_without_checksum(post) for post in description["postinstalls"]]
        parsed = environment_from_dict(description, f"recorded environment {name}")
        if record.get("id") is None:
            raise KadeployError(ErrorCode.INVALID_ENVIRONMENT, f"The recorded environment {name} has no id")
        checksums = FileChecksums(
            image=_checksum(record.get("image")), preinstall=_checksum(record.get("preinstall")),
            postinstalls=tuple(_checksum(post) for post in record.get("postinstalls") or []))
        return cls(parsed, int(record["id"]), checksums)

    @property
    def name(self) -> str:
        return self.description.name

    @property
    def version(self) -> int:
        return self.description.version

    @property
    def user(self) -> str | None:
        return self.description.user

    @property
    def destructive(self) -> bool:
        return self.description.destructive

    @property
    def is_recorded(self) -> bool:
        """Recorded environments come from the catalogue: their files are cached as such and checked."""
        return self.id is not None

    @property
    def label(self) -> str:
        """`name:version`, as the statistics records name the environment."""
        return f"{self.name}:{self.version}"

    def reference(self) -> dict[str, Any]:
        """What the workflow and node records keep of the environment: id (if recorded), name, version, user."""
        ref: dict[str, Any] = {"id": self.id} if self.id is not None else {}
        ref.update(name=self.name, version=self.version, user=self.user)
        return ref
