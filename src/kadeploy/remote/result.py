"""What one command did on one node: the unit every executor call returns per node."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class CommandResult:
    """Outcome of one command on one node.

    `error` is set when the command could not run to completion for a reason
    that is not the command's own exit status (connection refused, handshake
    timeout, command timeout, channel lost); `exit_status` is then usually None.
    """

    hostname: str
    exit_status: int | None
    stdout: str = ""
    stderr: str = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the command ran and exited with status 0."""
        return self.error is None and self.exit_status == 0

    @property
    def reason(self) -> str:
        """The text to report for a failed node: the error, else the stderr, else the status."""
        if self.error is not None:
            return self.error
        if self.stderr.strip():
            return self.stderr.strip()
        return f"exit status {self.exit_status}"
