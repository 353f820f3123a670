"""Grabbing the files of an environment for one operation (room `catalog`, reference 1.6).

Used by every runner (the engine runner and the Dummy runner alike) so that
the rules are the same everywhere: a recorded environment's image and
archives must still match the checksums stored when it was added ("Checksum
of the file '...' does not match (an update is necessary)", error 5, until
`kaenv3 --update-image-checksum`; a client file's checksum is the ETag of the
client's file server, so touching it is a change, as in Kadeploy3), pre/post-install archives are limited by
`max_preinstall_size` / `max_postinstall_size`, and the files of a recorded
environment are cached with priority DB, those of an anonymous one with
priority ANON (deleted when the operation ends).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kadeploy.catalog.cache import Priority
from kadeploy.catalog.files import FetchedFile, FileFetcher
from kadeploy.errors import ErrorCode, KadeployError


@dataclass
class EnvironmentFiles:
    """The local copies of an environment's files."""

    image: FetchedFile
    preinstall: FetchedFile | None = None
    postinstalls: list[FetchedFile] = field(default_factory=list)


def is_recorded(env: dict[str, Any]) -> bool:
    """A recorded environment comes from the catalogue and carries its DB id."""
    return env.get("id") is not None


def _expected(spec: dict[str, Any]) -> str | None:
    return spec.get("md5") or spec.get("checksum") or None


async def grab_environment(fetcher: FileFetcher, env: dict[str, Any], *, client: str | None, wid: str,
                           max_preinstall_size: int | None = None,
                           max_postinstall_size: int | None = None) -> EnvironmentFiles:
    """Fetch image, preinstall and postinstalls of `env` for the workflow `wid`, checking their checksums."""
    recorded = is_recorded(env)
    priority = Priority.DB if recorded else Priority.ANON
    image = env.get("image") or {}
    if not image.get("file"):
        raise KadeployError(ErrorCode.INVALID_ENVIRONMENT, "The environment has no image file")
    files = EnvironmentFiles(await fetcher.fetch(str(image["file"]), client=client, what="image", wid=wid,
                                                 priority=priority,
                                                 expected_checksum=_expected(image) if recorded else None))
    pre = env.get("preinstall")
    if pre and (pre.get("archive") or pre.get("file")):
        files.preinstall = await fetcher.fetch(str(pre.get("archive") or pre.get("file")), client=client,
                                               what="preinstall archive", wid=wid, priority=priority,
                                               expected_checksum=_expected(pre) if recorded else None,
                                               max_size=max_preinstall_size)
    for post in env.get("postinstalls") or []:
        files.postinstalls.append(await fetcher.fetch(
            str(post.get("archive") or post.get("file")), client=client, what="postinstall archive", wid=wid,
            priority=priority, expected_checksum=_expected(post) if recorded else None,
            max_size=max_postinstall_size))
    return files
