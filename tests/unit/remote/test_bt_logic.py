"""Pure logic of the `bittorrent` broadcast: piece size, info hash, the node's room check, the agent command."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys

import pytest

from kadeploy.broadcast import METHODS, bittorrent, btnode
from kadeploy.broadcast.agents import shipped_source
from tests.requirements import require


@pytest.mark.parametrize(("total", "exponent"), [
    (1, 18), (64 << 20, 18), (512 << 20, 18), (1 << 30, 19), (4 << 30, 21), (1 << 40, 24),
])
def test_piece_length_aims_at_2048_pieces_within_256k_and_16m(total, exponent):
    assert bittorrent.piece_exponent(total) == exponent


def test_info_hash_is_the_one_a_bittorrent_library_reads(tmp_path):
    require("torf", "mktorrent")
    import torf
    image = tmp_path / "image"
    image.write_bytes(bytes(range(256)) * 5000)
    torrent = tmp_path / "t.torrent"
    subprocess.run(["mktorrent", "--private", "--piece-length=18", "--name=kadeploy-image",
                    "--announce=http://10.0.0.1:6969/announce", f"--output={torrent}", str(image)],
                   check=True, capture_output=True, timeout=30)
    assert bittorrent.info_hash(torrent.read_bytes()) == torf.Torrent.read(str(torrent)).infohash


def test_info_hash_skips_other_keys_and_nested_values():
    import hashlib
    info = b"d6:lengthi5e4:name1:x12:piece lengthi16384e6:pieces20:" + b"a" * 20 + b"e"
    torrent = b"d8:announce3:url4:listl1:ai-3ed1:k1:vee4:info" + info + b"e"
    assert bittorrent.info_hash(torrent) == hashlib.sha1(info).hexdigest()


@pytest.mark.parametrize("bad", [b"", b"i3e", b"d8:announce3:urle", b"d4:info"])
def test_info_hash_refuses_what_is_not_a_torrent(bad):
    with pytest.raises(ValueError):
        bittorrent.info_hash(bad)


def test_the_store_check_refuses_an_image_larger_than_the_free_space(tmp_path):
    free, refusal = btnode.store_room(str(tmp_path), 1)
    assert refusal is None and free > 0
    free, refusal = btnode.store_room(str(tmp_path), free)  # the image itself fits, not its companions
    assert refusal == (f"the image ({free} bytes) does not fit in {tmp_path} on the node: {free} bytes free, "
                       f"{free + 1024 * 1024} needed")
    assert btnode.store_room(str(tmp_path / "nope"), 1)[1] == f"the store {tmp_path / 'nope'} does not exist on the node"


def test_the_agent_command_quotes_every_value():
    config = {"sink": "tar -C '/mnt/dest' -xf - ; echo $(id)", "store": "/tmp/a b", "total": 3}
    words = shlex.split(bittorrent.agent_command(config))
    assert words[:3] == ["exec", "python3", "-c"]
    assert words[3] == shipped_source(bittorrent.AGENT_SOURCE)
    assert json.loads(words[4]) == config


def test_the_shipped_agent_runs_without_kadeploy_and_refuses_a_missing_store(tmp_path):
    """What a node runs is self-contained: with no site-packages (-S) nor this checkout (-I, another
    cwd), the shared helpers come from the prepended nodecommon source."""
    config = {"total": 1, "sink": "cat", "store": str(tmp_path / "nope"), "address": "127.0.0.1"}
    done = subprocess.run([sys.executable, "-I", "-S", "-c", shipped_source(bittorrent.AGENT_SOURCE),
                           json.dumps(config)], capture_output=True, text=True, timeout=30, cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"ev": "refused", "free": 0,
                                       "message": f"the store {tmp_path / 'nope'} does not exist on the node"}


def test_bittorrent_is_a_declared_method_whose_node_name_matches_the_server_s():
    assert "bittorrent" in METHODS
    assert METHODS.get("bittorrent") == "bittorrent"
    assert btnode.TORRENT_NAME == bittorrent.TORRENT_NAME
