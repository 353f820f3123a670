"""Slowing down repeated password failures, per source (room `server`).

HTTP Basic passwords can be guessed; a source that keeps failing gets slower
answers. Each source has a failure score that decays with time (one failure
forgiven every `decay` seconds). Every attempt is charged to its source
before the password is checked (so that parallel attempts cannot all slip in
before the first failure is recorded) and refunded on success. Past `free`
failures, each attempt waits its turn: attempts from one source are spaced by
`base`, then twice that, and so on up to `maximum` seconds; an attempt that
would wait longer than `refuse_after` is refused at once, so that a source
cannot pile up waiting requests.

Memory is bounded: at most `capacity` sources are remembered, the least
recently seen forgotten first. IPv6 sources count per /64, the block one
host usually holds, so that one host cannot dodge its score by changing its
interface identifier.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Source:
    score: float = 0.0
    updated: float = 0.0
    next_slot: float = 0.0


def source_key(address: str) -> str:
    """The unit a score is kept for: the address, or its /64 for IPv6."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class FailureThrottle:
    """Per-source failure scores: how long the next attempt waits, or None when it is refused."""

    def __init__(self, *, free: int = 5, base: float = 0.5, maximum: float = 30.0, refuse_after: float = 60.0,
                 decay: float = 60.0, capacity: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.free = free
        self.base = base
        self.maximum = maximum
        self.refuse_after = refuse_after
        self.decay = decay
        self.capacity = capacity
        self.clock = clock
        self._sources: OrderedDict[str, _Source] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sources)

    def delay(self, score: float) -> float:
        """Spacing imposed after `score` failures: none up to `free`, then doubling up to `maximum`.

        A failure counts until it is wholly forgiven (a score of 5.1 is 6 failures).
        """
        over = math.ceil(score - 1e-9) - self.free
        if over <= 0:
            return 0.0
        return min(self.base * 2 ** min(over - 1, 32), self.maximum)

    def _entry(self, address: str, now: float) -> tuple[str, _Source]:
        key = source_key(address)
        entry = self._sources.get(key)
        if entry is None:
            entry = _Source(updated=now, next_slot=now)
            self._sources[key] = entry
            while len(self._sources) > self.capacity:
                self._sources.popitem(last=False)
        else:
            self._sources.move_to_end(key)
            if self.decay > 0:
                entry.score = max(0.0, entry.score - (now - entry.updated) / self.decay)
            entry.updated = now
        return key, entry

    def reserve(self, address: str) -> float | None:
        """Charge one attempt to `address`: seconds it must wait first, or None if it is refused."""
        now = self.clock()
        _, entry = self._entry(address, now)
        slot = max(now, entry.next_slot) + self.delay(entry.score + 1)
        if slot - now > self.refuse_after:
            return None
        entry.score += 1
        entry.next_slot = slot
        return slot - now

    def succeeded(self, address: str) -> None:
        """The attempt charged by `reserve` was right: refund it."""
        now = self.clock()
        key, entry = self._entry(address, now)
        entry.score = max(0.0, entry.score - 1)
        if self.delay(entry.score) == 0:
            entry.next_slot = now
        if entry.score == 0:
            del self._sources[key]
