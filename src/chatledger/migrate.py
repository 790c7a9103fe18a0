"""Bring a database's chatledger tables to the schema this version uses (Alembic).

``upgrade(url)`` runs every migration the database has not had; a database made by
``Ledger(create_tables=True)`` is already recorded at the newest revision. Migrations ship
inside the package and touch only ``chatledger_*`` tables, keeping their own version table,
so they live beside an application's own Alembic history without meeting it.
Alembic is one of chatledger's own dependencies: this works on a plain install.

Upgrades hold the schema lock (see ``store/locks.py``), the same one a ledger takes when it
creates tables: any number of upgrades and starting applications may run at once, and all of
them succeed. A database at a revision this version does not know (made by a newer
chatledger) raises :class:`SchemaVersionError`, one line, instead of a traceback.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import URL, Connection, Engine

from chatledger.encryption import Codec, Encryption, RotationReport
from chatledger.errors import InvalidArgumentError, SchemaVersionError
from chatledger.store.engine import make_sync_engine
from chatledger.store.locks import session_lock
from chatledger.store.maintenance import encryption_setting, set_encryption

__all__ = ["current", "encrypt", "heads", "upgrade"]

_HERE = Path(__file__).resolve().parent / "store" / "migrations"
_VERSION_TABLE = "chatledger_alembic_version"
# a migration may wait for another one, or for a long-running application transaction
_MIGRATION_LOCK_TIMEOUT = 600.0


def _config(connection: Connection) -> Any:
    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE))
    cfg.attributes["connection"] = connection
    return cfg


def _engine(target: str | URL | Engine) -> tuple[Engine, bool]:
    if isinstance(target, Engine):
        return target, False
    return make_sync_engine(target, lock_timeout=_MIGRATION_LOCK_TIMEOUT), True


def _revision(conn: Connection) -> str | None:
    ctx = MigrationContext.configure(conn, opts={"version_table": _VERSION_TABLE})
    return ctx.get_current_revision()


def _known(at: str | None) -> None:
    """Refuse a database at a revision these migrations do not contain."""
    script = ScriptDirectory(str(_HERE))
    if at is not None and at not in {r.revision for r in script.walk_revisions()}:
        raise SchemaVersionError(
            f"database schema is at revision {at}, which this chatledger does not know "
            f"(it ships {', '.join(script.get_heads())}): it was made by a newer chatledger; "
            "upgrade the package"
        )


def upgrade(target: str | URL | Engine, revision: str = "head") -> str | None:
    """Migrate the database to ``revision`` (the newest by default); returns where it is now.
    A revision these migrations do not ship is an :class:`InvalidArgumentError`, before the
    database is touched."""
    _check_target(revision)
    engine, owned = _engine(target)
    sqlite = engine.dialect.name == "sqlite"
    try:
        with engine.connect() as conn, session_lock(conn):
            if sqlite:  # tables are copied to alter them: a DROP must not cascade
                conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
                conn.commit()
            try:
                with conn.begin():
                    if sqlite:
                        conn.exec_driver_sql("BEGIN IMMEDIATE")  # the write lock, held to commit
                    _known(_revision(conn))
                    command.upgrade(_config(conn), revision)
            except CommandError as exc:
                raise SchemaVersionError(f"cannot upgrade the chatledger schema: {exc}") from None
            finally:
                if sqlite:
                    conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                    conn.commit()
        return current(engine)
    finally:
        if owned:
            engine.dispose()


def current(target: str | URL | Engine) -> str | None:
    """The revision the database is at (None: no chatledger tables yet)."""
    engine, owned = _engine(target)
    try:
        with engine.connect() as conn:
            return _revision(conn)
    finally:
        if owned:
            engine.dispose()


def _check_target(revision: object) -> None:
    if not isinstance(revision, str) or not revision:
        raise InvalidArgumentError("revision", "must be a revision id such as 'head'")
    if revision in ("head", "heads", "base") or re.search(r"[+-]\d+$", revision):
        return  # relative steps ("+1", "head-1") are Alembic's to resolve
    script = ScriptDirectory(str(_HERE))
    try:
        script.get_revision(revision)
    except CommandError:
        known = ", ".join(sorted(r.revision for r in script.walk_revisions()))
        raise InvalidArgumentError(
            "revision", f"{revision!r} is not a chatledger revision (these ship: head, {known})"
        ) from None


def heads() -> list[str]:
    """The newest revision(s) this version of chatledger ships."""
    script = ScriptDirectory(str(_HERE))
    return list(script.get_heads())


def encrypt(target: str | URL | Engine, encryption: Codec) -> RotationReport:
    """Turn a plaintext database into an encrypted one: record it as encrypted, then encrypt
    every stored value (``rotate_encryption``). Stop the database's workers without keys
    first: they checked the setting when they started, and would go on writing plaintext."""
    from chatledger.ledger import Ledger

    if not isinstance(encryption, Encryption):
        raise InvalidArgumentError("encryption", "must be a chatledger.Encryption")
    engine, owned = _engine(target)
    try:
        with engine.connect() as conn, session_lock(conn), conn.begin():
            if encryption_setting(conn) != "fernet":
                set_encryption(conn, "fernet")
        with Ledger(engine, create_tables=False, encryption=encryption) as ledger:
            return ledger.rotate_encryption()
    finally:
        if owned:
            engine.dispose()
