"""Micro-step durations in the statistics records (`log.micro_steps`, for kastat3 --steps).

Revision ID: 0002
Revises: 0001
Create Date: 2024-06-01
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("log") as batch:
        batch.add_column(sa.Column("micro_steps", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("log") as batch:
        batch.drop_column("micro_steps")
