"""A fork's lineage: the conversation it was copied from and the last seq they share.

Two nullable columns on ``chatledger_conversations``; every row is kept (none is a fork).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

CONV = "chatledger_conversations"


def upgrade() -> None:
    op.add_column(CONV, sa.Column("parent_id", sa.String(255), nullable=True))
    op.add_column(CONV, sa.Column("forked_at", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table(CONV, table_kwargs={"sqlite_autoincrement": True}) as b:
        b.drop_column("forked_at")
        b.drop_column("parent_id")
