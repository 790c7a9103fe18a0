"""Migrations: the shipped revisions build exactly the schema the code uses, on every
database, and upgrading keeps every row."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import create_engine, text

import chatledger as cl
from chatledger import migrate
from chatledger.store.engine import resolve_url
from chatledger.store.schema import SCHEMA_VERSION, metadata

pytest.importorskip("alembic")


def fresh_database(backend: str, db_url: str, tmp_path: object) -> str:
    """An empty database of its own (the suite's shared one already has the tables)."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path}/migrate-{uuid.uuid4().hex[:6]}.db"
    name = f"clmig_{uuid.uuid4().hex[:10]}"
    engine = create_engine(resolve_url(db_url, asynchronous=False), isolation_level="AUTOCOMMIT")
    with engine.connect() as c:
        c.execute(text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return resolve_url(db_url, asynchronous=False).set(database=name).render_as_string(False)


def drop_database(backend: str, db_url: str, url: str) -> None:
    if backend == "sqlite":
        return
    name = resolve_url(url, asynchronous=False).database
    engine = create_engine(resolve_url(db_url, asynchronous=False), isolation_level="AUTOCOMMIT")
    force = " WITH (FORCE)" if backend == "postgresql" else ""
    with engine.connect() as c:
        c.execute(text(f"DROP DATABASE IF EXISTS {name}{force}"))
    engine.dispose()


def test_migrations_build_the_schema_the_code_uses(
    backend: str, db_url: str, tmp_path: object
) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    url = fresh_database(backend, db_url, tmp_path)
    try:
        assert migrate.current(url) is None
        assert migrate.upgrade(url) == SCHEMA_VERSION == migrate.heads()[0]
        engine = cl.Ledger(url, create_tables=False).engine
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn,
                opts={
                    "include_name": lambda n, t, p: (
                        t != "table" or str(n).startswith("chatledger_")
                    ),
                    "compare_type": True,
                },
            )
            diff = [d for d in compare_metadata(ctx, metadata) if "alembic_version" not in str(d)]
        engine.dispose()
        assert diff == []
    finally:
        drop_database(backend, db_url, url)


def test_upgrade_keeps_data_and_create_tables_is_at_head(
    backend: str, db_url: str, tmp_path: object
) -> None:
    url = fresh_database(backend, db_url, tmp_path)
    try:
        migrate.upgrade(url, "0001")  # the oldest released schema
        with cl.Ledger(url, create_tables=False) as led:
            conv = led.conversation("kept", owner="o", system="sys")
            conv.extend(
                [{"role": "user", "content": "über 😀"}, {"role": "assistant", "content": "ok"}]
            )
            before = conv.records()
        assert migrate.upgrade(url) == migrate.heads()[0]
        with cl.Ledger(url, create_tables=False) as led:
            assert led.get("kept", owner="o").records() == before
        # a database made by create_tables=True is recorded at the newest revision
        other = f"sqlite:///{tmp_path}/created-{uuid.uuid4().hex[:6]}.db"
        cl.Ledger(other).conversation("x")
        assert migrate.current(other) == migrate.heads()[0]
        assert migrate.upgrade(other) == migrate.heads()[0]
    finally:
        drop_database(backend, db_url, url)


def test_db_command(tmp_path: object) -> None:
    from chatledger.cli import main

    url = f"sqlite:///{tmp_path}/cmd.db"
    assert main(["--db", url, "db", "upgrade"]) == 0
    assert migrate.current(url) == migrate.heads()[0]
    assert main(["--db", url, "db", "current"]) == 0
