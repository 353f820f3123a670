"""Fetching the files a request names: server://, http(s):// and client-local files.

Reference 1.6: environment images, pre/post-install archives, keys and custom
files may live on the server (`server:///path`), behind a URL, or on the
client machine (plain path or `local://`), which the client exports through
its embedded HTTP server (`<client>/<urlsafe-base64(path)>`). Server files are
confined to the directories the configuration allows: a path outside them,
with `..`, or a symlink escaping them is refused.

Downloaded files go through the server cache (`kadeploy.catalog.cache`): a
cached copy is revalidated with a conditional GET (`If-None-Match` on its
ETag, as the client file server and most HTTP servers answer 304), counted as
used by the workflow that asked (`wid`) until `release(wid)`, and evicted by
priority then age. Server files are read in place (copying a multi-GB image
into the cache would double the disk I/O); their MD5 is memoised per (inode,
size, mtime) so that a recorded image is hashed once, not at every deployment.
A dry run only `check`s a reference: refused for the reasons `fetch` would
refuse it, with nothing downloaded or hashed.

User URLs go through the fetch policy (`kadeploy.catalog.fetchpolicy`,
server.conf `security/fetch`): the name is resolved once, the address checked
against the allow and deny lists, and the connection made to that address
(Host header and TLS server name kept), with TLS verified against the
system's CAs or `ca_bundle`, without proxies from the environment and
without following redirects. A client's own file server was tied to the
request's source address at the API edge; it is reached as named, without
TLS verification (its certificate is a one-off self-signed one, as in
Kadeploy3).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import shlex
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from kadeploy.catalog.cache import CacheEntry, FileCache, Priority, cache_from_config
from kadeploy.catalog.fetchpolicy import FetchPolicy, pinned_url
from kadeploy.errors import ErrorCode, KadeployError
from kadeploy.templates import fill

_CHUNK = 1 << 20
MD5_MEMO_SIZE = 4096  # server files whose md5 is remembered (path, inode, size, mtime)


@dataclass(frozen=True)
class FetchedFile:
    """A file ready to read on the server, with what identifies its content."""

    uri: str
    path: Path
    size: int
    checksum: str  # md5 hex for server files, ETag (quotes stripped) for HTTP and client files


@dataclass(frozen=True)
class _Target:
    """How to reach one URL: where to connect, with which headers and TLS settings."""

    url: str
    headers: dict[str, str]
    extensions: dict[str, Any]
    verify: ssl.SSLContext | bool


class FileFetcher:
    """Resolves file references to local paths, downloading through the server cache."""

    def __init__(self, cache_dir: Path, server_dirs: Sequence[Path], *, timeout: float = 60.0,
                 max_size: int | None = None, cache: FileCache | None = None,
                 policy: FetchPolicy | None = None, ca_bundle: str | None = None) -> None:
        """`policy` decides which addresses user URLs may reach (default: loopback, link-local,
        unspecified and multicast refused); `ca_bundle` is the CA file TLS is verified against
        (default: the system's)."""
        self.policy = policy if policy is not None else FetchPolicy()
        self.tls = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else ssl.create_default_context()
        self.cache_dir = Path(cache_dir)
        self.server_dirs = [Path(d).resolve() for d in server_dirs]
        self.timeout = timeout
        self.max_size = max_size
        if cache is None:
            cache = FileCache(self.cache_dir, None)
            cache.load()
        self.cache = cache
        self._md5_memo: dict[tuple[str, int, int, int], str] = {}

    async def fetch(self, uri: str, *, client: str | None = None, what: str = "file",
                    expected_checksum: str | None = None, wid: str | None = None,
                    priority: int = Priority.ANON_KEEP, max_size: int | None = None) -> FetchedFile:
        """Make `uri` available locally; raise INVALID_FILE / INVALID_CLIENT / CACHE_FULL with the reason.

        A downloaded file stays referenced by `wid` (never evicted) until
        `release(wid)`; without `wid` it is cached but evictable at once.
        """
        limit = max_size if max_size is not None else self.max_size
        if uri.startswith("server://"):
            fetched = await asyncio.to_thread(self._server_file, uri, what, limit)
        else:
            fetched = await self._cached_download(uri, self._url_of(uri, client, what), what, wid, priority, limit,
                                                  expected_checksum)
        if expected_checksum and fetched.checksum != expected_checksum:
            raise checksum_mismatch(uri)
        return fetched

    async def check(self, uri: str, *, client: str | None = None, what: str = "file",
                    max_size: int | None = None) -> None:
        """Refuse `uri` for the reasons `fetch` would, without fetching it (a dry run).

        The reference is checked as `fetch` checks it; a server file must exist
        and fit the size limit (it is not hashed); a URL or a client file must
        answer a HEAD request with 200 and an acceptable Content-Length.
        Nothing is downloaded and the cache is left as it is.
        """
        limit = max_size if max_size is not None else self.max_size
        if uri.startswith("server://"):
            real = self.confine(uri, what)
            if not real.is_file():
                raise KadeployError(ErrorCode.INVALID_FILE, f"The {what} {uri} does not exist on the server")
            self._check_size(uri, real.stat().st_size, what, limit)
            return
        await self._probe(uri, self._url_of(uri, client, what), what, limit)

    def _url_of(self, uri: str, client: str | None, what: str) -> str:
        """Where an http(s) or client-local reference is downloaded from."""
        if uri.startswith(("http://", "https://")):
            return uri
        path = uri[len("local://"):] if uri.startswith("local://") else uri
        if not client:
            raise KadeployError(ErrorCode.INVALID_CLIENT,
                                f"The {what} {uri} is a local file but no client file server was given")
        if not path.startswith("/"):
            raise KadeployError(ErrorCode.INVALID_FILE, f"The {what} {uri} must be an absolute path")
        token = base64.urlsafe_b64encode(path.encode()).decode()
        return f"{client.rstrip('/')}/{token}"

    async def _target(self, uri: str, url: str, what: str, headers: dict[str, str]) -> _Target:
        """A user URL pinned to its checked address and verified; a client file server as named."""
        if not uri.startswith(("http://", "https://")):
            return _Target(url, headers, {}, False)  # the client's own file server, tied to the request's source
        address = await self.policy.connect_address(url, what, uri)
        pinned, host_header, server_name = pinned_url(url, address)
        return _Target(pinned, {**headers, "Host": host_header}, {"sni_hostname": server_name}, self.tls)

    async def _probe(self, uri: str, url: str, what: str, limit: int | None) -> None:
        target = await self._target(uri, url, what, {"Accept-Encoding": "identity"})
        try:
            async with httpx.AsyncClient(verify=target.verify, timeout=self.timeout, trust_env=False) as http:
                response = await http.head(target.url, headers=target.headers, extensions=target.extensions)
        except httpx.HTTPError as exc:
            raise KadeployError(ErrorCode.INVALID_FILE, f"Unable to grab the {what} {uri}: {exc}") from None
        if response.status_code != 200:
            raise KadeployError(ErrorCode.INVALID_FILE,
                                f"Unable to grab the {what} {uri} (HTTP {response.status_code})")
        announced = _content_length(response.headers)
        if announced is not None:
            self._check_size(uri, announced, what, limit)

    def release(self, wid: str) -> None:
        """The operation `wid` ended: its cached files may be evicted (anonymous ones are deleted)."""
        self.cache.release(wid)

    def confine(self, uri: str, what: str = "file") -> Path:
        """The real path of a `server://` reference, refused unless inside an allowed directory."""
        raw = uri[len("server://"):]
        if not raw.startswith("/"):
            raise KadeployError(ErrorCode.INVALID_FILE, f"The {what} {uri} must be an absolute server:// path")
        if ".." in Path(raw).parts:
            raise KadeployError(ErrorCode.INVALID_FILE, f"The {what} {uri} contains '..'")
        real = Path(os.path.realpath(raw))
        if not any(real == d or d in real.parents for d in self.server_dirs):
            allowed = ", ".join(str(d) for d in self.server_dirs) or "none configured"
            raise KadeployError(ErrorCode.INVALID_FILE,
                                f"The {what} {uri} is outside the server directories users may read ({allowed})")
        return real

    def _server_file(self, uri: str, what: str, limit: int | None) -> FetchedFile:
        real = self.confine(uri, what)
        if not real.is_file():
            raise KadeployError(ErrorCode.INVALID_FILE, f"The {what} {uri} does not exist on the server")
        stat = real.stat()
        self._check_size(uri, stat.st_size, what, limit)
        key = (str(real), stat.st_ino, stat.st_size, stat.st_mtime_ns)
        checksum = self._md5_memo.get(key)
        if checksum is None:
            digest = hashlib.md5()
            with real.open("rb") as handle:
                while chunk := handle.read(_CHUNK):
                    digest.update(chunk)
            checksum = digest.hexdigest()
            if len(self._md5_memo) >= MD5_MEMO_SIZE:  # a file rewritten again and again is a new key each time
                try:  # the oldest entry (dicts keep insertion order); other threads may be at it too
                    self._md5_memo.pop(next(iter(self._md5_memo)), None)
                except (RuntimeError, StopIteration):
                    pass
            self._md5_memo[key] = checksum
        return FetchedFile(uri, real, stat.st_size, checksum)

    async def _cached_download(self, uri: str, url: str, what: str, wid: str | None, priority: int,
                               limit: int | None, expected_checksum: str | None = None) -> FetchedFile:
        cache = self.cache
        async with cache.lock(uri):
            entry = cache.lookup(uri)
            if entry is not None and not entry.path.is_file():
                cache.discard(uri)
                entry = None
            headers = {"Accept-Encoding": "identity"}  # the file as stored, its size as announced
            if entry is not None and entry.etag:
                headers["If-None-Match"] = f'"{entry.etag}"'
            elif entry is not None and entry.last_modified:
                headers["If-Modified-Since"] = entry.last_modified
            entry = await self._download(uri, url, what, headers, entry, priority, limit, expected_checksum)
            if not entry.path.is_file():
                # released and deleted by another operation while we revalidated it (304): fetch again
                cache.discard(uri)
                entry = await self._download(uri, url, what, {"Accept-Encoding": "identity"}, None, priority, limit,
                                             expected_checksum)
            cache.acquire(entry, wid, priority)
            return FetchedFile(uri, entry.path, entry.size, entry.checksum)

    async def _download(self, uri: str, url: str, what: str, headers: dict[str, str], cached: CacheEntry | None,
                        priority: int, limit: int | None, expected_checksum: str | None = None) -> CacheEntry:
        cache = self.cache
        cache.directory.mkdir(parents=True, exist_ok=True)
        remote = await self._target(uri, url, what, headers)
        target = cache.new_path(uri)
        partial = target.with_name(target.name + ".part")
        try:
            async with httpx.AsyncClient(verify=remote.verify, timeout=self.timeout, trust_env=False) as http:
                async with http.stream("GET", remote.url, headers=remote.headers,
                                       extensions=remote.extensions) as response:
                    if response.status_code == 304 and cached is not None:
                        return cached
                    if response.status_code != 200:
                        raise KadeployError(ErrorCode.INVALID_FILE,
                                            f"Unable to grab the {what} {uri} (HTTP {response.status_code})")
                    etag = response.headers.get("etag", "").strip('"')
                    if expected_checksum and etag and etag != expected_checksum:
                        # the ETag is the file's checksum: a changed file is refused before it is
                        # downloaded, as Kadeploy3's GrabFile does when its fetcher gives a checksum
                        raise checksum_mismatch(uri)
                    announced = _content_length(response.headers)
                    if announced is not None:
                        self._check_size(uri, announced, what, limit)
                    size = 0
                    digest = hashlib.md5()
                    with cache.reservation(uri, announced or 0) as grow, partial.open("wb") as handle:
                        async for chunk in response.aiter_bytes(_CHUNK):
                            size += len(chunk)
                            self._check_size(uri, size, what, limit)
                            grow(size)
                            digest.update(chunk)
                            handle.write(chunk)
                        if announced is not None and size != announced:
                            raise KadeployError(ErrorCode.INVALID_FILE,
                                                f"The {what} {uri} is truncated ({size} bytes received, "
                                                f"{announced} announced)")
                        partial.replace(target)
                        return cache.register(uri, target, size, etag or digest.hexdigest(), priority, etag=etag,
                                              last_modified=response.headers.get("last-modified", ""))
        except httpx.HTTPError as exc:
            raise KadeployError(ErrorCode.INVALID_FILE, f"Unable to grab the {what} {uri}: {exc}") from None
        finally:
            partial.unlink(missing_ok=True)

    def _check_size(self, uri: str, size: int, what: str, limit: int | None) -> None:
        if limit is not None and size > limit:
            raise KadeployError(ErrorCode.INVALID_FILE,
                                f"The {what} {uri} is too big ({size} bytes, at most {limit})")


def checksum_mismatch(uri: str) -> KadeployError:
    """A recorded environment's file changed since its checksum was stored (Kadeploy3's words, error 5)."""
    return KadeployError(ErrorCode.INVALID_FILE, f"Checksum of the file '{uri}' does not match (an update is necessary)")


def _content_length(headers: Any) -> int | None:
    value = headers.get("content-length")
    if value is None or headers.get("content-encoding"):
        return None
    try:
        return int(value)
    except ValueError:
        return None


def fetcher_from_config(cfg: Any) -> FileFetcher:
    """The fetcher server.conf describes: the cache of `cache/*`, server files under `environments/server_dirs`
    (default `<config dir>/envs`)."""
    server = cfg.server
    cache = cache_from_config(server)
    server_dirs = [Path(d) for d in getattr(server.environments, "server_dirs", None) or []]
    if not server_dirs:
        server_dirs = [Path(cfg.config_dir) / "envs"]
    fetch = server.security.fetch
    policy = FetchPolicy.from_lists(fetch.allow, fetch.deny, bmc_hosts(cfg))
    return FileFetcher(cache.directory, server_dirs, cache=cache, policy=policy, ca_bundle=fetch.ca_bundle,
                       max_size=fetch.max_bytes)


_BMC_KINDS = ("reboot", "power_on", "power_off", "power_status", "console")


def bmc_hosts(cfg: Any) -> set[str]:
    """The BMC hosts the cluster files and command.conf name: each power driver's `address`, and the
    `-H <host>` of `ipmitool`-style commands, for every node (denied to user URLs by default)."""
    hosts: set[str] = set()
    for node in cfg.nodes.values():
        cluster = cfg.clusters.get(node.cluster)
        if cluster is None:
            continue
        names = {"HOSTNAME_FQDN": node.hostname, "HOSTNAME_SHORT": node.hostname.split(".", 1)[0]}
        templates = [command for command in (cfg.commands.get(node.hostname) or {}).values()]
        templates += [command for command in (cfg.commands.get(names["HOSTNAME_SHORT"]) or {}).values()]
        for kind in _BMC_KINDS:
            for op in getattr(cluster.remoteops, kind):
                if op.driver and op.address:
                    hosts.add(fill(op.address, raw=names))
                elif op.cmd:
                    templates.append(op.cmd)
        for template in templates:
            if "-H" not in template:
                continue  # quick: most commands name no BMC
            try:
                words = shlex.split(fill(template, raw=names))
            except ValueError:
                continue
            hosts.update(words[i + 1] for i, word in enumerate(words[:-1]) if word == "-H")
    return hosts
