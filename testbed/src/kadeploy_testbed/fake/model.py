"""testbed.fake room: the seeded failure model and the boot-time distribution.

Why seeded draws keyed by (node, event, count) rather than one shared RNG:
with thousands of nodes the order in which asyncio serves them changes from
run to run, and a shared generator would then give different nodes different
fates. Hashing the key makes node 17's third boot fail or succeed the same
way on every run with the same seed, whatever else happens. Pure code, no I/O.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field

from kadeploy.errors import ErrorCode, KadeployError

#: what can fail, and which node commands each kind covers
FAILURE_KINDS = {
    "boot": "a boot hangs: the node never opens its ports (firmware, PXE or kernel failure)",
    "bmc": "a BMC (power) command fails",
    "partition": "the partitioning script exits non-zero",
    "format": "mkfs / mkswap fails",
    "mount": "mount fails",
    "image": "the image pipeline (tar/dd sink) fails",
    "bootloader": "the bootloader installation script fails",
    "kexec": "kexec -l fails",
    "command": "any other node command fails",
}


def draw(seed: int, node: int, event: str, count: int) -> float:
    """A uniform number in [0, 1) fixed by (seed, node index, event name, occurrence number)."""
    digest = hashlib.blake2b(f"{seed}:{node}:{event}:{count}".encode(), digest_size=8).digest()
    return struct.unpack("!Q", digest)[0] / 2.0**64


@dataclass(frozen=True)
class Distribution:
    """Seconds drawn uniformly in [low, high]; `"60-120"` or `"90"` on the command line."""

    low: float
    high: float

    @classmethod
    def parse(cls, text: str, option: str = "--boot-time") -> Distribution:
        parts = str(text).strip().split("-")
        try:
            values = [float(part) for part in parts if part.strip() != ""]
        except ValueError:
            values = []
        if len(values) not in (1, 2) or len(parts) != len(values) or any(v < 0 for v in values):
            raise KadeployError(ErrorCode.INVALID_OPTION,
                                f"{option} {text!r}: expected seconds as LOW-HIGH (e.g. 60-120) or one number")
        low, high = values[0], values[-1]
        if high < low:
            raise KadeployError(ErrorCode.INVALID_OPTION, f"{option} {text!r}: the upper bound is below the lower one")
        return cls(low, high)

    def pick(self, uniform: float) -> float:
        """The value at quantile `uniform` (a `draw`)."""
        return self.low + (self.high - self.low) * uniform

    def __str__(self) -> str:
        return f"{self.low:g}" if self.low == self.high else f"{self.low:g}-{self.high:g}"


@dataclass
class FailureModel:
    """Per-kind failure probabilities, plus the seed that makes every draw reproducible."""

    seed: int = 0
    rates: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for kind, rate in self.rates.items():
            self.check(kind, rate)

    @staticmethod
    def check(kind: str, rate: float) -> None:
        if kind not in FAILURE_KINDS:
            raise KadeployError(ErrorCode.INVALID_OPTION,
                                f"unknown failure kind {kind!r} (expected one of {', '.join(FAILURE_KINDS)})")
        if not 0.0 <= rate <= 1.0:
            raise KadeployError(ErrorCode.INVALID_OPTION, f"failure rate of {kind!r} must be within 0-1, got {rate}")

    @classmethod
    def parse(cls, seed: int, boot_rate: float, specs: list[str]) -> FailureModel:
        """`--failure-rate P` (boots) and repeated `--fail KIND=P` options."""
        rates = {"boot": boot_rate} if boot_rate else {}
        for spec in specs:
            kind, sep, value = spec.partition("=")
            try:
                rate = float(value)
            except ValueError:
                sep = ""
            if not sep:
                raise KadeployError(ErrorCode.INVALID_OPTION, f"--fail {spec!r}: expected KIND=RATE, e.g. image=0.01")
            rates[kind.strip()] = rate
        return cls(seed, rates)

    def fails(self, kind: str, node: int, count: int, override: float | None = None) -> bool:
        """Whether occurrence `count` of `kind` on node `node` fails."""
        rate = self.rates.get(kind, 0.0) if override is None else override
        return rate > 0 and draw(self.seed, node, kind, count) < rate
