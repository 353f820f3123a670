"""Console workflows (`C-` ids) behind a pluggable session factory (room `server`, reference 6.4).

The HTTP layer keeps the registry of console workflows; opening the TCP
listener and bridging it to the console command's PTY is the job of a
`ConsoleFactory` (a protocol of `kadeploy.operations`) that the daemon passes
in `Services`; the product's is `kadeploy.steps.console.ConsoleFactory`.
Without a factory, POST /console answers error 15.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from kadeploy.errors import ErrorCode, KadeployError
from kadeploy.operations import ConsoleFactory, ConsoleRequest, ConsoleSession

__all__ = ["ConsoleFactory", "ConsoleRegistry", "ConsoleSession", "ConsoleWorkflow"]


@dataclass
class ConsoleWorkflow:
    wid: str
    user: str
    node: str
    session: ConsoleSession
    start_time: float = field(default_factory=time.time)

    def info(self) -> dict[str, Any]:
        """Kadeploy3's `console_get` hash (server/kaconsole.rb), in its order: kanodes3 -c prints it.

        Only owners and admins see consoles here, so `attached` and `console_uri` are always shown
        while the console runs, as Kadeploy3 shows them to those users.
        """
        info: dict[str, Any] = {"id": self.wid, "user": self.user, "node": self.node}
        if self.session.error is None:
            info.update({"error": False, "attached": self.session.attached, "console_uri": self.session.uri})
        else:
            info["error"] = True
        info["time"] = round(time.time() - self.start_time, 2)
        return info


class ConsoleRegistry:
    """Open consoles by id."""

    def __init__(self, factory: ConsoleFactory | None) -> None:
        self.factory = factory
        self.consoles: dict[str, ConsoleWorkflow] = {}

    def _factory(self) -> ConsoleFactory:
        if self.factory is None:
            raise KadeployError(ErrorCode.EXECUTE_ERROR, "No console support is configured on this server")
        return self.factory

    def check(self, node: str) -> None:
        """Raise what opening `node`'s console would raise, and open nothing (a dry run)."""
        self._factory().check(node)

    async def open(self, wid: str, node: str, user: str) -> ConsoleWorkflow:
        session = await self._factory().open(ConsoleRequest(wid, node, user))
        console = ConsoleWorkflow(wid, user, node, session)
        self.consoles[wid] = console
        return console

    def get(self, wid: str) -> ConsoleWorkflow:
        console = self.consoles.get(wid)
        if console is None:
            raise KadeployError(ErrorCode.INVALID_WORKFLOW_ID, f"Console {wid!r} not found")
        return console

    async def close(self, wid: str) -> None:
        console = self.get(wid)
        await console.session.close()
        del self.consoles[wid]

    async def close_all(self) -> None:
        for wid in list(self.consoles):
            await self.close(wid)
