"""Errors users can cause, with the Kadeploy3 application error codes.

Every room raises `KadeployError` (or a subclass) for anything a user or an
administrator can fix; the HTTP edge maps `code` to `X-Application-Error-Code`
and clients map it to their exit status. Nothing here imports other rooms.
"""

from __future__ import annotations

from enum import IntEnum


class ErrorCode(IntEnum):
    """Kadeploy3 `APIError` codes (reference section 1.3)."""

    BAD_CONFIGURATION = 0
    INVALID_WORKFLOW_ID = 1
    INVALID_NODELIST = 2
    INVALID_CLIENT = 3
    INVALID_OPTION = 4
    INVALID_FILE = 5
    INVALID_RIGHTS = 6
    INVALID_ENVIRONMENT = 7
    INVALID_CUSTOMOP = 8
    INVALID_VLAN = 9
    EXISTING_ELEMENT = 10
    CONFLICTING_ELEMENTS = 11
    MISSING_OPTION = 12
    CONFLICTING_OPTIONS = 13
    NOTHING_MODIFIED = 14
    EXECUTE_ERROR = 15
    DATABASE_ERROR = 20
    CACHE_ERROR = 21
    CACHE_FULL = 22
    DESTRUCTIVE_ENVIRONMENT = 30


class KadeployError(Exception):
    """An error with a message a user can act on and a Kadeploy3 error code."""

    def __init__(self, code: ErrorCode | int, message: str) -> None:
        super().__init__(message)
        self.code = ErrorCode(code)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(KadeployError):
    """A configuration file is wrong; the message names the file and the key path."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.BAD_CONFIGURATION, message)
