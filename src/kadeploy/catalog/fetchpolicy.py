"""Where the server may fetch a user's URL from (`server.conf` `security/fetch`).

kadeploy3d downloads the files a request names (environment images, pre- and
post-install archives, keys, PXE user files, custom operation files). Without
a policy, a user could make the server GET its own API on loopback, a BMC's
web interface or any internal service, with the server's network position.
So every http(s) fetch goes through `FetchPolicy.connect_address`:

* the host name is resolved **once** and the connection is made to the
  address that was checked (no second resolution that DNS rebinding could
  answer differently); every address the name has must be allowed;
* an address is decided by the most specific network that contains it among
  `allow`, `deny` and the default denials (loopback, link-local, unspecified,
  multicast, and each BMC address the cluster files name); at equal prefix an
  explicit `deny` beats an `allow`, which beats a default denial. With a
  non-empty `allow`, an address in no listed network is refused.

The client's own file server (`client` in a request, for the user's local
files) is another matter: it must name the address the request came from
(`check_client_callback`, called at the API edge), and it is then reached at
that address whatever the lists say, since the client proved with its TCP
connection that it is there.

Imports only the standard library and `kadeploy.errors`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from kadeploy.errors import ErrorCode, KadeployError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

#: what no user's URL may reach unless `allow` names it
DEFAULT_DENIED: tuple[tuple[str, str], ...] = (
    ("127.0.0.0/8", "loopback"), ("::1/128", "loopback"),
    ("169.254.0.0/16", "link-local"), ("fe80::/10", "link-local"),
    ("0.0.0.0/8", "unspecified"), ("::/128", "unspecified"),
    ("224.0.0.0/4", "multicast"), ("ff00::/8", "multicast"),
)
#: seconds a URL's host name may take to resolve, and all BMC names together
RESOLVE_TIMEOUT = 10.0

# Decision strength at equal prefix length: an explicit deny wins, then an allow, then a default denial.
_DEFAULT, _ALLOW, _DENY = 0, 1, 2


def parse_network(entry: str) -> Network:
    """`10.0.0.0/8`, `192.0.2.7` or `2001:db8::/32` as a network; ValueError with the entry otherwise."""
    try:
        return ipaddress.ip_network(entry.strip(), strict=False)
    except ValueError:
        raise ValueError(f"invalid network {entry!r} (expected an address or an address/prefix)") from None


def _plain(address: Address) -> Address:
    """An IPv4-mapped IPv6 address as the IPv4 address it is (`::ffff:127.0.0.1` is loopback)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass
class FetchPolicy:
    """Allow and deny lists of the addresses user URLs may reach, and the BMC hosts denied by default."""

    allow: list[Network] = field(default_factory=list)
    deny: list[Network] = field(default_factory=list)
    #: BMC host names or addresses from the cluster files; resolved at the first check
    bmc_hosts: list[str] = field(default_factory=list)
    _bmc_addresses: set[Address] | None = field(default=None, repr=False)

    @classmethod
    def from_lists(cls, allow: Iterable[str] = (), deny: Iterable[str] = (),
                   bmc_hosts: Iterable[str] = ()) -> FetchPolicy:
        return cls([parse_network(e) for e in allow], [parse_network(e) for e in deny], sorted(set(bmc_hosts)))

    def decide(self, address: Address) -> str | None:
        """None if `address` may be fetched from; otherwise why not (for the user's message)."""
        address = _plain(address)
        candidates: list[tuple[int, int, str]] = []  # (prefix length, strength, reason)
        for text, what in DEFAULT_DENIED:
            network = ipaddress.ip_network(text)
            if address.version == network.version and address in network:
                candidates.append((network.prefixlen, _DEFAULT, f"a {what} address"))
        if self._bmc_addresses and address in self._bmc_addresses:
            candidates.append((address.max_prefixlen, _DEFAULT, "a BMC address of the cluster files"))
        for network in self.allow:
            if address.version == network.version and address in network:
                candidates.append((network.prefixlen, _ALLOW, ""))
        for network in self.deny:
            if address.version == network.version and address in network:
                candidates.append((network.prefixlen, _DENY, f"denied by security/fetch/deny ({network})"))
        if not candidates:
            return "not in security/fetch/allow" if self.allow else None
        _, strength, reason = max(candidates, key=lambda c: (c[0], c[1]))
        return None if strength == _ALLOW else reason

    async def load_bmc_addresses(self) -> None:
        """Resolve the BMC host names once (concurrently, within RESOLVE_TIMEOUT; names that do not resolve
        are left out: the power commands would fail for them too)."""
        if self._bmc_addresses is not None:
            return
        loop = asyncio.get_running_loop()
        addresses: set[Address] = set()

        async def resolve(host: str) -> None:
            try:
                addresses.add(_plain(ipaddress.ip_address(host)))
                return
            except ValueError:
                pass
            try:
                infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
            except OSError:
                return
            addresses.update(_plain(ipaddress.ip_address(info[4][0].split("%")[0])) for info in infos)

        if self.bmc_hosts:
            await asyncio.wait([asyncio.ensure_future(resolve(h)) for h in self.bmc_hosts], timeout=RESOLVE_TIMEOUT)
        self._bmc_addresses = addresses

    async def connect_address(self, url: str, what: str, uri: str) -> str:
        """The checked address to connect to for `url`; INVALID_FILE naming the reason if it is refused."""
        host = urlsplit(url).hostname
        if not host:
            raise KadeployError(ErrorCode.INVALID_FILE, f"The {what} {uri} has no host name")
        await self.load_bmc_addresses()
        addresses = await resolve_host(host, what, uri)
        for address in addresses:
            reason = self.decide(address)
            if reason is not None:
                named = str(address) if host == str(address) else f"{host} ({address})"
                raise KadeployError(ErrorCode.INVALID_FILE,
                                    f"The {what} {uri} may not be fetched: {named} is {reason}")
        return str(addresses[0])


async def resolve_host(host: str, what: str, uri: str) -> list[Address]:
    """Every address of `host` (itself if it is an address literal); INVALID_FILE if it does not resolve."""
    try:
        return [_plain(ipaddress.ip_address(host))]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(loop.getaddrinfo(host, None, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT)
    except (OSError, asyncio.TimeoutError) as exc:
        raise KadeployError(ErrorCode.INVALID_FILE,
                            f"Unable to grab the {what} {uri}: cannot resolve {host} ({exc or 'timeout'})") from None
    found: list[Address] = []
    for info in infos:
        address = _plain(ipaddress.ip_address(str(info[4][0]).split("%")[0]))
        if address not in found:
            found.append(address)
    if not found:
        raise KadeployError(ErrorCode.INVALID_FILE, f"Unable to grab the {what} {uri}: {host} has no address")
    return found


def pinned_url(url: str, address: str) -> tuple[str, str, str]:
    """(URL with `address` in place of the host, the Host header, the TLS server name) for `url`."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    shown = f"[{address}]" if ":" in address else address
    netloc = f"{shown}:{parts.port}" if parts.port else shown
    host_header = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")), host_header, host


async def check_client_callback(client: object, source: str) -> str:
    """The client file server URL `client`, tied to `source` (the address the request came from).

    Its host must be `source` or a name that resolves to it; the URL returned
    names `source` itself, so that the server connects where the request came
    from and never resolves the name again. INVALID_CLIENT otherwise.
    """
    if not isinstance(client, str) or not client:
        raise KadeployError(ErrorCode.INVALID_CLIENT, "Invalid client file server URL: a URL string is expected")
    parts = urlsplit(client)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise KadeployError(ErrorCode.INVALID_CLIENT,
                            f"Invalid client file server URL {client!r}: http(s)://<address>:<port> expected")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise KadeployError(ErrorCode.INVALID_CLIENT,
                            f"Invalid client file server URL {client!r}: no credentials, query or fragment")
    try:
        origin = _plain(ipaddress.ip_address(source))
    except ValueError:
        raise KadeployError(ErrorCode.INVALID_CLIENT,
                            f"The client file server {client} cannot be checked: unknown source address") from None
    try:
        named = await resolve_host(parts.hostname, "client file server", client)
    except KadeployError as exc:
        raise KadeployError(ErrorCode.INVALID_CLIENT, exc.message) from None
    if origin not in named:
        raise KadeployError(ErrorCode.INVALID_CLIENT,
                            f"The client file server {client} is not on the host the request came from "
                            f"({origin}): the server only fetches a client's files from the client itself")
    shown = f"[{origin}]" if origin.version == 6 else str(origin)
    netloc = f"{shown}:{parts.port}" if parts.port else shown
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
