"""The server file cache: priorities, LRU, references, restart, checks (Kadeploy3's test_cache.rb behaviours)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from kadeploy.catalog.cache import MB, FileCache, Priority
from kadeploy.catalog.files import FileFetcher
from kadeploy.catalog.fetchpolicy import FetchPolicy
from kadeploy.errors import ErrorCode, KadeployError

# the test's HTTP servers listen on loopback, which the default policy refuses
LOOPBACK_ALLOWED = FetchPolicy.from_lists(allow=["127.0.0.0/8"])


class Clock:
    """A controllable clock: atime order is what the test says, not what the machine does."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 1
        return self.now


class Files:
    """A tiny HTTP file server: `content[name]`, ETag = md5, honours If-None-Match unless told not to."""

    def __init__(self) -> None:
        self.content: dict[str, bytes] = {}
        self.conditional = True
        self.lie_about_length: int | None = None
        self.downloads = 0
        files = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                data = files.content.get(self.path.lstrip("/"))
                if data is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                etag = '"' + hashlib.md5(data).hexdigest() + '"'
                if files.conditional and self.headers.get("If-None-Match") == etag:
                    self.send_response(304)
                    self.end_headers()
                    return
                files.downloads += 1
                self.send_response(200)
                self.send_header("ETag", etag)
                self.send_header("Content-Length", str(files.lie_about_length or len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def files() -> Iterator[Files]:
    server = Files()
    yield server
    server.close()


def fetcher_with(tmp_path: Path, max_size: int | None, clock: Clock | None = None) -> FileFetcher:
    cache = FileCache(tmp_path / "cache", max_size, clock=clock or Clock())
    cache.load()
    return FileFetcher(cache.directory, [tmp_path], cache=cache, policy=LOOPBACK_ALLOWED)


def cached_uris(fetcher: FileFetcher) -> set[str]:
    return {uri.rsplit("/", 1)[1] for uri in fetcher.cache.entries}


async def test_a_file_is_downloaded_once_then_revalidated(tmp_path, files):
    files.content["a.tgz"] = b"a" * 1000
    fetcher = fetcher_with(tmp_path, 10 * MB)
    first = await fetcher.fetch(f"{files.url}/a.tgz", wid="D-1")
    second = await fetcher.fetch(f"{files.url}/a.tgz", wid="D-2")
    assert first.path == second.path and first.path.read_bytes() == b"a" * 1000
    assert files.downloads == 1
    assert first.checksum == hashlib.md5(b"a" * 1000).hexdigest()  # the ETag, quotes stripped


async def test_a_changed_remote_file_is_downloaded_again(tmp_path, files):
    files.content["a.tgz"] = b"old"
    fetcher = fetcher_with(tmp_path, 10 * MB)
    old = await fetcher.fetch(f"{files.url}/a.tgz", wid="D-1")
    files.content["a.tgz"] = b"new content"
    new = await fetcher.fetch(f"{files.url}/a.tgz", wid="D-2")
    assert new.path.read_bytes() == b"new content" and new.size == 11
    assert old.path.read_bytes() == b"old"  # still used by D-1: not deleted under its feet
    fetcher.release("D-1")
    assert not old.path.exists()


async def test_eviction_by_priority_then_age(tmp_path, files):
    for name in ("db-old", "db-new", "keep", "extra"):
        files.content[name] = name.encode().ljust(400 * 1024, b".")
    fetcher = fetcher_with(tmp_path, 1 * MB)
    await fetcher.fetch(f"{files.url}/db-old", priority=Priority.DB)
    await fetcher.fetch(f"{files.url}/db-new", priority=Priority.DB)
    assert cached_uris(fetcher) == {"db-old", "db-new"}
    await fetcher.fetch(f"{files.url}/keep", priority=Priority.ANON_KEEP)  # 1.2 MB: the oldest DB file goes
    assert cached_uris(fetcher) == {"db-new", "keep"}
    await fetcher.fetch(f"{files.url}/extra", priority=Priority.DB)  # the lower priority goes before the older
    assert cached_uris(fetcher) == {"db-new", "extra"}


async def test_least_recently_used_goes_first(tmp_path, files):
    for name in ("a", "b", "c"):
        files.content[name] = name.encode() * (400 * 1024)
    fetcher = fetcher_with(tmp_path, 1 * MB)
    await fetcher.fetch(f"{files.url}/a", priority=Priority.DB)
    await fetcher.fetch(f"{files.url}/b", priority=Priority.DB)
    await fetcher.fetch(f"{files.url}/a", priority=Priority.DB)  # a used again: b is now the LRU
    await fetcher.fetch(f"{files.url}/c", priority=Priority.DB)
    assert cached_uris(fetcher) == {"a", "c"}


async def test_a_file_in_use_is_never_evicted_and_a_full_cache_says_so(tmp_path, files):
    files.content["big1"] = b"1" * (600 * 1024)
    files.content["big2"] = b"2" * (600 * 1024)
    fetcher = fetcher_with(tmp_path, 1 * MB)
    used = await fetcher.fetch(f"{files.url}/big1", wid="D-1", priority=Priority.ANON)
    with pytest.raises(KadeployError) as info:
        await fetcher.fetch(f"{files.url}/big2", wid="D-2", priority=Priority.DB)
    assert info.value.code == ErrorCode.CACHE_FULL
    assert "used by running operations" in info.value.message and "big2" in info.value.message
    assert used.path.read_bytes() == b"1" * (600 * 1024)
    assert not list((tmp_path / "cache").glob("*.part"))
    fetcher.release("D-1")  # anonymous and unused: deleted at once
    assert not used.path.exists()
    got = await fetcher.fetch(f"{files.url}/big2", wid="D-2", priority=Priority.DB)
    assert got.path.exists()


async def test_a_file_bigger_than_the_cache_is_refused(tmp_path, files):
    files.content["huge"] = b"h" * (2 * MB)
    fetcher = fetcher_with(tmp_path, 1 * MB)
    with pytest.raises(KadeployError, match="bigger than the whole cache") as info:
        await fetcher.fetch(f"{files.url}/huge", wid="D-1")
    assert info.value.code == ErrorCode.CACHE_FULL


async def test_a_truncated_download_is_refused(tmp_path, files):
    files.content["short"] = b"s" * 100
    files.lie_about_length = 200
    fetcher = fetcher_with(tmp_path, 1 * MB)
    with pytest.raises(KadeployError) as info:
        await fetcher.fetch(f"{files.url}/short", wid="D-1")
    assert info.value.code == ErrorCode.INVALID_FILE
    assert fetcher.cache.entries == {} and fetcher.cache.reserved == 0


async def test_size_limit_per_file(tmp_path, files):
    files.content["post.tgz"] = b"p" * 5000
    fetcher = fetcher_with(tmp_path, 1 * MB)
    with pytest.raises(KadeployError, match="too big"):
        await fetcher.fetch(f"{files.url}/post.tgz", wid="D-1", max_size=1000)


async def test_the_cache_survives_a_restart_but_anonymous_files_do_not(tmp_path, files):
    files.content["recorded"] = b"r" * 100
    files.content["anonymous"] = b"a" * 100
    fetcher = fetcher_with(tmp_path, 1 * MB)
    recorded = await fetcher.fetch(f"{files.url}/recorded", wid="D-1", priority=Priority.DB)
    await fetcher.fetch(f"{files.url}/anonymous", wid="D-1", priority=Priority.ANON)
    (tmp_path / "cache" / "leftover.part").write_bytes(b"x")  # a download cut by the crash
    restarted = fetcher_with(tmp_path, 1 * MB)  # D-1 never released: the server died
    assert cached_uris(restarted) == {"recorded"}
    assert not (tmp_path / "cache" / "leftover.part").exists()
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(
        [recorded.path.name, recorded.path.name + ".meta.json"])
    again = await restarted.fetch(f"{files.url}/recorded", wid="D-2", priority=Priority.DB)
    assert again.path == recorded.path and files.downloads == 2  # revalidated, not downloaded


async def test_a_file_changed_in_the_cache_directory_is_dropped_at_restart(tmp_path, files):
    files.content["img"] = b"i" * 100
    fetcher = fetcher_with(tmp_path, 1 * MB)
    got = await fetcher.fetch(f"{files.url}/img", priority=Priority.DB)
    got.path.write_bytes(b"tampered, other size")
    assert cached_uris(fetcher_with(tmp_path, 1 * MB)) == set()


async def test_a_smaller_limit_after_a_restart_evicts(tmp_path, files):
    for name in ("a", "b"):
        files.content[name] = name.encode() * (400 * 1024)
    fetcher = fetcher_with(tmp_path, 1 * MB)
    await fetcher.fetch(f"{files.url}/a", priority=Priority.DB)
    await fetcher.fetch(f"{files.url}/b", priority=Priority.DB)
    assert cached_uris(fetcher_with(tmp_path, MB // 2)) == {"b"}


async def test_a_server_without_conditional_get_still_reuses_identical_content(tmp_path, files):
    files.content["a"] = b"same"
    files.conditional = False
    fetcher = fetcher_with(tmp_path, 1 * MB)
    first = await fetcher.fetch(f"{files.url}/a", wid="D-1")
    second = await fetcher.fetch(f"{files.url}/a", wid="D-2")
    assert second.path.read_bytes() == b"same" and first.checksum == second.checksum
    assert len(fetcher.cache.entries) == 1 and len(list((tmp_path / "cache").glob("*.meta.json"))) == 1


async def test_server_file_checksum_follows_content_changes(tmp_path):
    image = tmp_path / "img.tgz"
    image.write_bytes(b"v1")
    fetcher = fetcher_with(tmp_path, 1 * MB)
    first = await fetcher.fetch(f"server://{image}")
    image.write_bytes(b"v2 longer")
    second = await fetcher.fetch(f"server://{image}")
    assert first.checksum == hashlib.md5(b"v1").hexdigest() and second.checksum == hashlib.md5(b"v2 longer").hexdigest()
    with pytest.raises(KadeployError, match="does not match \\(an update is necessary\\)"):
        await fetcher.fetch(f"server://{image}", expected_checksum=first.checksum)
