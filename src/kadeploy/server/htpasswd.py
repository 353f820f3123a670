"""htpasswd files for HTTP Basic authentication (room `server`, reference 1.7).

Supported hashes: bcrypt (`$2y$`, `$2b$`, `$2a$`; Apache writes `$2y$`),
Apache MD5 (`$apr1$`) and `{SHA}`. Plain-text and crypt(3) DES entries are
refused: they would let anyone with read access to the file log in.
The file is re-read when its modification time changes, so administrators
can add users without restarting the server.

`check` takes as long for an unknown user as for a known one: the password
is verified against a dummy hash of the file's usual kind and cost, so that
the answer time does not tell which user names exist. It is slow (bcrypt)
and blocking: the server calls it from a thread pool, never on its event loop.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import bcrypt

from kadeploy.errors import ConfigError

_APR_ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _to64(value: int, length: int) -> str:
    out = []
    for _ in range(length):
        out.append(_APR_ALPHABET[value & 0x3F])
        value >>= 6
    return "".join(out)


def apr1_hash(password: str, salt: str) -> str:
    """Apache's MD5-crypt variant (`$apr1$salt$hash`)."""
    pw, salt_b = password.encode(), salt.encode()[:8]
    magic = b"$apr1$"
    alt = hashlib.md5(pw + salt_b + pw).digest()
    ctx = hashlib.md5(pw + magic + salt_b)
    for i in range(len(pw), 0, -16):
        ctx.update(alt[:min(16, i)])
    i = len(pw)
    while i:
        ctx.update(b"\x00" if i & 1 else pw[:1])
        i >>= 1
    final = ctx.digest()
    for i in range(1000):
        step = hashlib.md5()
        step.update(pw if i & 1 else final)
        if i % 3:
            step.update(salt_b)
        if i % 7:
            step.update(pw)
        step.update(final if i & 1 else pw)
        final = step.digest()
    encoded = ""
    for a, b, c in ((0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)):
        encoded += _to64((final[a] << 16) | (final[b] << 8) | final[c], 4)
    encoded += _to64(final[11], 2)
    return f"$apr1${salt_b.decode()}${encoded}"


def verify_hash(password: str, hashed: str) -> bool:
    """Check `password` against one htpasswd hash."""
    if hashed.startswith(("$2y$", "$2b$", "$2a$")):
        candidate = "$2b$" + hashed[4:]
        try:
            return bcrypt.checkpw(password.encode(), candidate.encode())
        except ValueError:
            return False
    if hashed.startswith("$apr1$"):
        salt = hashed.split("$")[2]
        return hmac.compare_digest(apr1_hash(password, salt), hashed)
    if hashed.startswith("{SHA}"):
        digest = base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()
        return hmac.compare_digest(digest, hashed[5:])
    return False


class HtpasswdFile:
    """user -> hash, from an htpasswd file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime: float | None = None
        self._entries: dict[str, str] = {}
        self._dummy = ""
        self._load()

    def _load(self) -> None:
        try:
            stat = self.path.stat()
            if stat.st_mtime == self._mtime:
                return
            text = self.path.read_text()
        except OSError as exc:
            raise ConfigError(f"server.conf: authentication/http_basic/dbfile: cannot read {self.path}: "
                              f"{exc.strerror}") from None
        entries = {}
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#") and ":" in line:
                user, hashed = line.split(":", 1)
                entries[user] = hashed.strip()
        self._entries, self._mtime = entries, stat.st_mtime
        self._dummy = dummy_hash(entries.values())

    def check(self, user: str, password: str) -> bool:
        """True if `user` exists and `password` matches its hash; as slow for unknown users."""
        try:
            self._load()
        except ConfigError:
            verify_hash(password, self._dummy)
            return False
        hashed = self._entries.get(user)
        if hashed is None:
            verify_hash(password, self._dummy)
            return False
        return verify_hash(password, hashed)


def dummy_hash(hashes: Iterable[str]) -> str:
    """A hash of a random password, of the kind and cost most entries have (bcrypt cost 12 if none).

    Verifying a password against it costs what verifying a real entry costs.
    """
    kinds: Counter[str] = Counter()
    for hashed in hashes:
        if hashed.startswith(("$2y$", "$2b$", "$2a$")) and hashed[4:6].isdigit():
            kinds["bcrypt:" + hashed[4:6]] += 1
        elif hashed.startswith("$apr1$"):
            kinds["apr1"] += 1
        elif hashed.startswith("{SHA}"):
            kinds["sha"] += 1
    kind = kinds.most_common(1)[0][0] if kinds else "bcrypt:12"
    secret = secrets.token_hex(16)
    if kind == "apr1":
        return apr1_hash(secret, secrets.token_hex(4))
    if kind == "sha":
        return "{SHA}" + base64.b64encode(hashlib.sha1(secret.encode()).digest()).decode()
    rounds = min(max(int(kind.split(":")[1]), 4), 31)
    return bcrypt.hashpw(secret.encode(), bcrypt.gensalt(rounds=rounds)).decode()
