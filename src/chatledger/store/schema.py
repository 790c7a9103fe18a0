"""The SQL schema: one definition for SQLite, PostgreSQL and MariaDB/MySQL.

Tables carry a ``chatledger_`` prefix because the library is embedded in application
databases that often have a ``messages`` table of their own. Every hot query is keyed by the
conversation's integer key, the natural distribution column if the tables are ever sharded.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects import mysql

__all__ = [
    "NO_OWNER",
    "SCHEMA_VERSION",
    "budget_locks",
    "completions",
    "conversations",
    "messages",
    "metadata",
    "reservations",
    "settings",
    "summaries",
    "version_table",
]

#: The revision this code reads and writes, kept in ``chatledger_alembic_version``: the table of
#: the Alembic migrations in ``chatledger/store/migrations``.
SCHEMA_VERSION = "0004"

#: How "no owner" is stored: an owner is never empty (``check_id``), and a unique constraint
#: treats NULLs as distinct, so NULL would let two ownerless conversations share an id.
NO_OWNER = ""

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# MySQL's TEXT holds 64 KiB; a message with an image data URL needs more.
LongText = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
# Microsecond timestamps everywhere (MySQL's DATETIME defaults to whole seconds).
Timestamp = DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
# SQLite only autoincrements an INTEGER PRIMARY KEY, not a BIGINT one.
BigKey = BigInteger().with_variant(Integer(), "sqlite")

# utf8mb4 for 4-byte characters; a binary collation so that ids and owners compare exactly
# (the default collation would let "User-7" read "user-7"'s conversations).
_MYSQL: dict[str, Any] = {
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
    "mysql_engine": "InnoDB",
}

conversations = Table(
    "chatledger_conversations",
    metadata,
    Column("pk", BigKey, primary_key=True, autoincrement=True),
    # a conversation is (owner, id): two owners may each hold "default", and nothing one owner
    # does can tell whether another uses an id; NO_OWNER ("") stands for no owner
    Column("id", String(255), nullable=False),
    Column("owner", String(255), nullable=False),
    Column("model", String(128), nullable=False),
    Column("encoding", String(32), nullable=False),
    Column("token_profile", String(128), nullable=False),
    Column("title", String(1024), nullable=True),
    Column("meta", LongText, nullable=True),
    Column("created_at", Timestamp, nullable=False),
    Column("updated_at", Timestamp, nullable=False),
    Column("message_count", Integer, nullable=False, default=0),
    Column("token_total", BigInteger, nullable=False, default=0),
    Column("last_seq", Integer, nullable=False, default=0),
    # seq of the user message that opened the newest round (0 before the first user message)
    Column("last_round_seq", Integer, nullable=False, default=0),
    # seq of the last message of the pinned prefix (leading system/developer messages)
    Column("prefix_seq", Integer, nullable=False, default=0),
    # tool calls still awaiting results, as JSON (see tool_state.ToolCallState): as large as
    # the assistant message that made the calls, so not MySQL's 64 KiB TEXT
    Column("tool_state", LongText, nullable=True),
    # lineage of a fork: the conversation it was copied from and the last seq they share
    Column("parent_id", String(255), nullable=True),
    Column("forked_at", Integer, nullable=True),
    # where the window last sent started: StablePrefix holds it still between requests
    Column("window_start", Integer, nullable=True),
    # bumped by every edit of the history (pop, truncate, edit, a new system prompt): with
    # last_seq it names the state an append was planned on, so a handle that saw the state
    # before an edit cannot write on top of it even when the edit left last_seq as it was
    Column("revision", Integer, nullable=False, default=0, server_default=text("0")),
    # leads with owner: also the index of one owner's listing and erasure
    UniqueConstraint("owner", "id"),
    # SQLite would hand a deleted conversation's key to the next one: a handle kept across a
    # delete must never reach another conversation
    sqlite_autoincrement=True,
    **_MYSQL,
)

messages = Table(
    "chatledger_messages",
    metadata,
    Column(
        "conversation_pk",
        BigKey,
        ForeignKey(conversations.c.pk, ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("role", String(16), nullable=False),
    # the message exactly as the API takes it, as compact JSON text
    Column("data", LongText, nullable=False),
    Column("tokens", Integer, nullable=False),
    # sum of ``tokens`` over seq 1..this one: a budget's cut point is one indexed lookup
    Column("cum_tokens", BigInteger, nullable=False),
    Column("round_seq", Integer, nullable=False),
    Column("created_at", Timestamp, nullable=False),
    Column("status", String(32), nullable=True),
    Column("meta", LongText, nullable=True),
    Column("idempotency_key", String(255), nullable=True),
    # unique per conversation; partial where the database can (most messages have no key,
    # and every index entry is paid on every append)
    Index(
        "uq_chatledger_messages_idem",
        "conversation_pk",
        "idempotency_key",
        unique=True,
        sqlite_where=text("idempotency_key IS NOT NULL"),
        postgresql_where=text("idempotency_key IS NOT NULL"),
    ),
    Index("ix_chatledger_messages_cum", "conversation_pk", "cum_tokens"),
    # SQLite: cluster the rows on (conversation_pk, seq) itself, one b-tree fewer per append
    sqlite_with_rowid=False,
    **_MYSQL,
)

summaries = Table(
    "chatledger_summaries",
    metadata,
    Column("pk", BigKey, primary_key=True, autoincrement=True),
    Column(
        "conversation_pk",
        BigKey,
        ForeignKey(conversations.c.pk, ondelete="CASCADE"),
        nullable=False,
    ),
    # the summary covers messages with seq <= upto_seq (after the pinned prefix)
    Column("upto_seq", Integer, nullable=False),
    Column("text", LongText, nullable=False),
    Column("tokens", Integer, nullable=False),
    Column("model", String(128), nullable=True),
    Column("created_at", Timestamp, nullable=False),
    Column("meta", LongText, nullable=True),
    Index("ix_chatledger_summaries_conv", "conversation_pk", "upto_seq"),
    **_MYSQL,
)

# The usage ledger: billing records. A row outlives its conversation (the link is set to NULL
# and its meta, which may quote replies, cleared) so that deleting a conversation does not
# reset its owner's spend; only delete_owner removes an owner's rows.
completions = Table(
    "chatledger_completions",
    metadata,
    Column("pk", BigKey, primary_key=True, autoincrement=True),
    Column(
        "conversation_pk",
        BigKey,
        ForeignKey(conversations.c.pk, ondelete="SET NULL"),
        nullable=True,
    ),
    # the conversation's owner when the row was written (NO_OWNER for none)
    Column("owner", String(255), nullable=False),
    Column("message_seq", Integer, nullable=True),
    Column("model", String(128), nullable=False),
    Column("response_id", String(255), nullable=True),
    Column("system_fingerprint", String(255), nullable=True),
    Column("finish_reason", String(32), nullable=True),
    Column("prompt_tokens", Integer, nullable=False, default=0),
    Column("completion_tokens", Integer, nullable=False, default=0),
    Column("cached_tokens", Integer, nullable=False, default=0),
    Column("reasoning_tokens", Integer, nullable=False, default=0),
    # prompt tokens written to the provider's cache, where it reports them (None: not reported)
    Column("cache_write_tokens", Integer, nullable=True),
    # cost in micro-dollars (integer: exact sums across many rows and databases)
    Column("cost_micros", BigInteger, nullable=True),
    Column("created_at", Timestamp, nullable=False),
    Column("meta", LongText, nullable=True),
    Column("idempotency_key", String(255), nullable=True),
    Index(
        "uq_chatledger_completions_idem",
        "conversation_pk",
        "idempotency_key",
        unique=True,
        sqlite_where=text("idempotency_key IS NOT NULL"),
        postgresql_where=text("idempotency_key IS NOT NULL"),
    ),
    Index("ix_chatledger_completions_conv", "conversation_pk", "created_at"),
    # an owner budget's sum over a period
    Index("ix_chatledger_completions_owner", "owner", "created_at"),
    **_MYSQL,
)

# Spend in flight: what a request may still cost, held from the budget check until its reply
# is recorded (or the request fails, or ``expires_at`` passes). No foreign key: a request in
# flight still counts against its owner when its conversation is deleted meanwhile.
reservations = Table(
    "chatledger_reservations",
    metadata,
    Column("pk", BigKey, primary_key=True, autoincrement=True),
    Column("owner", String(255), nullable=False),
    Column("conversation_pk", BigKey, nullable=True),
    Column("tokens", BigInteger, nullable=False),
    Column("cost_micros", BigInteger, nullable=True),
    Column("created_at", Timestamp, nullable=False),
    Column("expires_at", Timestamp, nullable=False),
    Index("ix_chatledger_reservations_owner", "owner", "expires_at"),
    Index("ix_chatledger_reservations_conv", "conversation_pk", "expires_at"),
    sqlite_autoincrement=True,
    **_MYSQL,
)

# One row per owner with an owner budget: the row a budget check locks (UPDATE), so that
# concurrent requests of one owner check and reserve one after another on every database.
budget_locks = Table(
    "chatledger_budget_locks",
    metadata,
    Column("owner", String(255), primary_key=True),
    Column("locked_at", Timestamp, nullable=False),
    **_MYSQL,
)

# Facts about the database itself, e.g. ``encryption``: "none" or "fernet", recorded by the
# first ledger to use it, so a ledger without keys never writes plaintext into an encrypted
# database and a ledger without keys never tries to decrypt (no in-band marker decides).
settings = Table(
    "chatledger_settings",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", String(255), nullable=False),
    **_MYSQL,
)

version_table = Table(
    "chatledger_alembic_version",
    metadata,
    Column("version_num", String(32), primary_key=True),
    **_MYSQL,
)
