"""The server-side file cache (room `catalog`, reference 1.6 and Kadeploy3's `cache.rb`).

Images, archives, keys and custom files fetched from URLs or from clients land
here, so that a recorded environment deployed ten times is downloaded once.
What Kadeploy3's cache does, kept:

* a size limit (`cache/size` MB in server.conf);
* three priorities: `ANON` (0, files of anonymous requests, deleted as soon as
  no operation uses them), `ANON_KEEP` (1, kept but evicted first) and `DB`
  (2, files of recorded environments);
* eviction of unused files by (priority, last access time), lowest first;
* reference counts per workflow id: a file a running operation uses is never
  evicted; `release(wid)` drops that workflow's references when it ends;
* a clear `CACHE_FULL` (22) error when nothing more can be evicted;
* a restart re-indexes the directory from each file's sidecar metadata
  (`<file>.meta.json`); partial downloads, orphans and anonymous files go.

The cache only does bookkeeping and eviction; `kadeploy.catalog.files`
downloads into the paths it hands out. Its methods are synchronous and do not
await, so under one asyncio loop each call is atomic; `lock(uri)` serialises
concurrent fetches of the same URI. Imports `kadeploy.errors` only.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from enum import IntEnum
from pathlib import Path

from kadeploy.errors import ErrorCode, KadeployError

log = logging.getLogger("kadeploy.catalog")

META_SUFFIX = ".meta.json"
PART_SUFFIX = ".part"
MB = 1 << 20


class Priority(IntEnum):
    """Kadeploy3's cache priorities: lower is evicted first."""

    ANON = 0
    ANON_KEEP = 1
    DB = 2


@dataclass
class CacheEntry:
    """One cached file and what identifies its content."""

    uri: str
    path: Path
    size: int
    checksum: str
    priority: int
    atime: float
    etag: str = ""
    last_modified: str = ""
    refs: dict[str, int] = field(default_factory=dict)  # wid -> references; not persisted
    stale: bool = False  # replaced by a newer version; deleted once unused

    @property
    def in_use(self) -> bool:
        return any(self.refs.values())

    def metadata(self) -> dict[str, object]:
        data = asdict(self)
        data["path"] = self.path.name
        del data["refs"], data["stale"]
        return data


def _human(size: int) -> str:
    return f"{size / MB:.1f} MB"


class FileCache:
    """Bookkeeping of the cache directory: entries, sizes, references, eviction."""

    def __init__(self, directory: Path, max_size: int | None, *, clock: Callable[[], float] = time.time) -> None:
        """`max_size` in bytes (None: unlimited)."""
        self.directory = Path(directory)
        self.max_size = max_size
        self.clock = clock
        self.entries: dict[str, CacheEntry] = {}  # uri -> current entry
        self.stale: list[CacheEntry] = []  # older versions still used by running operations
        self.reserved = 0  # bytes promised to downloads in progress
        self._locks: dict[str, asyncio.Lock] = {}
        self._counter = 0

    # -- restart ---------------------------------------------------------------------------

    def load(self) -> None:
        """Re-index the directory after a restart: keep recorded and kept files, drop the rest."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.entries.clear()
        self.stale.clear()
        known: set[str] = set()
        for meta in sorted(self.directory.glob("*" + META_SUFFIX)):
            entry = self._read_meta(meta)
            if entry is None or entry.priority == Priority.ANON or not entry.path.is_file() \
                    or entry.path.stat().st_size != entry.size:
                self._unlink(meta, entry.path if entry else None)
                continue
            previous = self.entries.get(entry.uri)
            if previous is not None:  # two versions of one URI survived a crash: keep the newest
                older = previous if previous.atime <= entry.atime else entry
                self._unlink(self._meta_path(older.path), older.path)
                known.discard(older.path.name)
                entry = entry if older is previous else previous
            self.entries[entry.uri] = entry
            known.add(entry.path.name)
            known.add(self._meta_path(entry.path).name)
        for path in self.directory.iterdir():
            if path.name not in known and path.is_file():
                path.unlink(missing_ok=True)
        # a stricter limit than before the restart evicts now
        self._evict(0, uri="(restart)", fail=False)

    def _read_meta(self, meta: Path) -> CacheEntry | None:
        try:
            data = json.loads(meta.read_text())
            return CacheEntry(uri=str(data["uri"]), path=self.directory / str(data["path"]), size=int(data["size"]),
                              checksum=str(data["checksum"]), priority=int(data["priority"]),
                              atime=float(data["atime"]), etag=str(data.get("etag", "")),
                              last_modified=str(data.get("last_modified", "")))
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("cache: unreadable metadata %s, file dropped", meta)
            return None

    # -- lookups ---------------------------------------------------------------------------

    @property
    def used(self) -> int:
        """Bytes held by cached files (current and stale) and by downloads in progress."""
        return sum(e.size for e in self.entries.values()) + sum(e.size for e in self.stale) + self.reserved

    def lookup(self, uri: str) -> CacheEntry | None:
        return self.entries.get(uri)

    def lock(self, uri: str) -> asyncio.Lock:
        """One fetch of `uri` at a time; the second waits and then finds it cached."""
        return self._locks.setdefault(uri, asyncio.Lock())

    def new_path(self, uri: str) -> Path:
        """A fresh file name for a download of `uri`: `<hash>-<n>-<sanitised basename>`."""
        self._counter += 1
        digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
        base = re.sub(r"[^A-Za-z0-9._-]", "_", os.path.basename(uri.rstrip("/")))[-64:] or "file"
        return self.directory / f"{digest}-{os.getpid()}{self._counter}-{base}"

    # -- space -----------------------------------------------------------------------------

    @contextmanager
    def reservation(self, uri: str, size: int) -> Iterator[Callable[[int], None]]:
        """Reserve `size` bytes for a download; the yielded `grow(total)` reserves more as it streams."""
        held = 0

        def grow(total: int) -> None:
            nonlocal held
            if total > held:
                self._make_room(total - held, uri)
                self.reserved += total - held
                held = total

        try:
            grow(size)
            yield grow
        finally:
            self.reserved -= held

    def _make_room(self, size: int, uri: str) -> None:
        if self.max_size is None:
            return
        if size > self.max_size:
            raise KadeployError(ErrorCode.CACHE_FULL,
                                f"The file {uri} ({_human(size)}) is bigger than the whole cache "
                                f"({_human(self.max_size)}, cache/size in server.conf)")
        self._evict(size, uri=uri, fail=True)

    def _evict(self, needed: int, *, uri: str, fail: bool) -> None:
        """Delete unused files, lowest (priority, atime) first, until `needed` bytes fit."""
        if self.max_size is None:
            return
        candidates = sorted((e for e in self.entries.values() if not e.in_use), key=lambda e: (e.priority, e.atime))
        for entry in candidates:
            if self.used + needed <= self.max_size:
                return
            log.info("cache: evicting %s (%s, priority %d)", entry.uri, _human(entry.size), entry.priority)
            self._forget(entry)
        if fail and self.used + needed > self.max_size:
            in_use = sum(e.size for e in self.entries.values() if e.in_use) + sum(e.size for e in self.stale)
            raise KadeployError(ErrorCode.CACHE_FULL,
                                f"The cache is full: {uri} needs {_human(needed)} but {_human(in_use)} of "
                                f"{_human(self.max_size)} are used by running operations "
                                f"and {_human(self.reserved)} by downloads in progress; try again later")

    # -- entries ---------------------------------------------------------------------------

    def register(self, uri: str, path: Path, size: int, checksum: str, priority: int, *,
                 etag: str = "", last_modified: str = "") -> CacheEntry:
        """Record a finished download (already inside the directory); an older version goes stale."""
        previous = self.entries.get(uri)
        if previous is not None and (previous.size, previous.checksum) == (size, checksum):
            # same content (a server without conditional GET): keep the copy others may be reading
            Path(path).unlink(missing_ok=True)
            previous.etag, previous.last_modified = etag or previous.etag, last_modified or previous.last_modified
            return previous
        entry = CacheEntry(uri, Path(path), size, checksum, int(priority), self.clock(), etag, last_modified)
        if previous is not None:
            if previous.in_use:
                previous.stale = True
                self.stale.append(previous)
                self._unlink(self._meta_path(previous.path))  # a restart must not bring it back
            else:
                self._delete_files(previous)
        self.entries[uri] = entry
        self._write_meta(entry)
        return entry

    def acquire(self, entry: CacheEntry, wid: str | None, priority: int) -> None:
        """`wid` uses `entry`: count the reference, refresh its access time, raise its priority."""
        entry.atime = self.clock()
        if priority > entry.priority:
            entry.priority = int(priority)
        if wid is not None:
            entry.refs[wid] = entry.refs.get(wid, 0) + 1
        if not entry.stale:
            self._write_meta(entry)

    def release(self, wid: str) -> None:
        """The workflow `wid` ended: drop its references; unused anonymous and stale files go."""
        for entry in list(self.entries.values()) + list(self.stale):
            if entry.refs.pop(wid, None) is None or entry.in_use:
                continue
            if entry.stale:
                self.stale.remove(entry)
                self._delete_files(entry)
            elif entry.priority == Priority.ANON:
                self._forget(entry)

    def discard(self, uri: str) -> None:
        """Forget `uri` unless in use (e.g. its content failed a check)."""
        entry = self.entries.get(uri)
        if entry is not None and not entry.in_use:
            self._forget(entry)

    def _forget(self, entry: CacheEntry) -> None:
        if self.entries.get(entry.uri) is entry:
            del self.entries[entry.uri]
        self._delete_files(entry)

    # -- files -----------------------------------------------------------------------------

    @staticmethod
    def _meta_path(path: Path) -> Path:
        return path.with_name(path.name + META_SUFFIX)

    def _write_meta(self, entry: CacheEntry) -> None:
        meta = self._meta_path(entry.path)
        temporary = meta.with_name(meta.name + PART_SUFFIX)
        try:
            temporary.write_text(json.dumps(entry.metadata()))
            temporary.replace(meta)
        except OSError as exc:  # the cache still works, only the restart loses this entry
            log.warning("cache: cannot write %s: %s", meta, exc)

    def _delete_files(self, entry: CacheEntry) -> None:
        self._unlink(self._meta_path(entry.path), entry.path)

    @staticmethod
    def _unlink(*paths: Path | None) -> None:
        for path in paths:
            if path is not None:
                path.unlink(missing_ok=True)


def cache_from_config(server_cfg: object) -> FileCache:
    """The cache server.conf describes: `<cache/directory>/kadeploy-cache`, `cache/size` MB."""
    cache_cfg = getattr(server_cfg, "cache")
    size = int(getattr(cache_cfg, "size"))
    directory = Path(getattr(cache_cfg, "directory")) / "kadeploy-cache"
    cache = FileCache(directory, size * MB if size > 0 and not getattr(cache_cfg, "disabled", False) else None)
    cache.load()
    return cache
