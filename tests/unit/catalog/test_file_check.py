"""`FileFetcher.check`, what a dry run does with a file: refused as `fetch` would refuse it, nothing downloaded."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from kadeploy.catalog.files import FileFetcher
from kadeploy.catalog.fetchpolicy import FetchPolicy
from kadeploy.errors import ErrorCode, KadeployError

# the test's HTTP servers listen on loopback, which the default policy refuses
LOOPBACK_ALLOWED = FetchPolicy.from_lists(allow=["127.0.0.0/8"])


class Files:
    """An HTTP file server counting the requests it gets, by method."""

    def __init__(self) -> None:
        self.content: dict[str, bytes] = {}
        self.requests: list[str] = []
        files = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self, body: bool) -> None:
                files.requests.append(self.command)
                data = files.content.get(self.path.lstrip("/"))
                if data is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                self._answer(body=True)

            def do_HEAD(self) -> None:  # noqa: N802
                self._answer(body=False)

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


@pytest.fixture
def fetcher(tmp_path: Path) -> FileFetcher:
    allowed = tmp_path / "envs"
    allowed.mkdir()
    (allowed / "img.tgz").write_bytes(b"image")
    return FileFetcher(tmp_path / "cache", [allowed], max_size=100, policy=LOOPBACK_ALLOWED)


async def refusal(call) -> KadeployError:  # type: ignore[no-untyped-def]
    with pytest.raises(KadeployError) as info:
        await call
    return info.value


async def test_a_reachable_url_is_asked_with_head_and_not_downloaded(fetcher, files, tmp_path):
    files.content["a.tgz"] = b"a" * 50
    await fetcher.check(f"{files.url}/a.tgz", what="image")
    assert files.requests == ["HEAD"]
    assert fetcher.cache.entries == {} and not any((tmp_path / "cache").glob("*"))


@pytest.mark.parametrize(("name", "size"), [("missing.tgz", 0), ("big.tgz", 101)])
async def test_a_url_is_refused_as_fetch_refuses_it(fetcher, files, name, size):
    if size:
        files.content[name] = b"b" * size
    uri = f"{files.url}/{name}"
    checked = await refusal(fetcher.check(uri, what="image"))
    fetched = await refusal(fetcher.fetch(uri, what="image"))
    assert (checked.code, checked.message) == (fetched.code, fetched.message)
    assert checked.code == ErrorCode.INVALID_FILE


@pytest.mark.parametrize(("uri", "client"), [
    ("server://{tmp}/envs/none.tgz", None),        # no such server file
    ("server:///etc/passwd", None),                 # outside the allowed directories
    ("/home/user/img.tgz", None),                   # a client file without a client
    ("relative/img.tgz", "http://127.0.0.1:9"),     # a client file that is not absolute
])
async def test_a_reference_is_refused_as_fetch_refuses_it(fetcher, tmp_path, uri, client):
    uri = uri.format(tmp=tmp_path)
    checked = await refusal(fetcher.check(uri, client=client))
    fetched = await refusal(fetcher.fetch(uri, client=client))
    assert (checked.code, checked.message) == (fetched.code, fetched.message)


async def test_a_server_file_is_not_hashed(fetcher, tmp_path):
    await fetcher.check(f"server://{tmp_path}/envs/img.tgz")
    assert fetcher._md5_memo == {}
    (tmp_path / "envs" / "img.tgz").write_bytes(b"i" * 101)
    too_big = await refusal(fetcher.check(f"server://{tmp_path}/envs/img.tgz"))
    assert too_big.code == ErrorCode.INVALID_FILE and "too big" in too_big.message
