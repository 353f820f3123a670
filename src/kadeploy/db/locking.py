"""Atomic node locking (room `db`).

Kadeploy3 checked for nodes in a `*ing` state and then wrote `deploying` in a
second statement, so two overlapping deployments could both take a node, and
it guessed that a node stuck for 15 minutes was free (reference 5.7, 13.9).
Here a node belongs to a workflow while a `node_claims` row, whose primary key
is the hostname, says so: claiming is a single `INSERT ... ON CONFLICT DO
NOTHING` (PostgreSQL, SQLite) or `INSERT IGNORE` (MariaDB/MySQL) followed by
reading back which rows carry our workflow id, all inside the caller's
transaction. Whatever the interleaving, each node ends up with exactly one
workflow; the later request sees the taken nodes as discarded.

`force` (Kadeploy3's `--force`, "ignore the node busy check") moves the claim
of an already taken node to the new workflow. The earlier workflow is not
stopped (Kadeploy3 did not stop it either) but no longer holds the node, so its
end does not release a node another workflow now uses.

Claims are released when the workflow ends (`release_nodes`) or, after a
crash, by the recovery run at the next server start.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from sqlalchemy import delete, insert, select, update
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.orm import Session

from kadeploy.db.models import NodeClaimRow
from kadeploy.nodeset import sort_key


def _insert_ignoring_taken(session: Session, wid: str, hostnames: list[str], now: float) -> None:
    rows = [{"hostname": host, "wid": wid, "claimed_at": now} for host in hostnames]
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        statement = postgresql.insert(NodeClaimRow).values(rows).on_conflict_do_nothing()
    elif dialect in ("mysql", "mariadb"):
        statement = mysql.insert(NodeClaimRow).values(rows).prefix_with("IGNORE")
    elif dialect == "sqlite":
        statement = sqlite.insert(NodeClaimRow).values(rows).on_conflict_do_nothing()
    else:  # pragma: no cover - other backends are not supported by the server
        statement = insert(NodeClaimRow).values(rows)
    session.execute(statement)


def claim_nodes(session: Session, wid: str, nodes: Iterable[str], *, force: bool = False,
                now: float | None = None) -> tuple[list[str], list[str]]:
    """Claim `nodes` for `wid` in the session's transaction; return (claimed, discarded).

    Nodes are handled in one sorted order so that concurrent claimers lock rows
    in the same order (no lock-order deadlocks on MariaDB/PostgreSQL).
    """
    hostnames = sorted(set(nodes), key=sort_key)
    if not hostnames:
        return [], []
    now = time.time() if now is None else now
    if force:
        session.execute(update(NodeClaimRow).where(NodeClaimRow.hostname.in_(hostnames))
                        .values(wid=wid, claimed_at=now))
    _insert_ignoring_taken(session, wid, hostnames, now)
    mine = set(session.scalars(select(NodeClaimRow.hostname).where(
        NodeClaimRow.wid == wid, NodeClaimRow.hostname.in_(hostnames))))
    claimed = [host for host in hostnames if host in mine]
    discarded = [host for host in hostnames if host not in mine]
    return claimed, discarded


def release_nodes(session: Session, wid: str, nodes: Iterable[str] | None = None) -> int:
    """Release the claims `wid` still holds (all of them, or only `nodes`); return how many."""
    statement = delete(NodeClaimRow).where(NodeClaimRow.wid == wid)
    if nodes is not None:
        statement = statement.where(NodeClaimRow.hostname.in_(list(nodes)))
    return session.execute(statement).rowcount or 0


def claims(session: Session, nodes: Iterable[str] | None = None) -> dict[str, str]:
    """Current claims as {hostname: wid} (all nodes, or only `nodes`)."""
    statement = select(NodeClaimRow.hostname, NodeClaimRow.wid)
    if nodes is not None:
        statement = statement.where(NodeClaimRow.hostname.in_(list(nodes)))
    return {hostname: wid for hostname, wid in session.execute(statement)}
