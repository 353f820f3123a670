"""What the broadcast sshd tests (chain, tree, BitTorrent) share besides conftest's fixtures."""

from __future__ import annotations

import hashlib
from pathlib import Path

#: the test image: large enough that a broadcast is mid-stream for a while, small enough for 8 nodes
IMAGE_SIZE = 64 * 1024 * 1024


def hosts(lab) -> list[tuple[str, str]]:
    """(hostname, address) of every node of the lab, in its order: what `broadcast` takes."""
    return [(node.hostname, node.address) for node in lab.nodes]


def sha256_of(path: Path) -> str | None:
    """A node's received copy's digest, None when it wrote nothing."""
    if not path.exists():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        while chunk := source.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
