"""Migrations: the shipped revisions build exactly the schema the code uses, on every
database, and upgrading keeps every row."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, MetaData, create_engine, select, text

import chatledger as cl
from chatledger import migrate
from chatledger.store.engine import make_sync_engine, resolve_url
from chatledger.store.schema import SCHEMA_VERSION, metadata

pytest.importorskip("alembic")

TABLES = (
    "chatledger_conversations",
    "chatledger_messages",
    "chatledger_summaries",
    "chatledger_completions",
)


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


@pytest.fixture
def fresh_url(backend: str, db_url: str, tmp_path: object) -> Any:
    url = fresh_database(backend, db_url, tmp_path)
    yield url
    drop_database(backend, db_url, url)


def schema_diff(engine: Engine) -> list[Any]:
    """What alembic's autogenerate finds between the database and the code's tables."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn,
            opts={
                "include_name": lambda n, t, p: t != "table" or str(n).startswith("chatledger_"),
                "compare_type": True,
            },
        )
        return [d for d in compare_metadata(ctx, metadata) if "alembic_version" not in str(d)]


def test_migrations_build_the_schema_the_code_uses(fresh_url: str) -> None:
    assert migrate.current(fresh_url) is None
    assert migrate.upgrade(fresh_url) == SCHEMA_VERSION == migrate.heads()[0]
    engine = make_sync_engine(fresh_url)
    try:
        assert schema_diff(engine) == []
    finally:
        engine.dispose()


T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
STATE = '{"calls":["c1","c2"],"names":["f","g"],"answered":["c1"],"seq":2}'


def _fill_0001(engine: Engine, encrypted: bool) -> None:
    """Rows as chatledger 0.x (schema 0001) wrote them, straight into its tables: an owned
    and an ownerless conversation, messages, a summary, usage rows, a deleted conversation."""
    md = MetaData()
    md.reflect(engine, only=list(TABLES))
    conv, msg, summ, usage = (md.tables[t] for t in TABLES)
    enc = "enc1:gAAAAAB-not-a-real-token" if encrypted else None
    with engine.begin() as c:
        for pk, cid, owner in ((1, "default", "alice"), (2, "solo", None), (3, "gone", "bob")):
            c.execute(
                conv.insert().values(
                    pk=pk, id=cid, owner=owner, model="gpt-4o", encoding="o200k_base",
                    token_profile="o200k_base:1", title=f"t{pk}",
                    meta=enc or '{"k":1}', created_at=T0, updated_at=T0 + timedelta(pk),
                    message_count=2, token_total=20, last_seq=2, last_round_seq=1,
                    prefix_seq=0, tool_state=STATE if pk == 1 else None,
                )
            )  # fmt: skip
            for seq in (1, 2):
                role = "user" if seq == 1 else "assistant"
                c.execute(
                    msg.insert().values(
                        conversation_pk=pk, seq=seq, role=role,
                        data=enc or f'{{"role":"{role}","content":"über 😀 {pk}.{seq}"}}',
                        tokens=10, cum_tokens=10 * seq, round_seq=1, created_at=T0,
                        status=None, meta=None, idempotency_key=f"k{pk}.{seq}",
                    )
                )  # fmt: skip
            c.execute(
                summ.insert().values(
                    conversation_pk=pk, upto_seq=1, text=enc or "summary", tokens=5,
                    model="gpt-4o-mini", created_at=T0, meta=None,
                )
            )  # fmt: skip
            c.execute(
                usage.insert().values(
                    conversation_pk=pk, message_seq=2, model="gpt-4o", response_id=f"r{pk}",
                    system_fingerprint=None, finish_reason="stop", prompt_tokens=100,
                    completion_tokens=20, cached_tokens=0, reasoning_tokens=0,
                    cost_micros=450, created_at=T0, meta=None, idempotency_key=f"response:r{pk}",
                )
            )  # fmt: skip
        # conversation 3 deleted as 0001 did it: gone with its rows, its key never reused
        for table in (msg, summ, usage):
            c.execute(table.delete().where(table.c.conversation_pk == 3))
        c.execute(conv.delete().where(conv.c.pk == 3))
        if engine.dialect.name == "postgresql":  # keys given explicitly: move the sequence on
            c.execute(
                text("SELECT setval(pg_get_serial_sequence('chatledger_conversations', 'pk'), 3)")
            )


def _dump(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    """Every row of the four 0001 tables, by key, as the database returns them."""
    md = MetaData()
    md.reflect(engine, only=list(TABLES))
    out = {}
    with engine.connect() as c:
        for name in TABLES:
            t = md.tables[name]
            rows = c.execute(select(t).order_by(*t.primary_key.columns)).mappings()
            out[name] = [dict(r) for r in rows]
    return out


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_upgrade_from_0001_keeps_every_row(backend: str, fresh_url: str, encrypted: bool) -> None:
    migrate.upgrade(fresh_url, "0001")  # the oldest released schema, through its migration
    engine = make_sync_engine(fresh_url)
    try:
        _fill_0001(engine, encrypted)
        before = _dump(engine)
        assert migrate.upgrade(fresh_url) == SCHEMA_VERSION
        after = _dump(engine)
        # every row kept, byte for byte: "" now stands for no owner, usage rows carry their
        # conversation's owner, and columns of later revisions are empty (a revision counter
        # starts at 0)
        for row in before["chatledger_conversations"]:
            row["owner"] = row["owner"] if row["owner"] is not None else ""
        owners = {r["pk"]: r["owner"] for r in before["chatledger_conversations"]}
        for row in before["chatledger_completions"]:
            row["owner"] = owners[row["conversation_pk"]]
        for name, rows in after.items():
            added = {k for row in rows for k in row} - {k for row in before[name] for k in row}
            starts = {"revision": 0}
            assert all(row[k] == starts.get(k) for row in rows for k in added), (name, added)
            after[name] = [{k: v for k, v in row.items() if k not in added} for row in rows]
        assert after == before
        assert schema_diff(engine) == []
        with engine.connect() as c:
            setting = c.execute(
                text("SELECT value FROM chatledger_settings WHERE name = 'encryption'")
            ).scalar()
        assert setting == ("fernet" if encrypted else "none")
        if encrypted:
            return
        with cl.Ledger(engine, create_tables=False) as led:
            alice = led.get("default", owner="alice")
            assert alice.messages()[1]["content"] == "über 😀 1.2"
            solo = led.get("solo")  # owner=None: the conversation with no owner
            assert solo.owner is None and solo.info.message_count == 2
            assert led.usage(owner="alice").requests == 1
            # (owner, id) is the key now: bob may hold "default" too
            bob = led.conversation("default", owner="bob")
            assert bob.messages() == [] and alice.messages() != []
            # a deleted conversation's key is still never handed out again
            led.create("new")
            assert _pk(engine, "new") > 3
    finally:
        engine.dispose()


def _pk(engine: Engine, cid: str) -> int:
    with engine.connect() as c:
        return int(
            c.execute(
                text("SELECT pk FROM chatledger_conversations WHERE id = :i"), {"i": cid}
            ).scalar_one()
        )


def test_downgrade_to_0001_and_back(fresh_url: str) -> None:
    from alembic import command

    with cl.Ledger(fresh_url) as led:
        led.conversation("x", owner="o").append({"role": "user", "content": "hi"})
        led.conversation("y").record(
            {"id": "r", "model": "gpt-4o", "choices": [], "usage": {"prompt_tokens": 3}}
        )
    engine = make_sync_engine(fresh_url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
                conn.commit()
            with conn.begin():
                command.downgrade(migrate._config(conn), "0001")
        assert migrate.current(engine) == "0001"
        assert migrate.upgrade(engine) == SCHEMA_VERSION
        with cl.Ledger(engine, create_tables=False) as led:
            assert led.get("x", owner="o").messages() == [{"role": "user", "content": "hi"}]
            assert led.get("y").usage().prompt_tokens == 3
    finally:
        engine.dispose()


def test_create_tables_is_at_head(tmp_path: object) -> None:
    url = f"sqlite:///{tmp_path}/created-{uuid.uuid4().hex[:6]}.db"
    with cl.Ledger(url) as led:
        led.conversation("x")
    assert migrate.current(url) == migrate.heads()[0]
    assert migrate.upgrade(url) == migrate.heads()[0]


def test_db_command(tmp_path: object) -> None:
    from chatledger.cli import main

    url = f"sqlite:///{tmp_path}/cmd.db"
    assert main(["--db", url, "db", "upgrade"]) == 0
    assert migrate.current(url) == migrate.heads()[0]
    assert main(["--db", url, "db", "current"]) == 0


def test_upgrade_refuses_a_newer_schema_in_one_line(
    fresh_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from chatledger.cli import main

    migrate.upgrade(fresh_url)
    engine = make_sync_engine(fresh_url)
    with engine.begin() as c:
        c.execute(text("UPDATE chatledger_alembic_version SET version_num = '0099'"))
    engine.dispose()
    capsys.readouterr()
    assert main(["--db", fresh_url, "db", "upgrade"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "0099" in err and "newer chatledger" in err
    with pytest.raises(cl.SchemaVersionError, match="newer than this chatledger"):
        cl.Ledger(fresh_url, create_tables=False).conversations()


def test_encrypting_a_database_with_usage_rows(fresh_url: str) -> None:
    """migrate.encrypt rewrites usage rows too, idempotency keys included (a usage row is
    read by its own key, and its conversation looked up for the hashed key's check)."""
    reply = {
        "id": "resp-1",
        "model": "gpt-4o",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "yo"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1},
    }
    with cl.Ledger(fresh_url) as led:
        conv = led.conversation("c", model="gpt-4o")
        conv.append({"role": "user", "content": "hi"}, idempotency_key="m1")
        conv.record(reply, idempotency_key="k1")
    enc = cl.Encryption([cl.Encryption.generate_key()])
    report = migrate.encrypt(fresh_url, enc)
    assert report.failures == [] and report.tables["completions"].rotated == 1
    with cl.Ledger(fresh_url, encryption=enc) as led:
        conv = led.conversation("c")
        assert conv.messages()[-1] == {"role": "assistant", "content": "yo"}
        assert conv.usage_records()[0].response_id == "resp-1"
        # the hashed keys still replay: nothing is recorded twice
        conv.record(reply, idempotency_key="k1")
        assert len(conv.usage_records()) == 1
