"""Environment catalogue storage (`environments` table) (room `db`).

Visibility rules live in the server; this module stores and finds rows. An
environment is handled as the hash Kadeploy3 shows on the API (reference 1.4,
section 4), stored field by field with JSON columns for image, preinstall,
postinstalls, boot and options.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kadeploy.db.models import EnvironmentRow
from kadeploy.errors import ErrorCode, KadeployError

_SCALARS = ("description", "author", "visibility", "destructive", "os", "filesystem", "partition_type", "multipart")


def to_api(row: EnvironmentRow) -> dict[str, Any]:
    """The Kadeploy3 hash of a recorded environment (with `id` and `user`)."""
    env: dict[str, Any] = {"id": row.id, "name": row.name, "version": row.version, "description": row.description,
                           "author": row.author, "visibility": row.visibility, "destructive": row.destructive,
                           "os": row.os, "image": dict(row.image)}
    if row.preinstall:
        env["preinstall"] = dict(row.preinstall)
    if row.postinstalls:
        env["postinstalls"] = [dict(item) for item in row.postinstalls]
    if row.boot:
        env["boot"] = dict(row.boot)
    if row.filesystem:
        env["filesystem"] = row.filesystem
    env["partition_type"] = row.partition_type
    env["multipart"] = row.multipart
    if row.options:
        env["options"] = dict(row.options)
    env["user"] = row.user
    return env


def add_environment(session: Session, description: dict[str, Any], user: str) -> EnvironmentRow:
    """Store a validated description for `user`; error 10 if (name, version, user) exists."""
    name = description["name"]
    version = int(description.get("version", 1))
    if session.scalar(select(EnvironmentRow.id).where(EnvironmentRow.name == name, EnvironmentRow.version == version,
                                                      EnvironmentRow.user == user)) is not None:
        raise KadeployError(ErrorCode.EXISTING_ELEMENT,
                            f"The environment {name!r} version {version} of user {user!r} already exists")
    row = EnvironmentRow(name=name, version=version, user=user, image=dict(description.get("image") or {}),
                         preinstall=description.get("preinstall"), postinstalls=list(description.get("postinstalls") or []),
                         boot=dict(description.get("boot") or {}), options=dict(description.get("options") or {}),
                         created_at=time.time(),
                         description=str(description.get("description", "")), author=str(description.get("author", "")),
                         visibility=str(description.get("visibility", "private")),
                         destructive=bool(description.get("destructive", False)), os=str(description.get("os", "linux")),
                         filesystem=str(description.get("filesystem", "") or ""),
                         partition_type=int(description.get("partition_type", 0) or 0),
                         multipart=bool(description.get("multipart", False)))
    session.add(row)
    session.flush()
    return row


def find_environments(session: Session, *, name: str | None = None, users: Iterable[str] | None = None,
                      version: int | None = None, last: bool = False, name_like: bool = False) -> list[EnvironmentRow]:
    """Rows matching the filters; `last` keeps only the highest version per (name, user)."""
    statement = select(EnvironmentRow)
    if name is not None:
        statement = statement.where(EnvironmentRow.name.like(name) if name_like else EnvironmentRow.name == name)
    if users is not None:
        statement = statement.where(EnvironmentRow.user.in_(list(users)))
    if version is not None:
        statement = statement.where(EnvironmentRow.version == version)
    rows = list(session.scalars(statement.order_by(EnvironmentRow.user, EnvironmentRow.name, EnvironmentRow.version)))
    if last and version is None:
        latest: dict[tuple[str, str], EnvironmentRow] = {}
        for row in rows:
            key = (row.user, row.name)
            if key not in latest or row.version > latest[key].version:
                latest[key] = row
        rows = sorted(latest.values(), key=lambda r: (r.user, r.name))
    return rows


def max_version(session: Session, name: str, user: str) -> int | None:
    """Highest version of (name, user), or None."""
    return session.scalar(select(func.max(EnvironmentRow.version)).where(EnvironmentRow.name == name,
                                                                         EnvironmentRow.user == user))


def update_fields(row: EnvironmentRow, **fields: Any) -> None:
    """Change scalar or JSON fields of a row (visibility, destructive, image...)."""
    for key, value in fields.items():
        if key not in _SCALARS and key not in ("image", "preinstall", "postinstalls", "boot", "options"):
            raise ValueError(f"unknown environment field {key}")
        setattr(row, key, value)
