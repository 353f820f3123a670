"""asyncssh settings that cut the server's CPU per node (issue #10, measured with py-spy).

A deployment opens about ten SSH channels per node; at 1,000 nodes the
profile of kadeploy3d was two thirds asyncssh. Two costs did not buy anything:

* the cipher: asyncssh's chacha20-poly1305 builds three `cryptography`
  cipher objects per packet (length, poly1305 key, payload), AES-GCM one.
  Preferring AES-GCM halves the cost of a channel; the other algorithms stay
  in the list, so a node whose sshd lacks GCM still negotiates.
* logging: `SSHLogger.log` renders its arguments (and the packet logger
  names every packet) *before* the logging level is checked, for every
  packet and every channel, even though the server keeps asyncssh at
  WARNING. `quiet_asyncssh_logging` makes both check the level first; what
  is logged when the level allows it is unchanged.
* the key exchange: asyncssh prefers the hybrid mlkem768x25519 (an ML-KEM
  key generation on top of X25519 for every handshake); plain
  curve25519-sha256 first saved 0.4 of 3.2 ms of client CPU per connection
  (with the options object built once, `ConnectionPool`). Deployment traffic
  lives minutes on an administration network, so post-quantum forward secrecy
  buys little; the hybrid stays in the list for nodes that only offer it.
"""

from __future__ import annotations

import logging
from typing import Any

from asyncssh.encryption import get_default_encryption_algs
from asyncssh.kex import get_default_kex_algs
from asyncssh.logging import SSHLogger
from asyncssh.packet import SSHPacketLogger

#: ciphers tried first: one AEAD call per packet (hardware AES on every node CPU of the last decade)
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


#: key exchanges tried first (one X25519 per handshake; supported by every OpenSSH since 6.5)
PREFERRED_KEX = ("curve25519-sha256", "curve25519-sha256@libssh.org")


def _preferred_first(preferred: tuple[str, ...], defaults: list[str]) -> list[str]:
    """`defaults` reordered: the `preferred` ones it holds first, then the rest (nothing removed)."""
    first = [alg for alg in preferred if alg in defaults]
    return first + [alg for alg in defaults if alg not in first]


def kex_algs() -> list[str]:
    """asyncssh's default key exchanges (GSS ones aside) with plain curve25519 first (nothing removed)."""
    return _preferred_first(PREFERRED_KEX, [alg.decode() for alg in get_default_kex_algs()
                                            if not alg.startswith(b"gss-")])


def encryption_algs() -> list[str]:
    """asyncssh's default ciphers with AES-GCM first (nothing removed)."""
    return _preferred_first(PREFERRED_CIPHERS, [alg.decode() for alg in get_default_encryption_algs()])


def quiet_asyncssh_logging() -> None:
    """Make asyncssh check the logging level before formatting (idempotent, process-wide)."""
    if getattr(SSHLogger.log, "_kadeploy_quiet", False):
        return
    original_log = SSHLogger.log
    original_packet = SSHPacketLogger._log_packet

    def log(self: SSHLogger, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if self.isEnabledFor(level):
            original_log(self, level, msg, *args, **kwargs)

    def log_packet(self: SSHPacketLogger, *args: Any, **kwargs: Any) -> None:
        # packets are only logged at debug level 3 and logging.DEBUG (SSHLogger.packet)
        logger = self.logger
        if SSHLogger._debug_level >= 3 and logger.isEnabledFor(logging.DEBUG):
            original_packet(self, *args, **kwargs)

    log._kadeploy_quiet = True  # type: ignore[attr-defined]
    SSHLogger.log = log  # type: ignore[method-assign]
    SSHPacketLogger._log_packet = log_packet  # type: ignore[method-assign]


__all__ = ["PREFERRED_CIPHERS", "PREFERRED_KEX", "encryption_algs", "kex_algs", "quiet_asyncssh_logging"]
