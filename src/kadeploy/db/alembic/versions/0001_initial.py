"""Initial schema: environments, rights, log, nodes, workflows, node_claims.

Revision ID: 0001
Revises:
Create Date: 2024-01-01
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "environments",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("author", sa.String(255), nullable=False),
        sa.Column("visibility", sa.String(8), nullable=False),
        sa.Column("destructive", sa.Boolean, nullable=False),
        sa.Column("os", sa.String(16), nullable=False),
        sa.Column("image", sa.JSON, nullable=False),
        sa.Column("preinstall", sa.JSON, nullable=True),
        sa.Column("postinstalls", sa.JSON, nullable=False),
        sa.Column("boot", sa.JSON, nullable=False),
        sa.Column("filesystem", sa.String(32), nullable=False),
        sa.Column("partition_type", sa.Integer, nullable=False),
        sa.Column("multipart", sa.Boolean, nullable=False),
        sa.Column("options", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.UniqueConstraint("name", "version", "user", name="uq_environments_name_version_user"),
    )
    op.create_table(
        "rights",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("node", sa.String(255), nullable=False),
        sa.Column("part", sa.String(255), nullable=False),
        sa.UniqueConstraint("user", "node", "part", name="uq_rights_user_node_part"),
    )
    op.create_index("ix_rights_user", "rights", ["user"])
    op.create_table(
        "log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("wid", sa.String(64), nullable=False),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("hostname", sa.String(255), nullable=False),
        *[sa.Column(f"step{i}", sa.String(64), nullable=False) for i in (1, 2, 3)],
        *[sa.Column(f"timeout_step{i}", sa.Integer, nullable=False) for i in (1, 2, 3)],
        *[sa.Column(f"retry_step{i}", sa.Integer, nullable=False) for i in (1, 2, 3)],
        sa.Column("start", sa.Integer, nullable=False),
        *[sa.Column(f"step{i}_duration", sa.Integer, nullable=False) for i in (1, 2, 3)],
        sa.Column("env", sa.String(300), nullable=False),
        sa.Column("anonymous_env", sa.Boolean, nullable=False),
        sa.Column("md5", sa.String(64), nullable=False),
        sa.Column("digest", sa.String(128), nullable=False),
        sa.Column("success", sa.Boolean, nullable=False),
        sa.Column("error", sa.Text, nullable=False),
    )
    op.create_index("ix_log_wid", "log", ["wid"])
    op.create_index("ix_log_start", "log", ["start"])
    op.create_index("ix_log_hostname_start", "log", ["hostname", "start"])
    op.create_table(
        "nodes",
        sa.Column("hostname", sa.String(255), primary_key=True),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("env_id", sa.Integer, nullable=True),
        sa.Column("environment", sa.JSON, nullable=True),
        sa.Column("destructive", sa.Boolean, nullable=False),
        sa.Column("date", sa.Float, nullable=False),
    )
    op.create_table(
        "workflows",
        sa.Column("wid", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("start_time", sa.Float, nullable=False),
        sa.Column("end_time", sa.Float, nullable=True),
        sa.Column("nodes", sa.JSON, nullable=False),
        sa.Column("result", sa.JSON, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("environment", sa.JSON, nullable=True),
    )
    op.create_index("ix_workflows_user", "workflows", ["user"])
    op.create_index("ix_workflows_state", "workflows", ["state"])
    op.create_table(
        "node_claims",
        sa.Column("hostname", sa.String(255), primary_key=True),
        sa.Column("wid", sa.String(64), nullable=False),
        sa.Column("claimed_at", sa.Float, nullable=False),
    )
    op.create_index("ix_node_claims_wid", "node_claims", ["wid"])


def downgrade() -> None:
    for table in ("node_claims", "workflows", "nodes", "log", "rights", "environments"):
        op.drop_table(table)
