"""The console factory kadeploy3d plugs into POST /console (reference 6.4).

Runs the cluster's `remoteops/console` command (or the node's command.conf
override) in a PTY behind a TCP listener. Unlike Kadeploy3, whose listener
accepted anybody who found the port, the session requires a one-time token
that only the workflow's owner receives in the POST answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kadeploy.boot.console import ConsoleSession, new_token
from kadeploy.errors import ErrorCode, KadeployError
from kadeploy.operations import ConsoleRequest

if TYPE_CHECKING:
    from kadeploy.steps.runner import EngineRunner


class BridgedConsole:
    """A started `ConsoleSession` with the published URI and token."""

    def __init__(self, session: ConsoleSession, uri: str, token: str) -> None:
        self.session = session
        self.uri = uri
        self.token = token

    @property
    def attached(self) -> bool:
        return self.session.attached

    @property
    def error(self) -> str | None:
        return self.session.error

    async def close(self) -> None:
        await self.session.close()


class ConsoleFactory:
    """Opens console sessions using the runner's per-cluster command tables."""

    def __init__(self, runner: EngineRunner) -> None:
        self.runner = runner

    def check(self, node: str) -> str:
        """The console command of `node`; the error `open` would raise if it has none (a dry run stops here)."""
        info = self.runner.cfg.nodes.get(node)
        if info is None:
            raise KadeployError(ErrorCode.INVALID_NODELIST, f"Unknown node {node}")
        invocation = self.runner.command_table(info.cluster).single("console", node)
        if invocation is None or not invocation.command:
            raise KadeployError(ErrorCode.EXECUTE_ERROR, f"No console command is configured for {node}")
        return str(invocation.command)

    async def open(self, request: ConsoleRequest) -> BridgedConsole:
        cfg = self.runner.cfg
        command = self.check(request.node)
        token = new_token()
        host = cfg.server.network.server_hostname
        bind = "127.0.0.1" if cfg.server.security.local_only else "0.0.0.0"
        session = ConsoleSession(command, token, bind=bind)
        port = await session.start()
        return BridgedConsole(session, f"tcp://{host}:{port}", token)
