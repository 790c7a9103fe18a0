"""Locks that serialise work across every process on a database, on all three backends.

- The schema lock (:func:`schema_lock`, :func:`session_lock`): creating tables, migrating and
  deciding the database's settings, so that many applications starting on a fresh database,
  or several ``chatledger db upgrade`` runs, all succeed: an advisory lock on PostgreSQL,
  ``GET_LOCK`` on MySQL/MariaDB, the write lock (``BEGIN IMMEDIATE``) on SQLite.
- An owner's budget lock (:func:`lock_owner`): a row lock, taken with an ``UPDATE`` like the
  conversation lock, so it needs no ``FOR UPDATE`` dialect hooks.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Table, insert, text, update
from sqlalchemy.dialects import mysql, postgresql, sqlite

from chatledger.append_plan import utcnow
from chatledger.errors import StorageError
from chatledger.store.schema import budget_locks

__all__ = ["insert_missing", "lock_owner", "read_snapshot", "schema_lock", "session_lock"]

# any fixed 64-bit key: PostgreSQL advisory locks are per database already
_PG_KEY = 0x636C5F736368656D
# GET_LOCK names are server-wide: one per database (a 64-character limit, hence the hash)
_MY_NAME = "CONCAT('chatledger_schema_', MD5(DATABASE()))"


def _sqlite_write_lock(conn: Connection) -> None:
    """Take SQLite's write lock before any read (BEGIN IMMEDIATE), waiting on the busy timeout;
    an engine whose own begin hook already opened a transaction keeps it."""
    _sqlite_begin(conn, "BEGIN IMMEDIATE")


def _mysql_get_lock(conn: Connection) -> None:
    """GET_LOCK, waiting as long as a row lock would (innodb_lock_wait_timeout)."""
    got = conn.execute(text(f"SELECT GET_LOCK({_MY_NAME}, @@innodb_lock_wait_timeout)")).scalar()
    if got != 1:
        raise StorageError("timed out waiting for another process's chatledger schema work")


def _mysql_release(conn: Connection) -> None:
    conn.execute(text(f"SELECT RELEASE_LOCK({_MY_NAME})"))


@contextmanager
def schema_lock(conn: Connection) -> Iterator[None]:
    """Hold the schema lock for the rest of ``conn``'s transaction: an advisory transaction
    lock on PostgreSQL, the write lock on SQLite, GET_LOCK on MySQL/MariaDB.

    MySQL's named lock belongs to the session, not the transaction, and its DDL commits by
    itself: the transaction is committed before the lock is released, so the next holder sees
    the revision and settings written here, not only the tables."""
    backend = conn.dialect.name
    if backend == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_KEY})
    elif backend == "sqlite":
        _sqlite_write_lock(conn)
    elif backend in ("mysql", "mariadb"):
        _mysql_get_lock(conn)
        try:
            yield
            conn.connection.dbapi_connection.commit()  # type: ignore[union-attr]
        finally:
            _mysql_release(conn)
        return
    yield


@contextmanager
def session_lock(conn: Connection) -> Iterator[None]:
    """The schema lock held across transactions (a migration's): a session advisory lock on
    PostgreSQL, GET_LOCK on MySQL; SQLite takes its write lock per transaction instead."""
    backend = conn.dialect.name
    if backend == "postgresql":
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_KEY})
        conn.commit()
        try:
            yield
        finally:
            conn.rollback()
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_KEY})
            conn.commit()
    elif backend in ("mysql", "mariadb"):
        _mysql_get_lock(conn)
        conn.commit()
        try:
            yield
        finally:
            conn.rollback()
            _mysql_release(conn)
            conn.commit()
    else:
        yield


def insert_missing(conn: Connection, table: Table, values: dict[str, object]) -> None:
    """Insert a row unless its key is taken (by this or by a concurrent transaction)."""
    backend = conn.dialect.name
    if backend == "postgresql":
        conn.execute(postgresql.insert(table).values(**values).on_conflict_do_nothing())
    elif backend == "sqlite":
        conn.execute(sqlite.insert(table).values(**values).on_conflict_do_nothing())
    elif backend in ("mysql", "mariadb"):
        stmt = mysql.insert(table).values(**values)
        key = next(iter(table.primary_key.columns)).name
        conn.execute(stmt.on_duplicate_key_update({key: stmt.inserted[key]}))
    else:  # pragma: no cover - another dialect: a plain insert
        conn.execute(insert(table).values(**values))


def lock_owner(conn: Connection, owner: str) -> None:
    """Take ``owner``'s budget lock for the rest of the transaction (its row is made on first
    use): concurrent budget checks of one owner then check and reserve one after another."""
    now = utcnow()
    if conn.dialect.name in ("mysql", "mariadb"):
        # one statement: an UPDATE of a missing row would take a gap lock, and two sessions
        # holding it would deadlock on the INSERT that follows
        stmt = mysql.insert(budget_locks).values(owner=owner, locked_at=now)
        conn.execute(stmt.on_duplicate_key_update(locked_at=stmt.inserted.locked_at))
        return
    lock = update(budget_locks).where(budget_locks.c.owner == owner).values(locked_at=now)
    if conn.execute(lock).rowcount == 0:
        insert_missing(conn, budget_locks, {"owner": owner, "locked_at": now})
        conn.execute(lock)


def read_snapshot(conn: Connection) -> None:
    """Make the rest of a read (its first statement) see one snapshot: REPEATABLE READ on
    PostgreSQL (READ COMMITTED gives each statement its own), a read transaction on SQLite
    (its driver runs SELECTs outside one). MySQL/MariaDB's default is REPEATABLE READ."""
    backend = conn.dialect.name
    if backend == "postgresql":
        conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    elif backend == "sqlite":
        _sqlite_begin(conn, "BEGIN")


def _sqlite_begin(conn: Connection, statement: str) -> None:
    try:
        conn.exec_driver_sql(statement)
    except Exception as exc:  # an engine whose begin hook already opened one keeps it
        if "within a transaction" not in str(exc):
            raise
