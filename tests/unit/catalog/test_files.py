"""server:// confinement and client/http fetching of request files."""

import hashlib

import pytest

from kadeploy.catalog.files import FileFetcher
from kadeploy.catalog.fetchpolicy import FetchPolicy
from kadeploy.errors import ErrorCode, KadeployError

# the test's HTTP servers listen on loopback, which the default policy refuses
LOOPBACK_ALLOWED = FetchPolicy.from_lists(allow=["127.0.0.0/8"])


@pytest.fixture
def fetcher(tmp_path):
    allowed = tmp_path / "envs"
    allowed.mkdir()
    (allowed / "img.tgz").write_bytes(b"image")
    return FileFetcher(tmp_path / "cache", [allowed], policy=LOOPBACK_ALLOWED)


async def test_server_file_inside_allowed_dir_has_md5(fetcher, tmp_path):
    got = await fetcher.fetch(f"server://{tmp_path}/envs/img.tgz")
    assert got.checksum == hashlib.md5(b"image").hexdigest() and got.size == 5


@pytest.mark.parametrize("path", ["/etc/shadow", "{tmp}/envs/../envs/img.tgz", "{tmp}/envs/escape"])
async def test_server_paths_escaping_allowed_dirs_are_refused(fetcher, tmp_path, path):
    (tmp_path / "envs" / "escape").symlink_to("/etc/passwd")
    with pytest.raises(KadeployError) as info:
        await fetcher.fetch("server://" + path.format(tmp=tmp_path), what="image")
    assert info.value.code == ErrorCode.INVALID_FILE


async def test_checksum_mismatch_asks_for_an_update(fetcher, tmp_path):
    with pytest.raises(KadeployError, match="an update is necessary"):
        await fetcher.fetch(f"server://{tmp_path}/envs/img.tgz", expected_checksum="0" * 32)


async def test_local_file_without_client_is_invalid_client(fetcher):
    with pytest.raises(KadeployError) as info:
        await fetcher.fetch("/home/user/img.tgz")
    assert info.value.code == ErrorCode.INVALID_CLIENT
