"""Key rotation: every stored secret rewritten under the newest key, row by row.

A row is rewritten with a compare-and-set on the values it read (``WHERE data = <old
ciphertext>``), so a concurrent write (``update(metadata=...)``, an append's tool state) is
never reverted: when the compare fails, the row is read again under a row lock and rotated
from its new value. Rows already under the newest key are skipped, so a re-run continues
where one stopped; a row that cannot be rotated (a key not configured) is reported and left
as it was, instead of aborting the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import ColumnElement, Connection, Table, exists, func, select, tuple_, update

from chatledger.encryption import PREFIX, Codec, DecryptionError, RotationFailure
from chatledger.store.mapping import codec_of
from chatledger.store.schema import completions, conversations, messages, summaries

__all__ = ["ENCRYPTED_TABLES", "RotatedBatch", "rotate_batch", "vacuum"]

# "enc": encrypted text; "hash": an identifier looked up by equality (keyed hash); "id": an
# identifier shown back (encrypted when it fits its column, else its keyed hash)
Kind = Literal["enc", "hash", "id"]
_ID_LIMIT = 255  # completions.response_id is a String(255)
_SAME_CHARS = 64  # "enc1:" and 59 base64 characters: 44 bytes of the token, the IV included

_ROTATED: dict[str, tuple[Table, tuple[str, ...], tuple[tuple[str, Kind], ...]]] = {
    "messages": (
        messages,
        ("conversation_pk", "seq"),
        (("data", "enc"), ("meta", "enc"), ("idempotency_key", "hash")),
    ),
    "summaries": (summaries, ("pk",), (("text", "enc"), ("meta", "enc"))),
    "completions": (
        completions,
        ("pk",),
        (("meta", "enc"), ("response_id", "id"), ("idempotency_key", "hash")),
    ),
    "conversations": (conversations, ("pk",), (("meta", "enc"), ("tool_state", "enc"))),
}
ENCRYPTED_TABLES = tuple(_ROTATED)


@dataclass(frozen=True, slots=True)
class RotatedBatch:
    """One batch of one table: rows read, the key to continue after, and what became of
    them."""

    read: int
    last: tuple[Any, ...] | None
    rotated: int
    current: int
    failures: tuple[RotationFailure, ...]


def _new_values(codec: Codec, kinds: tuple[tuple[str, Kind], ...], row: Any) -> dict[str, str]:
    """The columns of ``row`` to rewrite, with their new values (raises DecryptionError)."""
    out: dict[str, str] = {}
    for col, kind in kinds:
        old = getattr(row, col)
        if old is None:
            continue
        if kind == "enc":
            new = codec.rotated(old)
        elif kind == "hash":
            new = codec.rehashed(old)
        else:
            new = codec.rotated_id(old, _ID_LIMIT)
        if new is not None:
            out[col] = new
    return out


def _unchanged(table: Table, col: str, old: str) -> ColumnElement[bool]:
    """The compare of the compare-and-set. A ciphertext is told apart by its first characters
    (the format version, the time and a random 128-bit IV): comparing a whole message of
    megabytes would double the size of its UPDATE (past MySQL's ``max_allowed_packet``)."""
    if old.startswith(PREFIX) and len(old) > _SAME_CHARS:
        return func.substr(table.c[col], 1, _SAME_CHARS) == old[:_SAME_CHARS]
    return table.c[col] == old


def _hash_taken(conn: Connection, table: Table, row: Any, values: dict[str, str]) -> bool:
    """A key stored in plaintext whose hash a later write already stored (it reused the key
    after encryption was turned on): the unique index refuses a second one."""
    hashed = values.get("idempotency_key")
    if hashed is None:
        return False
    c = table.c
    owner_pk = row._mapping.get("conversation_pk", None)
    if owner_pk is None:  # a usage row is read by its own key: find its conversation
        owner_pk = conn.execute(select(c.conversation_pk).where(c.pk == row.pk)).scalar()
    taken = select(exists().where(c.conversation_pk == owner_pk, c.idempotency_key == hashed))
    return bool(conn.execute(taken).scalar())


def _rotate_row(
    conn: Connection, name: str, row: Any, codec: Codec
) -> Literal["rotated", "current"] | RotationFailure:
    table, keys, kinds = _ROTATED[name]
    key = tuple(getattr(row, k) for k in keys)
    where = [table.c[k] == v for k, v in zip(keys, key, strict=True)]
    for attempt in range(2):
        try:
            values = _new_values(codec, kinds, row)
        except DecryptionError:
            return RotationFailure(name, key, "does not decrypt with any configured key")
        if not values:
            return "current"
        if _hash_taken(conn, table, row, values):
            return RotationFailure(
                name, key, "its idempotency key, hashed, is already used in this conversation"
            )
        cas = [_unchanged(table, col, getattr(row, col)) for col in values]
        if conn.execute(update(table).where(*where, *cas).values(**values)).rowcount == 1:
            return "rotated"
        if attempt == 0:
            # changed since it was read: read it again, locked (the latest committed version,
            # also under MySQL's repeatable read), and rotate that
            cols = [table.c[k] for k in keys] + [table.c[col] for col, _ in kinds]
            row = conn.execute(select(*cols).where(*where).with_for_update()).first()
            if row is None:
                return "current"  # deleted meanwhile: nothing left to rotate
    return RotationFailure(name, key, "changed during the rotation; run it again")


def rotate_batch(
    conn: Connection, name: str, after: tuple[Any, ...] | None, batch: int
) -> RotatedBatch:
    """Rotate the next ``batch`` rows of one table after key ``after``, each row on its own
    compare-and-set, in one transaction."""
    table, keys, kinds = _ROTATED[name]
    key_cols = [table.c[k] for k in keys]
    q = select(*key_cols, *(table.c[c] for c, _ in kinds)).order_by(*key_cols).limit(batch)
    if after is not None:
        q = q.where(tuple_(*key_cols) > tuple_(*after))
    rows = conn.execute(q).all()
    codec = codec_of(conn)
    rotated = current = 0
    failures: list[RotationFailure] = []
    for r in rows:
        outcome = _rotate_row(conn, name, r, codec)
        if outcome == "rotated":
            rotated += 1
        elif outcome == "current":
            current += 1
        else:
            assert isinstance(outcome, RotationFailure)
            failures.append(outcome)
    last = tuple(getattr(rows[-1], k) for k in keys) if rows else None
    return RotatedBatch(len(rows), last, rotated, current, tuple(failures))


def vacuum(conn: Connection) -> bool:
    """Rewrite the tables, so that the old ciphertext leaves the database files: PostgreSQL
    keeps old row versions as dead tuples (``VACUUM FULL``), SQLite keeps freed pages
    (``VACUUM``, then a WAL checkpoint), InnoDB rebuilds with ``OPTIMIZE TABLE``. Needs a
    connection outside any transaction; returns False on another database."""
    conn.execution_options(isolation_level="AUTOCOMMIT")
    names = ", ".join(t.name for t, _, _ in _ROTATED.values())
    backend = conn.dialect.name
    if backend == "postgresql":
        conn.exec_driver_sql(f"VACUUM FULL {names}")
    elif backend == "sqlite":
        conn.exec_driver_sql("VACUUM")
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").all()
    elif backend in ("mysql", "mariadb"):
        conn.exec_driver_sql(f"OPTIMIZE TABLE {names}").all()
    else:
        return False
    return True
