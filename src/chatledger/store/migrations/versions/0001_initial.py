"""The first released schema: conversations, messages, summaries, the usage ledger.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

LongText = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
Timestamp = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
BigKey = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
MYSQL: dict[str, Any] = {
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
    "mysql_engine": "InnoDB",
}
KEYED = sa.text("idempotency_key IS NOT NULL")


def upgrade() -> None:
    op.create_table(
        "chatledger_conversations",
        sa.Column("pk", BigKey, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(255), nullable=False),
        sa.Column("owner", sa.String(255), nullable=True),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("encoding", sa.String(32), nullable=False),
        sa.Column("token_profile", sa.String(128), nullable=False),
        sa.Column("title", sa.String(1024), nullable=True),
        sa.Column("meta", LongText, nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.Column("message_count", sa.Integer, nullable=False),
        sa.Column("token_total", sa.BigInteger, nullable=False),
        sa.Column("last_seq", sa.Integer, nullable=False),
        sa.Column("last_round_seq", sa.Integer, nullable=False),
        sa.Column("prefix_seq", sa.Integer, nullable=False),
        sa.Column("tool_state", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("pk", name="pk_chatledger_conversations"),
        sa.UniqueConstraint("id", name="uq_chatledger_conversations_id"),
        sqlite_autoincrement=True,
        **MYSQL,
    )
    op.create_index("ix_chatledger_conversations_owner", "chatledger_conversations", ["owner"])
    op.create_table(
        "chatledger_messages",
        sa.Column("conversation_pk", BigKey, nullable=False),
        sa.Column("seq", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("data", LongText, nullable=False),
        sa.Column("tokens", sa.Integer, nullable=False),
        sa.Column("cum_tokens", sa.BigInteger, nullable=False),
        sa.Column("round_seq", sa.Integer, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("status", sa.String(32), nullable=True),
        sa.Column("meta", LongText, nullable=True),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.PrimaryKeyConstraint("conversation_pk", "seq", name="pk_chatledger_messages"),
        sa.ForeignKeyConstraint(
            ["conversation_pk"],
            ["chatledger_conversations.pk"],
            name="fk_chatledger_messages_conversation_pk",
            ondelete="CASCADE",
        ),
        sqlite_with_rowid=False,
        **MYSQL,
    )
    op.create_index(
        "uq_chatledger_messages_idem",
        "chatledger_messages",
        ["conversation_pk", "idempotency_key"],
        unique=True,
        sqlite_where=KEYED,
        postgresql_where=KEYED,
    )
    op.create_index(
        "ix_chatledger_messages_cum", "chatledger_messages", ["conversation_pk", "cum_tokens"]
    )
    op.create_table(
        "chatledger_summaries",
        sa.Column("pk", BigKey, primary_key=True, autoincrement=True),
        sa.Column("conversation_pk", BigKey, nullable=False),
        sa.Column("upto_seq", sa.Integer, nullable=False),
        sa.Column("text", LongText, nullable=False),
        sa.Column("tokens", sa.Integer, nullable=False),
        sa.Column("model", sa.String(128), nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("meta", LongText, nullable=True),
        sa.PrimaryKeyConstraint("pk", name="pk_chatledger_summaries"),
        sa.ForeignKeyConstraint(
            ["conversation_pk"],
            ["chatledger_conversations.pk"],
            name="fk_chatledger_summaries_conversation_pk",
            ondelete="CASCADE",
        ),
        **MYSQL,
    )
    op.create_index(
        "ix_chatledger_summaries_conv", "chatledger_summaries", ["conversation_pk", "upto_seq"]
    )
    op.create_table(
        "chatledger_completions",
        sa.Column("pk", BigKey, primary_key=True, autoincrement=True),
        sa.Column("conversation_pk", BigKey, nullable=False),
        sa.Column("message_seq", sa.Integer, nullable=True),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("response_id", sa.String(255), nullable=True),
        sa.Column("system_fingerprint", sa.String(255), nullable=True),
        sa.Column("finish_reason", sa.String(32), nullable=True),
        sa.Column("prompt_tokens", sa.Integer, nullable=False),
        sa.Column("completion_tokens", sa.Integer, nullable=False),
        sa.Column("cached_tokens", sa.Integer, nullable=False),
        sa.Column("reasoning_tokens", sa.Integer, nullable=False),
        sa.Column("cost_micros", sa.BigInteger, nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("meta", LongText, nullable=True),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.PrimaryKeyConstraint("pk", name="pk_chatledger_completions"),
        sa.ForeignKeyConstraint(
            ["conversation_pk"],
            ["chatledger_conversations.pk"],
            name="fk_chatledger_completions_conversation_pk",
            ondelete="CASCADE",
        ),
        **MYSQL,
    )
    op.create_index(
        "uq_chatledger_completions_idem",
        "chatledger_completions",
        ["conversation_pk", "idempotency_key"],
        unique=True,
        sqlite_where=KEYED,
        postgresql_where=KEYED,
    )
    op.create_index(
        "ix_chatledger_completions_conv",
        "chatledger_completions",
        ["conversation_pk", "created_at"],
    )


def downgrade() -> None:
    for table in (
        "chatledger_completions",
        "chatledger_summaries",
        "chatledger_messages",
        "chatledger_conversations",
    ):
        op.drop_table(table)
