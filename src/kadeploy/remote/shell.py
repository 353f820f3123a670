"""Building the command lines sent to nodes: env prefixes and the process-group wrapper.

Pure functions, no I/O, so that quoting can be unit-tested. Everything a user
may supply (variable values, commands given to `sh -c`) is passed through
`shlex.quote`; variable names that are not shell identifiers are refused.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping

from kadeploy.errors import ErrorCode, KadeployError

# First line the wrapper writes on stderr; the executor strips it and keeps the pgid
# so that a timeout or a cancellation can kill the whole remote process group.
PGID_MARKER = "KADEPLOY-PGID"

_VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# $0 is a label; $1 is the user's command, evaluated as one argument so that its
# own syntax cannot interfere with the wrapper (eval rather than `sh -c` saves an
# exec per node and per command).  setsid -w forks when needed, so this sh is the
# leader of a new process group and `$$` is that group's id.
_WRAPPER = f'echo "{PGID_MARKER} $$" >&2; eval "$1"'


def env_prefix(env: Mapping[str, str] | None) -> str:
    """Render `VAR='value' ` prefixes (Kadeploy3 section 3.7 style) for a command line."""
    if not env:
        return ""
    parts = []
    for name, value in env.items():
        if not _VARIABLE_NAME.match(name):
            raise KadeployError(ErrorCode.INVALID_OPTION, f"Invalid environment variable name for a node command: {name!r}")
        parts.append(f"{name}={shlex.quote(str(value))}")
    return " ".join(parts) + " "


def wrap_command(command: str, env: Mapping[str, str] | None = None) -> str:
    """The full line given to sshd: run `command` (with `env`) in its own process group.

    The variables are exported in front of the inner shell, so that they reach
    every process of the command, and the command text itself is one quoted
    argument: nothing in it is interpreted by the wrapper.
    """
    return f"{env_prefix(env)}exec setsid -w sh -c {shlex.quote(_WRAPPER)} kadeploy {shlex.quote(command)}"


def kill_command(pgid: int) -> str:
    """The command that kills a remote process group started by `wrap_command`."""
    if pgid <= 1:
        raise ValueError(f"refusing to kill process group {pgid}")
    return f"kill -s KILL -- -{int(pgid)} 2>/dev/null; exit 0"


def parse_pgid(line: bytes) -> int | None:
    """Read the wrapper's first stderr line; None when it is not the marker."""
    text = line.decode("ascii", "replace").strip()
    prefix = PGID_MARKER + " "
    if not text.startswith(prefix):
        return None
    try:
        return int(text[len(prefix):])
    except ValueError:
        return None
