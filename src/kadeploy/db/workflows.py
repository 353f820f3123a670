"""Persisted workflows and crash recovery (room `db`).

A workflow row is written, together with its node claims, in the transaction
that starts it, and updated when it ends. After a crash (`kill -9`, power
loss) the rows still `running` are the operations that were interrupted:
`recover_interrupted` marks them `aborted`, sets their nodes' state to
`aborted` and releases their claims, so the nodes can be deployed again as
soon as the server is back.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select, true
from sqlalchemy.orm import Session

from kadeploy.db import locking, nodes
from kadeploy.db.models import NodeClaimRow, WorkflowRow
from kadeploy.errors import ErrorCode, KadeployError
from kadeploy.states import FINISHED_WORKFLOW_STATES, DbNodeState, WorkflowState



@dataclass
class WorkflowStart:
    """What the server records when it launches an operation."""

    wid: str
    kind: str                    # deploy, reboot, power, power-status
    user: str
    nodes: list[str]
    force: bool = False
    node_state: str = ""         # state written on the claimed nodes (`deploying`...), "" for none
    environment: dict[str, Any] | None = None
    start_time: float = field(default_factory=time.time)


def start_workflow(session: Session, start: WorkflowStart) -> tuple[list[str], list[str]]:
    """Insert the workflow and claim its nodes atomically; return (claimed, discarded).

    Raises error 14 (and so rolls the whole transaction back) when every node
    is already held by other workflows.
    """
    claimed, discarded = locking.claim_nodes(session, start.wid, start.nodes, force=start.force,
                                             now=start.start_time)
    if not claimed:
        raise KadeployError(ErrorCode.NOTHING_MODIFIED,
                            "All the nodes have been discarded: they are already involved in another operation")
    session.add(WorkflowRow(wid=start.wid, kind=start.kind, user=start.user, state=WorkflowState.RUNNING,
                            start_time=start.start_time, end_time=None, nodes=claimed, result=None,
                            error=None, environment=start.environment))
    if start.node_state:
        nodes.set_states(session, {host: start.node_state for host in claimed}, user=start.user,
                         now=start.start_time)
    return claimed, discarded


def finish_workflow(session: Session, wid: str, state: str, *, node_states: Mapping[str, str] | None = None,
                    result: dict[str, Any] | None = None, error: str | None = None,
                    user: str | None = None, environment: dict[str, Any] | None = None,
                    env_id: int | None = None, destructive: bool | None = None,
                    now: float | None = None) -> None:
    """Record the end of `wid`, set its nodes' final states and release its claims."""
    now = time.time() if now is None else now
    row = session.get(WorkflowRow, wid)
    if row is not None:
        row.state = state
        row.end_time = now
        row.result = result
        row.error = error
    held = set(locking.claims(session, row.nodes if row is not None else None).items())
    still_mine = {host for host, holder in held if holder == wid}
    if node_states:
        # A node taken over with --force by another workflow keeps that workflow's state.
        mine = {host: st for host, st in node_states.items() if host in still_mine}
        nodes.set_states(session, mine, user=user, environment=environment, env_id=env_id,
                         destructive=destructive, now=now)
    locking.release_nodes(session, wid)


def recover_interrupted(session: Session, *, now: float | None = None) -> list[str]:
    """Abort the workflows left `running` by a dead server; return their ids."""
    now = time.time() if now is None else now
    interrupted = list(session.scalars(select(WorkflowRow).where(WorkflowRow.state == WorkflowState.RUNNING)))
    for row in interrupted:
        held = [host for host, holder in locking.claims(session, row.nodes).items() if holder == row.wid]
        nodes.set_states(session, {host: DbNodeState.ABORTED for host in held}, now=now)
        row.state = WorkflowState.ABORTED
        row.end_time = now
        row.error = "The server stopped while the operation was running"
    running = {row.wid for row in interrupted}
    # Claims of workflows that are not running any more (interrupted or unknown) are stale.
    live = set(session.scalars(select(WorkflowRow.wid).where(WorkflowRow.state == WorkflowState.RUNNING)))
    session.execute(delete(NodeClaimRow).where(NodeClaimRow.wid.not_in(live) if live else true()))
    return sorted(running)


def get_workflow(session: Session, wid: str) -> WorkflowRow | None:
    """The persisted record of `wid`, if any."""
    return session.get(WorkflowRow, wid)


def list_workflows(session: Session, *, states: Iterable[str] | None = None) -> list[WorkflowRow]:
    """Persisted workflows, oldest first, optionally only in `states`."""
    statement = select(WorkflowRow).order_by(WorkflowRow.start_time)
    if states is not None:
        statement = statement.where(WorkflowRow.state.in_(list(states)))
    return list(session.scalars(statement))


def delete_finished_before(session: Session, threshold: float) -> list[str]:
    """Delete finished workflows that ended before `threshold` (autoclean); return their ids."""
    rows = list(session.scalars(select(WorkflowRow.wid).where(
        WorkflowRow.state.in_(FINISHED_WORKFLOW_STATES), WorkflowRow.end_time < threshold)))
    if rows:
        session.execute(delete(WorkflowRow).where(WorkflowRow.wid.in_(rows)))
    return rows


def delete_workflow(session: Session, wid: str) -> None:
    """Forget a finished workflow (its claims, if any, are released too)."""
    locking.release_nodes(session, wid)
    session.execute(delete(WorkflowRow).where(WorkflowRow.wid == wid))
