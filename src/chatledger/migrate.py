"""Bring a database's chatledger tables to the schema this version uses (Alembic).

``upgrade(url)`` runs every migration the database has not had; a database made by
``Ledger(create_tables=True)`` is already recorded at the newest revision. Migrations ship
inside the package and touch only ``chatledger_*`` tables, keeping their own version table,
so they live beside an application's own Alembic history without meeting it.
Needs the ``alembic`` package (``pip install chatledger[migrations]``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import URL, Connection, Engine

from chatledger.errors import InvalidArgumentError
from chatledger.store.engine import make_sync_engine

__all__ = ["current", "heads", "upgrade"]

_HERE = Path(__file__).resolve().parent / "store" / "migrations"


def _config(connection: Connection) -> Any:
    try:
        from alembic.config import Config
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise InvalidArgumentError(
            "migrations", "need the alembic package: pip install chatledger[migrations]"
        ) from exc
    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE))
    cfg.attributes["connection"] = connection
    return cfg


def _engine(target: str | URL | Engine) -> tuple[Engine, bool]:
    if isinstance(target, Engine):
        return target, False
    return make_sync_engine(target), True


def upgrade(target: str | URL | Engine, revision: str = "head") -> str | None:
    """Migrate the database to ``revision`` (the newest by default); returns where it is now."""
    from alembic import command

    engine, owned = _engine(target)
    try:
        with engine.begin() as conn:
            command.upgrade(_config(conn), revision)
        return current(engine)
    finally:
        if owned:
            engine.dispose()


def current(target: str | URL | Engine) -> str | None:
    """The revision the database is at (None: no chatledger tables yet)."""
    from alembic.runtime.migration import MigrationContext

    engine, owned = _engine(target)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn, opts={"version_table": "chatledger_alembic_version"}
            )
            return ctx.get_current_revision()
    finally:
        if owned:
            engine.dispose()


def heads() -> list[str]:
    """The newest revision(s) this version of chatledger ships."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(_HERE))
    return list(script.get_heads())
