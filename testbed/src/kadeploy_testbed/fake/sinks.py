"""testbed.fake room: the image pipeline of a fake node (`gzip -cd | tar -xf -`, `> /dev/sda3`).

Why not discard the stream: a deployment is only as checked as its image, so
the fake sink really decompresses and walks the tar headers (never writing a
byte), records the few paths the later steps look at (top level and /boot:
`check_kernel_files`, kexec), and fails as `tar` would on a corrupt stream.
Only names up to two levels deep are kept, so that thousands of nodes holding
the same image cost kilobytes each; `FileIndex` instances are shared by digest.
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from dataclasses import dataclass, field

BLOCK = 512
MAX_DEPTH = 2          # `vmlinuz`, `boot/vmlinuz-6.1`: what kernels and initrds look like
MAX_NAMES = 4096       # a bound per image, whatever it holds


class SinkError(Exception):
    """The pipeline failed as the real one would (message as gzip/tar print it)."""


@dataclass
class FileIndex:
    """Shallow view of an extracted image: path -> symlink target ('' for other entries)."""

    entries: dict[str, str] = field(default_factory=dict)

    def exists(self, path: str) -> bool:
        """`test -e` inside the image root: follows symlinks; deeper paths are assumed present."""
        for _ in range(16):
            path = path.strip("/")
            if path.count("/") >= MAX_DEPTH:
                return True
            if path not in self.entries:
                return False
            target = self.entries[path]
            if not target:
                return True
            if target.startswith("/"):
                path = target
            else:
                parent = path.rsplit("/", 1)[0] if "/" in path else ""
                path = _normalise(f"{parent}/{target}")
        return False


def _normalise(path: str) -> str:
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/".join(parts)


def _decompressor(compression: str):
    if compression == "gzip":
        return zlib.decompressobj(wbits=47)  # gzip or zlib header, as `gzip -cd` accepts
    if compression == "xz":
        return lzma.LZMADecompressor()
    if compression == "bzip2":
        return bz2.BZ2Decompressor()
    return None


class TarWalker:
    """Incremental tar header reader (ustar, GNU long names, pax `path`)."""

    def __init__(self) -> None:
        self.index = FileIndex()
        self._buffer = bytearray()
        self._skip = 0
        self._long_name: int | None = None  # size of a pending GNU long name or pax header
        self._long_kind = b""
        self._next_name: str | None = None
        self.finished = False

    def feed(self, data: bytes) -> None:
        self._buffer += data
        while not self.finished:
            if self._skip:
                count = min(self._skip, len(self._buffer))
                del self._buffer[:count]
                self._skip -= count
                if self._skip:
                    return
            if self._long_name is not None:
                padded = -(-self._long_name // BLOCK) * BLOCK
                if len(self._buffer) < padded:
                    return
                payload = bytes(self._buffer[:self._long_name])
                del self._buffer[:padded]
                self._next_name = self._extended_name(payload)
                self._long_name = None
                continue
            if len(self._buffer) < BLOCK:
                return
            header = bytes(self._buffer[:BLOCK])
            del self._buffer[:BLOCK]
            if header == bytes(BLOCK):
                self.finished = True
                return
            self._header(header)

    def _extended_name(self, payload: bytes) -> str | None:
        if self._long_kind == b"L":
            return payload.split(b"\0", 1)[0].decode("utf-8", "replace")
        for record in payload.decode("utf-8", "replace").split("\n"):
            _, _, keyvalue = record.partition(" ")
            key, _, value = keyvalue.partition("=")
            if key == "path":
                return value
        return self._next_name

    def _header(self, header: bytes) -> None:
        if _checksum(header) != _octal(header[148:156]):
            raise SinkError("tar: This does not look like a tar archive")
        size = _size(header[124:136])
        kind = header[156:157]
        if kind in (b"L", b"x"):
            self._long_name, self._long_kind = size, kind
            return
        name = header[0:100].split(b"\0", 1)[0].decode("utf-8", "replace")
        if header[257:262] == b"ustar":
            prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8", "replace")
            if prefix:
                name = f"{prefix}/{name}"
        if self._next_name is not None:
            name, self._next_name = self._next_name, None
        link = header[157:257].split(b"\0", 1)[0].decode("utf-8", "replace") if kind in (b"1", b"2") else ""
        path = _normalise(name)
        if path and path.count("/") < MAX_DEPTH and len(self.index.entries) < MAX_NAMES:
            # a hard link (`1`) names another member by its path from the root
            self.index.entries[path] = ("/" + link) if kind == b"1" else link
        if kind not in (b"1", b"2", b"3", b"4", b"5", b"6"):
            self._skip = -(-size // BLOCK) * BLOCK


def _octal(field_bytes: bytes) -> int:
    text = field_bytes.split(b"\0", 1)[0].strip()
    try:
        return int(text or b"0", 8)
    except ValueError:
        raise SinkError("tar: Archive contains an invalid header") from None


def _size(field_bytes: bytes) -> int:
    if field_bytes[0] & 0x80:  # GNU base-256 for sizes above 8 GiB
        return int.from_bytes(field_bytes[1:], "big")
    return _octal(field_bytes)


def _checksum(header: bytes) -> int:
    return sum(header[:148]) + 8 * 32 + sum(header[156:])


class ImageSink:
    """What a node does with the image stream: decompress, walk the tar, count; never store."""

    def __init__(self, compression: str, kind: str, *, inspect: bool = True) -> None:
        self.compression = compression
        self.kind = kind
        self.received = 0
        self.error = ""
        self._decompress = _decompressor(compression) if inspect else None
        self._walker = TarWalker() if inspect and kind == "tar" and (self._decompress or compression == "none") else None
        self._inspect = inspect and (self._decompress is not None or compression == "none")

    def feed(self, data: bytes | memoryview) -> None:
        """Take a chunk; after an error the rest is drained, as a pipe to a dead tar is."""
        self.received += len(data)
        if self.error or not self._inspect:
            return
        try:
            raw = self._decompress.decompress(data) if self._decompress is not None else bytes(data)
            if self._walker is not None and not self._walker.finished:
                self._walker.feed(raw)
        except (zlib.error, lzma.LZMAError, OSError, EOFError, ValueError):
            self.error = f"{self.compression}: stdin: invalid compressed data--format violated"
        except SinkError as exc:
            self.error = str(exc)

    def close(self) -> int:
        """Exit status of the pipeline once the stream ended (0 = the image is on the disk)."""
        if self.error:
            return 2
        if self._inspect and self._decompress is not None and not getattr(self._decompress, "eof", True):
            self.error = f"{self.compression}: stdin: unexpected end of file"
            return 1
        if self._walker is not None and not self._walker.finished and self.received:
            self.error = "tar: Unexpected EOF in archive"
            return 2
        return 0

    @property
    def files(self) -> FileIndex | None:
        """The image's shallow index when it was walked (a tar image), else None (unknown)."""
        return self._walker.index if self._walker is not None else None
