"""Node states (`nodes` table: state, last user, last environment) (room `db`)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from kadeploy.db.models import NodeRow


@dataclass(frozen=True)
class NodeState:
    """What `GET /nodes` shows for one node."""

    hostname: str
    state: str
    user: str
    environment: dict[str, Any] | None
    destructive: bool
    date: float

    def to_api(self) -> dict[str, Any]:
        """Kadeploy3's shape: {state, user, environment: {name, version, user}}.

        As its LEFT JOIN (common/nodes.rb `get_states`), a node without a recorded environment
        still has the three environment keys, each null: `kanodes3 -s` prints them.
        """
        environment = self.environment or {}
        return {"state": self.state, "user": self.user,
                "environment": {key: environment.get(key) for key in ("name", "version", "user")}}


def set_states(session: Session, states: Mapping[str, str], *, user: str | None = None,
               environment: dict[str, Any] | None = None, env_id: int | None = None,
               destructive: bool | None = None, now: float | None = None) -> None:
    """Set each node's state (`deploying`, `deployed`...); user/environment are updated when given."""
    now = time.time() if now is None else now
    if not states:
        return
    existing = {row.hostname: row for row in session.scalars(
        select(NodeRow).where(NodeRow.hostname.in_(list(states))))}
    for hostname, state in states.items():
        row = existing.get(hostname)
        if row is None:
            row = NodeRow(hostname=hostname, state=state, user=user or "", environment=environment,
                          env_id=env_id, destructive=bool(destructive), date=now)
            session.add(row)
            continue
        row.state = state
        row.date = now
        if user is not None:
            row.user = user
        if environment is not None:
            row.environment = environment
            row.env_id = env_id
        if destructive is not None:
            row.destructive = destructive


def get_states(session: Session, hostnames: Iterable[str] | None = None) -> dict[str, NodeState]:
    """Known node states, by hostname (nodes never operated on are absent)."""
    statement = select(NodeRow)
    if hostnames is not None:
        statement = statement.where(NodeRow.hostname.in_(list(hostnames)))
    return {row.hostname: NodeState(row.hostname, row.state, row.user, row.environment, row.destructive, row.date)
            for row in session.scalars(statement)}
