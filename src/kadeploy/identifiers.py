"""Validators of the identifiers users send: user names, VLAN ids, environment names.

These values end up in administrators' command templates (`set_cmd`'s
`USER` and `VLAN_ID`), in file names (PXE user files `pxe-<user>--<name>`),
in host names (`<node>-kavlan-<VLAN>`) and in the database; quoting protects
the shell, not the argument vector of the administrator's script nor a path.
So they are checked where they enter (the API edge, authentication, the
catalogue): a small character set, a length bound, never a path separator,
never a leading `-` (it would read as an option), never a control or
bidirectional character (they make a name display as another one in logs and
listings). Each checker returns the value or raises `KadeployError` with the
code the API answers and a message naming the field and what is allowed.

Imports only `kadeploy.errors` and `kadeploy.vlan`, so any room may call them.
"""

from __future__ import annotations

import re
import unicodedata

from kadeploy.errors import ErrorCode, KadeployError
from kadeploy.vlan import check_vlan_id

__all__ = ["MAX_ENVIRONMENT_NAME", "MAX_USER_NAME", "check_environment_name", "check_user_name",
           "check_vlan_id", "has_unsafe_characters"]

#: POSIX login names are at most 32 bytes, LDAP uids a little more: 64 covers both
MAX_USER_NAME = 64
#: Kadeploy3's `environments.name` column is a varchar(255)
MAX_ENVIRONMENT_NAME = 255

# A first character that is a letter, digit or '_' (never '-' nor '.'), then the
# characters POSIX portable names allow, plus '@' for realm-qualified users.
_USER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._@-]*")
# Environment names as Grid'5000 writes them (`debian12-x64-min`, `my_env.v2`, `alpine+k3s`).
_ENVIRONMENT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]*")


def has_unsafe_characters(value: str) -> bool:
    """Whether `value` holds a control character (Cc, Cf: also the bidirectional overrides) or a separator
    other than the plain space (line and paragraph separators)."""
    return any(unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") for char in value)


def _shown(value: str) -> str:
    """The value as a message may show it: escaped (no control character reaches a terminal), cut short."""
    return ascii(value if len(value) <= 80 else value[:80] + "...")


def _check(value: object, what: str, pattern: re.Pattern[str], max_length: int, allowed: str,
           code: ErrorCode) -> str:
    if not isinstance(value, str) or not value:
        raise KadeployError(code, f"Invalid {what}: a non-empty string is expected")
    if len(value) > max_length:
        raise KadeployError(code, f"Invalid {what} {_shown(value)}: at most {max_length} characters")
    if "/" in value or "\\" in value:
        raise KadeployError(code, f"Invalid {what} {_shown(value)}: no path separator allowed")
    if has_unsafe_characters(value):
        raise KadeployError(code, f"Invalid {what} {_shown(value)}: control or bidirectional characters")
    if not pattern.fullmatch(value):
        raise KadeployError(code, f"Invalid {what} {_shown(value)}: {allowed}")
    return value


def check_user_name(value: object, what: str = "user name") -> str:
    """A user name (authenticated identity, owner of an environment, subject of rights)."""
    return _check(value, what, _USER_NAME, MAX_USER_NAME,
                  "letters, digits, '.', '_', '@' and '-', not starting with '.' or '-'", ErrorCode.INVALID_OPTION)


def check_environment_name(value: object, what: str = "environment name") -> str:
    """The name of an environment being recorded or described."""
    return _check(value, what, _ENVIRONMENT_NAME, MAX_ENVIRONMENT_NAME,
                  "letters, digits, '.', '_', '+' and '-', not starting with '.', '+' or '-'",
                  ErrorCode.INVALID_ENVIRONMENT)
