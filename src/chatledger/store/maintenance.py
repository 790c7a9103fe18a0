"""Schema checks and retention: work on many conversations at once.

Schema work (creating the tables, stamping the revision, deciding the database's settings) is
serialised across every process on the database by :func:`schema_lock`, so that any number of
applications starting on a fresh database at once all succeed.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from sqlalchemy import Connection, delete, insert, inspect, select

from chatledger.encryption import Codec, EncryptionMismatchError
from chatledger.errors import SchemaVersionError
from chatledger.store.conversations import Swept, delete_locked, take_batch
from chatledger.store.locks import insert_missing, schema_lock
from chatledger.store.mapping import codec_of
from chatledger.store.schema import (
    SCHEMA_VERSION,
    conversations,
    metadata,
    settings,
    version_table,
)

__all__ = ["delete_idle_batch", "encryption_setting", "ensure_schema", "set_encryption"]


def _revisions(conn: Connection, locked: bool = False) -> list[str] | None:
    """The recorded revisions; None when there is no version table at all. ``locked``: a
    locking read, which sees the newest commit even in a REPEATABLE READ snapshot (MySQL)."""
    if not inspect(conn).has_table(version_table.name):
        return None
    q = select(version_table.c.version_num)
    return list(conn.execute(q.with_for_update(read=True) if locked else q).scalars())


def _newer(found: list[str]) -> bool:
    return any(v.isdigit() and int(v) > int(SCHEMA_VERSION) for v in found)


def ensure_schema(conn: Connection, *, create: bool) -> None:
    """Create the tables if asked and missing, check the recorded revision, and check (or, on
    a database used for the first time, record) whether the database is encrypted.

    A database already at this revision, with its encryption recorded, is only read: no lock,
    so a ledger starts even while another process holds SQLite's write lock. Anything to
    create or record is done under the schema lock, with what was read read again."""
    codec = codec_of(conn)
    if _revisions(conn) == [SCHEMA_VERSION] and encryption_setting(conn) is not None:
        _settle_encryption(conn, codec)
        return
    with schema_lock(conn):
        found = _revisions(conn, locked=True)
        if not found:
            if found is None and not create:
                raise SchemaVersionError(
                    "no chatledger schema in this database: create it with create_tables=True "
                    "or `chatledger db upgrade`"
                )
            if create:
                metadata.create_all(conn, checkfirst=True)
            insert_missing(conn, version_table, {"version_num": SCHEMA_VERSION})
        elif found != [SCHEMA_VERSION]:
            at = ", ".join(found)
            if _newer(found):
                raise SchemaVersionError(
                    f"database schema is at revision {at}, newer than this chatledger "
                    f"({SCHEMA_VERSION}): upgrade the chatledger package"
                )
            raise SchemaVersionError(
                f"database schema is at revision {at}, this chatledger uses {SCHEMA_VERSION}: "
                "run `chatledger db upgrade` (or chatledger.migrate.upgrade)"
            )
        _settle_encryption(conn, codec, locked=True)


_ENCRYPTION = "encryption"


def encryption_setting(conn: Connection, locked: bool = False) -> str | None:
    """What the database records: "fernet", "none", or None (no ledger has used it yet)."""
    q = select(settings.c.value).where(settings.c.name == _ENCRYPTION)
    value = conn.execute(q.with_for_update(read=True) if locked else q).scalar()
    return None if value is None else str(value)


def set_encryption(conn: Connection, value: str) -> None:
    conn.execute(delete(settings).where(settings.c.name == _ENCRYPTION))
    conn.execute(insert(settings).values(name=_ENCRYPTION, value=value))


def _settle_encryption(conn: Connection, codec: Codec, locked: bool = False) -> None:
    """The first ledger to use a database records whether it encrypts; every later one must
    match. The setting, not a prefix in the data, says what stored values are."""
    want = "fernet" if codec.encrypted else "none"
    recorded = encryption_setting(conn, locked)
    if recorded is None:
        insert_missing(conn, settings, {"name": _ENCRYPTION, "value": want})
        recorded = encryption_setting(conn, locked)
    if recorded == want:
        return
    if recorded == "fernet":
        raise EncryptionMismatchError(
            "this database is encrypted (chatledger_settings): open the ledger with "
            "encryption=Encryption([...]); a ledger without keys neither reads nor writes it"
        )
    raise EncryptionMismatchError(
        "this database is not encrypted (chatledger_settings records it as plaintext): a "
        "ledger with keys refuses to mix encrypted and plaintext rows. To encrypt it, stop its "
        "workers and run chatledger.migrate.encrypt(url, encryption)"
    )


def delete_idle_batch(conn: Connection, cutoff: datetime, owner: str | None, swept: Swept) -> Swept:
    """One transaction of a retention sweep: a batch of conversations last active before
    ``cutoff`` (only ``owner``'s when given), walked by key from where the last batch ended
    (``updated_at`` has no index: each row is looked at once). Their usage rows stay (billing
    records: only an owner's erasure removes them)."""
    c = conversations.c
    idle = c.updated_at < cutoff
    if owner is not None:
        idle = idle & (c.owner == owner)
    candidates = select(c.pk, c.message_count).where(c.pk > swept.after, idle).order_by(c.pk)
    pks = take_batch(conn, candidates)
    if not pks:
        return replace(swept, done=True)
    deleted = delete_locked(conn, pks, idle)
    return replace(swept, deleted=swept.deleted + deleted, after=pks[-1])
