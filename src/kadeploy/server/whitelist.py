"""Source-host whitelists of the authentication methods (room `server`, reference 1.7).

Entries are IP addresses, CIDR networks, hostnames (resolved once, when the
whitelist is built) or `/regexp/` (matched against the client's address and
its reverse DNS name, looked up with a timeout only when a regexp needs it).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from dataclasses import dataclass, field

from kadeploy.errors import ConfigError

REVERSE_DNS_TIMEOUT = 5.0


@dataclass
class HostMatcher:
    """A compiled whitelist."""

    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(default_factory=list)
    patterns: list[re.Pattern[str]] = field(default_factory=list)

    @classmethod
    def build(cls, entries: list[str], source: str = "whitelist") -> HostMatcher:
        """Compile entries; a hostname that does not resolve or a bad regexp is a configuration error."""
        matcher = cls()
        for raw in entries:
            entry = str(raw).strip()
            if len(entry) >= 2 and entry.startswith("/") and entry.endswith("/"):
                try:
                    matcher.patterns.append(re.compile(entry[1:-1]))
                except re.error as exc:
                    raise ConfigError(f"server.conf: {source}: invalid regexp {entry!r}: {exc}") from None
                continue
            try:
                matcher.networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            try:
                infos = socket.getaddrinfo(entry, None)
            except OSError:
                raise ConfigError(f"server.conf: {source}: {entry!r} is neither an address, a network, "
                                  "a /regexp/ nor a resolvable hostname") from None
            for info in infos:
                matcher.networks.append(ipaddress.ip_network(info[4][0]))
        return matcher

    def match_address(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return any(p.fullmatch(address) for p in self.patterns)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        if any(ip in net for net in self.networks):
            return True
        return any(p.fullmatch(address) for p in self.patterns)

    async def match(self, address: str) -> bool:
        """Is `address` whitelisted? (reverse DNS only if a regexp did not match the address itself)."""
        if self.match_address(address):
            return True
        if not self.patterns:
            return False
        try:
            loop = asyncio.get_running_loop()
            name, _ = await asyncio.wait_for(loop.getnameinfo((address, 0), socket.NI_NAMEREQD), REVERSE_DNS_TIMEOUT)
        except (OSError, asyncio.TimeoutError, ValueError):
            return False
        return any(p.fullmatch(name) for p in self.patterns)
