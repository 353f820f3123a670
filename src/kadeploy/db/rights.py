"""Rights (`rights` table: user, node, part; `*` wildcards) (room `db`, reference section 9)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from kadeploy.db.models import RightRow

ANY = "*"


def add_rights(session: Session, user: str, nodes: Iterable[str], parts: Iterable[str]) -> list[tuple[str, str]]:
    """Grant `user` each partition of `parts` on each node of `nodes`; return the (node, part) added."""
    wanted = {(node, part) for node in nodes for part in parts}
    existing = {(row.node, row.part) for row in session.scalars(select(RightRow).where(RightRow.user == user))}
    added = sorted(wanted - existing)
    session.add_all(RightRow(user=user, node=node, part=part) for node, part in added)
    return added


def list_rights(session: Session, user: str | None = None, nodes: Iterable[str] | None = None
                ) -> dict[str, dict[str, list[str]]]:
    """Rights as Kadeploy3 shows them: {user: {node or "*": [parts or "*"]}}."""
    statement = select(RightRow).order_by(RightRow.user, RightRow.node, RightRow.part)
    if user is not None:
        statement = statement.where(RightRow.user == user)
    if nodes is not None:
        # a right on every node ("*") applies to the nodes asked about too
        statement = statement.where(RightRow.node.in_([*nodes, "*"]))
    result: dict[str, dict[str, list[str]]] = {}
    for row in session.scalars(statement):
        result.setdefault(row.user, {}).setdefault(row.node, []).append(row.part)
    return result


def delete_rights(session: Session, user: str, nodes: Iterable[str] | None = None,
                  parts: Iterable[str] | None = None) -> int:
    """Remove rights of `user` (all, or only on `nodes` / `parts`); return how many rows went."""
    statement = delete(RightRow).where(RightRow.user == user)
    if nodes is not None:
        statement = statement.where(RightRow.node.in_(list(nodes)))
    if parts is not None:
        statement = statement.where(RightRow.part.in_(list(parts)))
    return session.execute(statement).rowcount or 0


def other_users_on(session: Session, nodes: Iterable[str], user: str) -> dict[str, list[str]]:
    """Users other than `user` holding rights on `nodes` (or `*`): {user: [nodes]}."""
    node_list = list(nodes)
    statement = select(RightRow).where(RightRow.user != user, RightRow.node.in_(node_list + [ANY]))
    found: dict[str, list[str]] = {}
    for row in session.scalars(statement):
        found.setdefault(row.user, []).append(row.node)
    return found


def nodes_without_right(session: Session, user: str, nodes: Iterable[str], part: str | None = None) -> list[str]:
    """Nodes of `nodes` where `user` has no right (on any partition, or on `part`)."""
    rows = list(session.scalars(select(RightRow).where(RightRow.user == user)))
    granted: dict[str, set[str]] = {}
    for row in rows:
        granted.setdefault(row.node, set()).add(row.part)
    missing = []
    for node in nodes:
        parts = granted.get(node, set()) | granted.get(ANY, set())
        if not parts or (part is not None and ANY not in parts and part not in parts):
            missing.append(node)
    return missing
