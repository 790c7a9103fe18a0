"""Where the window last sent started, for windows that keep the provider's prompt cache warm;
the conversation's revision, bumped by every edit of its history (an append planned on the
state before an edit is then refused, even when the edit left ``last_seq`` as it was); and the
cache-write tokens a provider reports with a response.

Three columns (the revision starts at 0); every row is kept.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

CONV = "chatledger_conversations"
USAGE = "chatledger_completions"


def upgrade() -> None:
    op.add_column(CONV, sa.Column("window_start", sa.Integer(), nullable=True))
    op.add_column(
        CONV, sa.Column("revision", sa.Integer(), nullable=False, server_default=sa.text("0"))
    )
    op.add_column(USAGE, sa.Column("cache_write_tokens", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table(CONV, table_kwargs={"sqlite_autoincrement": True}) as b:
        b.drop_column("revision")
        b.drop_column("window_start")
    with op.batch_alter_table(USAGE) as b:
        b.drop_column("cache_write_tokens")
