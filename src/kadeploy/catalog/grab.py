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

from kadeploy.catalog.cache import Priority
from kadeploy.catalog.files import FetchedFile, FileFetcher
from kadeploy.catalog.resolved import ResolvedEnvironment
from kadeploy.errors import ErrorCode, KadeployError


@dataclass
class EnvironmentFiles:
    """The local copies of an environment's files."""

    image: FetchedFile
    preinstall: FetchedFile | None = None
    postinstalls: list[FetchedFile] = field(default_factory=list)


async def grab_environment(fetcher: FileFetcher, env: ResolvedEnvironment, *, client: str | None, wid: str,
                           max_preinstall_size: int | None = None,
                           max_postinstall_size: int | None = None) -> EnvironmentFiles:
    """Fetch image, preinstall and postinstalls of `env` for the workflow `wid`, checking their checksums."""
    recorded = env.is_recorded
    priority = Priority.DB if recorded else Priority.ANON
    description, checksums = env.description, env.checksums
    if not description.image.file:
        raise KadeployError(ErrorCode.INVALID_ENVIRONMENT, "The environment has no image file")
    files = EnvironmentFiles(await fetcher.fetch(description.image.file, client=client, what="image", wid=wid,
                                                 priority=priority,
                                                 expected_checksum=checksums.image if recorded else None))
    pre = description.preinstall
    if pre is not None and pre.archive:
        files.preinstall = await fetcher.fetch(pre.archive, client=client, what="preinstall archive", wid=wid,
                                               priority=priority,
                                               expected_checksum=checksums.preinstall if recorded else None,
                                               max_size=max_preinstall_size)
    for index, post in enumerate(description.postinstalls):
        expected = checksums.postinstalls[index] if recorded and index < len(checksums.postinstalls) else None
        files.postinstalls.append(await fetcher.fetch(
            post.archive, client=client, what="postinstall archive", wid=wid,
            priority=priority, expected_checksum=expected, max_size=max_postinstall_size))
    return files
