"""Refused BMC sessions: how to recognise one and how long to wait before trying again.

Why: a BMC accepts few concurrent RMCP+ sessions (often 4) and answers one more
Open Session Request with "insufficient resources for session"; a busy or slow
BMC makes ipmitool give up the handshake ("Unable to establish IPMI v2 / RMCP+
session"). In both cases the power action was never sent, so running the same
command again is safe, and a moment later it usually succeeds. Kadeploy3 runs
the command once and fails the node; here a refused session is retried a
bounded number of times with exponential backoff (`windows/bmc` in server.conf).

Refusals that waiting does not cure (wrong user or password, no common cipher
suite, a role the user does not have) are not retried.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

# What ipmitool prints when it could not open a session (lanplus, then lan).
_REFUSED = (
    "unable to establish ipmi v2 / rmcp+ session",
    "unable to establish lan session",
    "insufficient resources for session",
)
# ...and what it prints first when the cause is permanent.
_PERMANENT = (
    "unauthorized name",
    "hmac is invalid",
    "invalid role",
    "no matching cipher suite",
    "invalid name length",
    "unauthorized role",
    "invalid integrity check value",
    "invalid password",
)


def session_refused(stderr: str) -> bool:
    """Whether a failed power command's stderr says the BMC session could not be opened,
    for a reason that may pass (busy BMC, no session slot, lost handshake packets)."""
    text = stderr.lower()
    return any(marker in text for marker in _REFUSED) and not any(marker in text for marker in _PERMANENT)


@dataclass(frozen=True)
class SessionRetry:
    """How often and after how long a command whose session was refused runs again.

    The n-th retry (n from 0) waits `backoff * 2**n` seconds, at most `max_backoff`,
    scaled by a random factor in [0.5, 1] so that the commands refused together by
    one BMC do not all come back at the same instant.
    """

    retries: int = 4
    backoff: float = 1.0
    max_backoff: float = 16.0

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError(f"session retries must be 0 or more, not {self.retries}")
        if self.backoff < 0 or self.max_backoff < 0:
            raise ValueError("session backoff must be 0 or more seconds")

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number `retry` (0 for the first)."""
        base = min(self.max_backoff, self.backoff * (2 ** retry))
        return base * (0.5 + 0.5 * (rng or random).random())


NO_RETRY = SessionRetry(retries=0)
