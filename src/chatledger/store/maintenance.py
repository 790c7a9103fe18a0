"""Schema checks, retention and key rotation: work on many conversations at once."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, insert, select, tuple_, update

from chatledger.errors import SchemaVersionError
from chatledger.store.conversations import delete_pks
from chatledger.store.mapping import codec_of
from chatledger.store.schema import (
    SCHEMA_VERSION,
    completions,
    conversations,
    messages,
    metadata,
    summaries,
    version_table,
)

__all__ = ["ENCRYPTED_TABLES", "delete_idle", "ensure_schema", "rotate_batch"]


def ensure_schema(conn: Connection, *, create: bool) -> None:
    """Create the tables if asked, then check the recorded schema version."""
    if create:
        metadata.create_all(conn, checkfirst=True)
    try:
        found = conn.execute(select(version_table.c.version_num)).scalars().all()
    except Exception as exc:  # the table is missing: tables were not created
        raise SchemaVersionError(
            "no chatledger schema in this database; create it with create_tables=True"
        ) from exc
    if not found:
        conn.execute(insert(version_table).values(version_num=SCHEMA_VERSION))
    elif found != [SCHEMA_VERSION]:
        raise SchemaVersionError(
            f"database schema is at revision {', '.join(found)}, this chatledger uses "
            f"{SCHEMA_VERSION}"
        )


def delete_idle(conn: Connection, cutoff: datetime, owner: str | None) -> int:
    """Delete conversations last active before ``cutoff`` (only ``owner``'s when given)."""
    q = select(conversations.c.pk).where(conversations.c.updated_at < cutoff)
    if owner is not None:
        q = q.where(conversations.c.owner == owner)
    pks = list(conn.execute(q).scalars())
    deleted = 0
    for i in range(0, len(pks), 500):
        deleted += delete_pks(conn, pks[i : i + 500])
    return deleted


_ENCRYPTED: dict[str, tuple[Table, tuple[str, ...], tuple[str, ...]]] = {
    "messages": (messages, ("conversation_pk", "seq"), ("data", "meta")),
    "summaries": (summaries, ("pk",), ("text",)),
    "completions": (completions, ("pk",), ("meta",)),
    "conversations": (conversations, ("pk",), ("meta",)),
}
ENCRYPTED_TABLES = tuple(_ENCRYPTED)


def rotate_batch(
    conn: Connection, name: str, after: tuple[Any, ...] | None, batch: int
) -> tuple[int, tuple[Any, ...] | None]:
    """Re-encrypt the next ``batch`` rows of one table after key ``after``; returns how many
    rows were read and the key to continue from."""
    table, keys, cols = _ENCRYPTED[name]
    key_cols = [table.c[k] for k in keys]
    q = select(*key_cols, *(table.c[c] for c in cols)).order_by(*key_cols).limit(batch)
    if after is not None:
        q = q.where(tuple_(*key_cols) > tuple_(*after))
    rows = conn.execute(q).all()
    codec = codec_of(conn)
    for r in rows:
        values = {c: codec.rotate(getattr(r, c)) for c in cols if getattr(r, c) is not None}
        if values:
            cond = [table.c[k] == getattr(r, k) for k in keys]
            conn.execute(update(table).where(*cond).values(**values))
    last = tuple(getattr(rows[-1], k) for k in keys) if rows else None
    return len(rows), last
