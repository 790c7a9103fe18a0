"""A conversation is (owner, id); usage outlives its conversation; reservations; settings.

- ``chatledger_conversations``: ``owner`` is NOT NULL, "" standing for no owner (a unique
  constraint treats NULLs as distinct); ``UNIQUE (id)`` becomes ``UNIQUE (owner, id)``, which
  also serves the owner lookups the old owner index did; ``tool_state`` is LONGTEXT on MySQL.
- ``chatledger_completions``: rows carry their conversation's ``owner`` and survive its
  deletion (``conversation_pk`` becomes nullable, ``ON DELETE SET NULL``).
- New tables: ``chatledger_reservations`` (spend in flight), ``chatledger_budget_locks`` (the
  row an owner budget check locks) and ``chatledger_settings`` (whether the database is
  encrypted, decided here from the data: a value of a JSON column that starts with ``enc1:``
  can only have been written by an encrypted ledger).

Every row is kept. On SQLite the altered tables are copied (batch mode): run through
``chatledger.migrate``, which turns foreign keys off for the copy, so that dropping the old
conversations table does not cascade to its messages.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0002"
down_revision = "0001"
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
CONV = "chatledger_conversations"
USAGE = "chatledger_completions"
FK_USAGE = "fk_chatledger_completions_conversation_pk"


def _sqlite_guard(bind: sa.Connection) -> int | None:
    """On SQLite: refuse to copy tables with foreign keys on (the old conversations table's
    DROP would delete every message); returns the conversations' AUTOINCREMENT high mark."""
    if bind.dialect.name != "sqlite":
        return None
    if bind.exec_driver_sql("PRAGMA foreign_keys").scalar():
        raise RuntimeError("run chatledger migrations through chatledger.migrate.upgrade")
    seq = bind.exec_driver_sql(
        "SELECT seq FROM sqlite_sequence WHERE name = 'chatledger_conversations'"
    ).scalar()
    return None if seq is None else int(seq)


def _encryption_setting(bind: sa.Connection) -> str | None:
    """What the data says: "fernet" if a JSON column holds an encrypted value, "none" if
    there are messages and none is, None (the first ledger decides) for no messages."""
    for table, column in (
        ("chatledger_messages", "data"),
        ("chatledger_messages", "meta"),
        (CONV, "meta"),
        (USAGE, "meta"),
    ):
        hit = bind.execute(
            sa.text(f"SELECT 1 FROM {table} WHERE {column} LIKE 'enc1:%' LIMIT 1")
        ).first()
        if hit is not None:
            return "fernet"
    if bind.execute(sa.text("SELECT 1 FROM chatledger_messages LIMIT 1")).first() is not None:
        return "none"
    return None


def upgrade() -> None:
    bind = op.get_bind()
    high_mark = _sqlite_guard(bind)
    setting = _encryption_setting(bind)

    op.execute(f"UPDATE {CONV} SET owner = '' WHERE owner IS NULL")
    op.drop_index("ix_chatledger_conversations_owner", table_name=CONV)
    with op.batch_alter_table(CONV, table_kwargs={"sqlite_autoincrement": True}) as b:
        b.alter_column("owner", existing_type=sa.String(255), nullable=False)
        b.alter_column("tool_state", existing_type=sa.Text(), type_=LongText)
        b.drop_constraint("uq_chatledger_conversations_id", type_="unique")
        b.create_unique_constraint("uq_chatledger_conversations_owner_id", ["owner", "id"])
    if high_mark is not None:  # a deleted conversation's key is still never handed out again
        op.execute(
            f"UPDATE sqlite_sequence SET seq = MAX(seq, {int(high_mark)}) "
            "WHERE name = 'chatledger_conversations'"
        )

    op.add_column(USAGE, sa.Column("owner", sa.String(255), nullable=True))
    op.execute(
        f"UPDATE {USAGE} SET owner = COALESCE((SELECT c.owner FROM {CONV} c "
        f"WHERE c.pk = {USAGE}.conversation_pk), '')"
    )
    with op.batch_alter_table(USAGE) as b:
        b.drop_constraint(FK_USAGE, type_="foreignkey")
        b.alter_column("owner", existing_type=sa.String(255), nullable=False)
        b.alter_column("conversation_pk", existing_type=BigKey, nullable=True)
        b.create_foreign_key(FK_USAGE, CONV, ["conversation_pk"], ["pk"], ondelete="SET NULL")
        b.create_index("ix_chatledger_completions_owner", ["owner", "created_at"])

    op.create_table(
        "chatledger_reservations",
        sa.Column("pk", BigKey, primary_key=True, autoincrement=True),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("conversation_pk", BigKey, nullable=True),
        sa.Column("tokens", sa.BigInteger, nullable=False),
        sa.Column("cost_micros", sa.BigInteger, nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("expires_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("pk", name="pk_chatledger_reservations"),
        sqlite_autoincrement=True,
        **MYSQL,
    )
    op.create_index(
        "ix_chatledger_reservations_owner", "chatledger_reservations", ["owner", "expires_at"]
    )
    op.create_index(
        "ix_chatledger_reservations_conv",
        "chatledger_reservations",
        ["conversation_pk", "expires_at"],
    )
    op.create_table(
        "chatledger_budget_locks",
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("locked_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("owner", name="pk_chatledger_budget_locks"),
        **MYSQL,
    )
    settings = op.create_table(
        "chatledger_settings",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_chatledger_settings"),
        **MYSQL,
    )
    if setting is not None:
        op.bulk_insert(settings, [{"name": "encryption", "value": setting}])


def downgrade() -> None:
    """Back to 0001: fails (IntegrityError) if two owners now hold the same id; usage rows
    of deleted conversations are dropped, as 0001 cannot hold them."""
    _sqlite_guard(op.get_bind())
    for table in ("chatledger_settings", "chatledger_budget_locks", "chatledger_reservations"):
        op.drop_table(table)
    op.execute(f"DELETE FROM {USAGE} WHERE conversation_pk IS NULL")
    with op.batch_alter_table(USAGE) as b:
        b.drop_index("ix_chatledger_completions_owner")
        b.drop_constraint(FK_USAGE, type_="foreignkey")
        b.alter_column("conversation_pk", existing_type=BigKey, nullable=False)
        b.create_foreign_key(FK_USAGE, CONV, ["conversation_pk"], ["pk"], ondelete="CASCADE")
        b.drop_column("owner")
    with op.batch_alter_table(CONV, table_kwargs={"sqlite_autoincrement": True}) as b:
        b.drop_constraint("uq_chatledger_conversations_owner_id", type_="unique")
        b.create_unique_constraint("uq_chatledger_conversations_id", ["id"])
        b.alter_column("tool_state", existing_type=LongText, type_=sa.Text())
        b.alter_column("owner", existing_type=sa.String(255), nullable=True)
    op.execute(f"UPDATE {CONV} SET owner = NULL WHERE owner = ''")
    op.create_index("ix_chatledger_conversations_owner", CONV, ["owner"])
