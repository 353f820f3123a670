"""SQLAlchemy 2 models of the server's database (room `db`; imports nothing but SQLAlchemy).

Kadeploy3's tables are kept by name and meaning, but every structured field is
a JSON column instead of Kadeploy3's `file|kind|md5` strings (reference 13.11),
and two tables are new: `workflows` (persisted so that a crash can be
recovered) and `node_claims` (one row per node held by a running workflow,
whose primary key makes node locking atomic, reference 13.9).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Boolean, Float, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base shared by the models and the Alembic migrations."""


class EnvironmentRow(Base):
    """A recorded environment; (name, version, user) is unique (reference section 4)."""

    __tablename__ = "environments"
    __table_args__ = (UniqueConstraint("name", "version", "user", name="uq_environments_name_version_user"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255))
    version: Mapped[int] = mapped_column(Integer, default=1)
    user: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, default="")
    author: Mapped[str] = mapped_column(String(255), default="")
    visibility: Mapped[str] = mapped_column(String(8), default="private")
    destructive: Mapped[bool] = mapped_column(Boolean, default=False)
    os: Mapped[str] = mapped_column(String(16), default="linux")
    image: Mapped[dict[str, Any]] = mapped_column(JSON)
    preinstall: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    postinstalls: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    boot: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    filesystem: Mapped[str] = mapped_column(String(32), default="")
    partition_type: Mapped[int] = mapped_column(Integer, default=0)
    multipart: Mapped[bool] = mapped_column(Boolean, default=False)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[float] = mapped_column(Float, default=0.0)


class RightRow(Base):
    """One right: `user` may use partition `part` of `node` (`*` wildcards, reference section 9)."""

    __tablename__ = "rights"
    __table_args__ = (UniqueConstraint("user", "node", "part", name="uq_rights_user_node_part"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user: Mapped[str] = mapped_column(String(255), index=True)
    node: Mapped[str] = mapped_column(String(255))
    part: Mapped[str] = mapped_column(String(255))


class LogRow(Base):
    """Statistics: one row per node per operation (reference section 8), plus md5 and digest."""

    __tablename__ = "log"
    __table_args__ = (Index("ix_log_hostname_start", "hostname", "start"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    wid: Mapped[str] = mapped_column(String(64), index=True)
    user: Mapped[str] = mapped_column(String(255))
    hostname: Mapped[str] = mapped_column(String(255))
    step1: Mapped[str] = mapped_column(String(64), default="")
    step2: Mapped[str] = mapped_column(String(64), default="")
    step3: Mapped[str] = mapped_column(String(64), default="")
    timeout_step1: Mapped[int] = mapped_column(Integer, default=0)
    timeout_step2: Mapped[int] = mapped_column(Integer, default=0)
    timeout_step3: Mapped[int] = mapped_column(Integer, default=0)
    retry_step1: Mapped[int] = mapped_column(Integer, default=0)
    retry_step2: Mapped[int] = mapped_column(Integer, default=0)
    retry_step3: Mapped[int] = mapped_column(Integer, default=0)
    start: Mapped[int] = mapped_column(Integer, index=True)
    step1_duration: Mapped[int] = mapped_column(Integer, default=0)
    step2_duration: Mapped[int] = mapped_column(Integer, default=0)
    step3_duration: Mapped[int] = mapped_column(Integer, default=0)
    env: Mapped[str] = mapped_column(String(300), default="")
    anonymous_env: Mapped[bool] = mapped_column(Boolean, default=False)
    md5: Mapped[str] = mapped_column(String(64), default="")
    digest: Mapped[str] = mapped_column(String(128), default="")
    success: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str] = mapped_column(Text, default="")
    # beyond Kadeploy3: [[implementation, micro-step, seconds], ...] in run order (kastat3 --steps)
    micro_steps: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)


class NodeRow(Base):
    """Last known state of a node (`deploying`, `deployed`, `aborted`...), its last user and environment."""

    __tablename__ = "nodes"

    hostname: Mapped[str] = mapped_column(String(255), primary_key=True)
    state: Mapped[str] = mapped_column(String(32))
    user: Mapped[str] = mapped_column(String(255), default="")
    env_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    environment: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    destructive: Mapped[bool] = mapped_column(Boolean, default=False)
    date: Mapped[float] = mapped_column(Float)


class WorkflowRow(Base):
    """A workflow (operation), persisted so that a server crash can be recovered at the next start."""

    __tablename__ = "workflows"

    wid: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    user: Mapped[str] = mapped_column(String(255), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)  # running, done, error, aborted
    start_time: Mapped[float] = mapped_column(Float)
    end_time: Mapped[float | None] = mapped_column(Float, nullable=True)
    nodes: Mapped[list[str]] = mapped_column(JSON, default=list)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    environment: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class NodeClaimRow(Base):
    """A node held by a running workflow; the primary key on hostname is the lock."""

    __tablename__ = "node_claims"

    hostname: Mapped[str] = mapped_column(String(255), primary_key=True)
    wid: Mapped[str] = mapped_column(String(64), index=True)
    claimed_at: Mapped[float] = mapped_column(Float)
