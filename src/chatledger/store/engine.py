"""Engines from URLs, with the settings each database needs for a conversation store.

A bare ``postgresql://`` or ``mysql://`` URL is given a driver that chatledger installs with its
extras, so the same URL works for :class:`~chatledger.Ledger` and
:class:`~chatledger.AsyncLedger`. Engines passed in by the caller are used as they are.
A URL that does not parse, names no known database, or needs a driver that is not installed
is a typed error here, with what to fix (SQLAlchemy's own errors name none of that).
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from sqlalchemy import URL, Engine, create_engine, event, make_url
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from chatledger.errors import InvalidArgumentError, MissingDependencyError

__all__ = ["DEFAULT_URL", "make_async_engine", "make_sync_engine", "resolve_url"]

DEFAULT_URL = "sqlite:///chatledger.db"

_SYNC_DRIVERS = {"postgresql": "psycopg", "mysql": "pymysql", "mariadb": "pymysql", "sqlite": ""}
_ASYNC_DRIVERS = {
    "postgresql": "asyncpg",
    "mysql": "aiomysql",
    "mariadb": "aiomysql",
    "sqlite": "aiosqlite",
}
_ASYNC_NAMES = {"asyncpg", "psycopg", "psycopg_async", "aiomysql", "asyncmy", "aiosqlite"}
# SQLAlchemy's sync-only drivers: given to AsyncLedger, their backend's async driver is used
_SYNC_ONLY = {
    "psycopg2",
    "pg8000",
    "pymysql",
    "mysqldb",
    "mysqlconnector",
    "mariadbconnector",
    "pysqlite",
}


_URL_FORM = "must be a database URL such as sqlite:///chat.db or postgresql://user@host/db"


def _parse(url: str | URL) -> URL:
    if not isinstance(url, (str, URL)):
        raise InvalidArgumentError("url", f"{_URL_FORM} (or an engine), got {type(url).__name__}")
    try:
        u = make_url(url)
    except (sa_exc.ArgumentError, ValueError) as exc:
        # ValueError: a port that is not a number; the URL may hold a password, never show it
        why = "its port is not a number" if isinstance(exc, ValueError) else "it does not parse"
        raise InvalidArgumentError("url", f"{_URL_FORM}; {why}") from None
    if u.port is not None and not 0 < u.port < 65536:
        raise InvalidArgumentError("url", f"port must be from 1 to 65535, got {u.port}")
    return u


def resolve_url(url: str | URL, *, asynchronous: bool) -> URL:
    """Fill in the driver for a bare URL and utf8mb4 for MySQL; keep explicit choices."""
    u = _parse(url)
    backend, _, driver = u.drivername.partition("+")
    table = _ASYNC_DRIVERS if asynchronous else _SYNC_DRIVERS
    if not driver and table.get(backend):
        u = u.set(drivername=f"{backend}+{table[backend]}")
    elif asynchronous and driver in _SYNC_ONLY and backend in table:
        # e.g. postgresql+psycopg2 given to AsyncLedger: use that backend's async driver
        u = u.set(drivername=f"{backend}+{table[backend]}")
    if backend in ("mysql", "mariadb") and "charset" not in u.query:
        u = u.update_query_dict({"charset": "utf8mb4"})
    return u


def _is_memory(u: URL) -> bool:
    return u.get_backend_name() == "sqlite" and u.database in (None, "", ":memory:")


def _engine_options(u: URL, options: dict[str, Any], lock_timeout: float) -> dict[str, Any]:
    opts: dict[str, Any] = {"pool_pre_ping": u.get_backend_name() != "sqlite"}
    if u.get_backend_name() == "sqlite":
        # wait for the write lock instead of failing at once when workers overlap
        opts["connect_args"] = {"timeout": lock_timeout}
        if _is_memory(u):
            opts["poolclass"] = StaticPool
            opts["connect_args"]["check_same_thread"] = False
    elif u.get_backend_name() in ("mysql", "mariadb"):
        opts["pool_recycle"] = 3600
    opts.update(options)
    return opts


def _enter_wal(cur: Any, timeout: float) -> None:
    """Switch a database file to WAL (it stays so). The switch needs the file to itself and
    SQLite answers "locked" at once, without its busy timeout, while another connection
    opens the same fresh file: retry for as long as a write would wait."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            cur.execute("PRAGMA journal_mode")
            if str(cur.fetchone()[0]).lower() == "wal":
                return
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _sqlite_pragmas(engine: Engine, memory: bool, timeout: float) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        try:
            if not memory:
                # readers never block the writer, and a commit is one fsync of the WAL
                _enter_wal(cur, timeout)
                cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
        finally:
            cur.close()


def _lock_timeout(engine: Engine, backend: str, seconds: float) -> None:
    """How long a write waits for another worker's lock before failing with StorageError."""
    if backend == "postgresql":
        statement = f"SET lock_timeout = {max(1, int(seconds * 1000))}"
    elif backend in ("mysql", "mariadb"):
        statement = f"SET SESSION innodb_lock_wait_timeout = {max(1, round(seconds))}"
    else:
        return

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        try:
            cur.execute(statement)
        finally:
            cur.close()
        dbapi_conn.commit()  # a SET inside a transaction that rolls back would be undone


def _create(make: Any, u: URL, options: dict[str, Any]) -> Any:
    """``make(u, **options)``, its failures as chatledger's errors: an unknown dialect, a
    driver that is not installed, an engine option the dialect refuses."""
    twin = "AsyncLedger" if make is create_async_engine else "Ledger"
    try:
        return make(u, **options)
    except sa_exc.NoSuchModuleError:
        raise InvalidArgumentError(
            "url",
            f"names an unknown database or driver {u.drivername!r}; chatledger runs on sqlite, "
            "postgresql and mysql (mariadb)",
        ) from None
    except ImportError as exc:
        module = exc.name or u.get_driver_name()
        raise MissingDependencyError(module, f"{twin} on {u.drivername}") from None
    except (TypeError, sa_exc.ArgumentError) as exc:
        raise InvalidArgumentError("engine_options", str(exc)) from None
    except sa_exc.InvalidRequestError as exc:  # e.g. a sync-only driver for AsyncLedger
        raise InvalidArgumentError("url", str(exc)) from None


def make_sync_engine(url: str | URL, *, lock_timeout: float = 30.0, **options: Any) -> Engine:
    u = resolve_url(url, asynchronous=False)
    engine: Engine = _create(create_engine, u, _engine_options(u, options, lock_timeout))
    if u.get_backend_name() == "sqlite":
        _sqlite_pragmas(engine, _is_memory(u), lock_timeout)
    _lock_timeout(engine, u.get_backend_name(), lock_timeout)
    return engine


def make_async_engine(url: str | URL, *, lock_timeout: float = 30.0, **options: Any) -> AsyncEngine:
    u = resolve_url(url, asynchronous=True)
    engine: AsyncEngine = _create(create_async_engine, u, _engine_options(u, options, lock_timeout))
    if u.get_backend_name() == "sqlite":
        _sqlite_pragmas(engine.sync_engine, _is_memory(u), lock_timeout)
    _lock_timeout(engine.sync_engine, u.get_backend_name(), lock_timeout)
    return engine
