"""Client-side failures and the process exit status each one maps to.

Client room. Reference 1.3: the tools exit with the Kadeploy error code of an
application error, 2 for other HTTP errors, 3 for HTTP 500 and 1 otherwise.
"""

from __future__ import annotations

from kadeploy.errors import KadeployError

EXIT_GENERIC = 1
EXIT_HTTP_ERROR = 2
EXIT_SERVER_ERROR = 3


class ClientError(Exception):
    """A failure the user must see as one line, with the exit status to use."""

    def __init__(self, message: str, exit_status: int = EXIT_GENERIC) -> None:
        super().__init__(message)
        self.message = message
        self.exit_status = exit_status

    def __str__(self) -> str:
        return self.message


class ServerApplicationError(ClientError):
    """HTTP 400 with X-Application-Error-Code: the server refused the request."""

    def __init__(self, code: int, message: str) -> None:
        # common/http.rb: error("#{body.strip}\n[Kadeploy Error ##{code}]", code): the message, then the code
        # on its own line. Code 0 (BAD_CONFIGURATION) cannot be an exit status meaning failure.
        text = f"{message.strip()}\n[Kadeploy Error #{code}]" if message.strip() else f"[Kadeploy Error #{code}]"
        super().__init__(text, code if code > 0 else EXIT_GENERIC)
        self.code = code
        self.info = message


def exit_status_of(error: BaseException) -> int:
    """The exit status for any error the tools report (KadeployError code, or ClientError's)."""
    if isinstance(error, ClientError):
        return error.exit_status
    if isinstance(error, KadeployError):
        return int(error.code) if int(error.code) > 0 else EXIT_GENERIC
    return EXIT_GENERIC
