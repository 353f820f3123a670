"""Long-lived commands on many nodes (the broadcast's relays): started flat or through the tree.

`Executor.start_many` returns a `Launch`: `await launch.start(hostname,
timeout)` gives that node's running command as a `process.NodeProcess` (or
raises ConnectError with the reason it could not start), `await
launch.close()` at the end. Flat (`FlatLaunch`) is `Executor.start` per node:
one SSH channel each, exactly as before. Tree (`TreeLaunch`) is one stream run
of `remote/tree.py` that stays up until every node's command has ended or was
killed: the server holds at most `tree_arity` SSH connections, as for the
tree's other runs.

Each node's command is the shared `command` followed by its own argument,
shell-quoted (a relay's JSON configuration): the shared part, the relay's
source, is sent once per hop, not once per node in every message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from kadeploy.remote.process import NodeProcess
from kadeploy.remote.tree import TreeRun

if TYPE_CHECKING:
    from kadeploy.remote.executor import Executor

log = logging.getLogger("kadeploy.remote")

#: how long `close` waits for a tree stream run to end once every stream was ended or killed
CLOSE_TIMEOUT = 30.0


def node_command(command: str, arg: str | None) -> str:
    """The command one node runs: the shared `command`, then its own argument shell-quoted."""
    return command if arg is None else f"{command} {shlex.quote(arg)}"


class Launch(Protocol):
    """Long-lived commands being started on a set of nodes (see the module's docstring)."""

    mode: str

    async def start(self, hostname: str, timeout: float) -> NodeProcess: ...
    async def close(self) -> None: ...


class FlatLaunch:
    """Each node's command on its own SSH channel from the server (`Executor.start`)."""

    mode = "flat"

    def __init__(self, executor: Executor, hosts: Mapping[str, str], command: str,
                 args: Mapping[str, str | None]) -> None:
        self._executor = executor
        self._hosts = hosts
        self._command = command
        self._args = args

    async def start(self, hostname: str, timeout: float) -> NodeProcess:
        """The node's command running; raises ConnectError, or TimeoutError after `timeout`."""
        command = node_command(self._command, self._args.get(hostname))
        return await asyncio.wait_for(self._executor.start(hostname, self._hosts[hostname], command), timeout)

    async def close(self) -> None:
        """Nothing held beyond the processes, which their driver stops."""


class TreeLaunch:
    """Every node's command started by the tree's agents, in one stream run."""

    mode = "tree"

    def __init__(self, run: TreeRun) -> None:
        self.run = run
        self._task = asyncio.ensure_future(run.run())

    async def start(self, hostname: str, timeout: float) -> NodeProcess:
        """The node's command, once its agent started it; raises ConnectError when the node ended first.

        `timeout` is not applied: the node waits its turn in the tree's queue, and
        the run decides every node (started, failed, lost, or not reached) within
        its own connect and stall bounds."""
        stream = self.run.streams[hostname]
        await stream.wait_started()
        return stream

    async def close(self) -> None:
        """End the run: nodes still queued are not started, streams still running get EOF; the run is
        killed (every first-level agent, hence every command) if it has not ended after CLOSE_TIMEOUT."""
        self.run.drain("Not started: the broadcast ended before this node's turn")
        done, _ = await asyncio.wait([self._task], timeout=CLOSE_TIMEOUT)
        if not done:
            log.warning("tree stream run still up %gs after its streams were stopped: killed", CLOSE_TIMEOUT)
            self._task.cancel()
            await asyncio.wait([self._task], timeout=CLOSE_TIMEOUT)
        if self._task.done() and not self._task.cancelled():
            with contextlib.suppress(Exception):
                exception = self._task.exception()
                if exception is not None:
                    log.warning("tree stream run failed: %r", exception)


__all__ = ["FlatLaunch", "Launch", "TreeLaunch", "node_command"]
