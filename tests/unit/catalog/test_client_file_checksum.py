"""Checksums of a recorded environment's client files, checked as Kadeploy3's GrabFile checks them.

A client file (a path on the user's frontend) is grabbed from the client's own
file server (`kadeploy.client.export`); its checksum is that server's ETag
(`"ino-size-mtime"`, WEBrick's), stored when the environment was added. A
changed file is refused with Kadeploy3's message before its content is
downloaded (grabfile.rb: `md5 != fetcher.checksum` is tested before `grab`).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kadeploy.catalog.cache import FileCache, Priority
from kadeploy.catalog.files import FileFetcher
from kadeploy.catalog.fetchpolicy import FetchPolicy
from kadeploy.client.export import FileExporter
from kadeploy.errors import ErrorCode, KadeployError

# the test's HTTP servers listen on loopback, which the default policy refuses
LOOPBACK_ALLOWED = FetchPolicy.from_lists(allow=["127.0.0.0/8"])


@pytest.fixture
def exported(tmp_path: Path):
    image = tmp_path / "frontend" / "img.tgz"
    image.parent.mkdir()
    image.write_bytes(b"first build" * 1000)
    exporter = FileExporter(bind="127.0.0.1")
    exporter.add(str(image))
    exporter.start()
    yield image, f"http://127.0.0.1:{exporter.port}"
    exporter.stop()


def fetcher(tmp_path: Path) -> FileFetcher:
    cache = FileCache(tmp_path / "cache", None)
    cache.load()
    return FileFetcher(cache.directory, [], cache=cache, policy=LOOPBACK_ALLOWED)


async def test_unchanged_client_file_matches_its_stored_checksum(tmp_path, exported) -> None:
    image, client = exported
    files = fetcher(tmp_path)
    stored = (await files.fetch(str(image), client=client, what="image", priority=Priority.DB)).checksum
    stat = image.stat()
    assert stored == f"{stat.st_ino:x}-{stat.st_size:x}-{int(stat.st_mtime):x}"
    again = await files.fetch(str(image), client=client, what="image", priority=Priority.DB,
                              expected_checksum=stored, wid="D-1")
    assert again.path.read_bytes() == image.read_bytes()


@pytest.mark.parametrize("change", ["content", "mtime"])
async def test_changed_client_file_is_refused_before_download(tmp_path, exported, change) -> None:
    image, client = exported
    files = fetcher(tmp_path)
    stored = (await files.fetch(str(image), client=client, what="image", priority=Priority.DB)).checksum
    if change == "content":
        with image.open("ab") as handle:
            handle.write(b"rebuilt")
    else:
        os.utime(image, (image.stat().st_atime, image.stat().st_mtime + 60))
    with pytest.raises(KadeployError) as refused:
        await files.fetch(str(image), client=client, what="image", priority=Priority.DB,
                          expected_checksum=stored, wid="D-2")
    assert refused.value.code == ErrorCode.INVALID_FILE
    assert str(refused.value.message) == f"Checksum of the file '{image}' does not match (an update is necessary)"
    # not downloaded: the cache still holds the copy whose checksum was stored
    assert files.cache.lookup(str(image)).checksum == stored
    assert not list((tmp_path / "cache").glob("*.part"))
