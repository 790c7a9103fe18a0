"""chatledger on hash-partitioned PostgreSQL: the sharding layout of docs/scaling.md, single node.

PostgreSQL refuses a partitioned table whose primary key or unique index lacks the partition
key, as Citus refuses a distributed one, so creating the layout checks the key plan; the
workload then runs every kind of statement chatledger issues (create, append, extend, windows
with a summary, request and record, budgets, fork, edit, truncate, export, delete, delete_owner)
against it. The layout is generated from chatledger's own metadata (``sharded_metadata``), so
a column added to the schema is here too.
"""

from __future__ import annotations

import contextlib
import io
import json
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from sqlalchemy import (
    Engine,
    Index,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    create_engine,
    inspect,
    make_url,
    text,
)
from sqlalchemy.exc import SAWarning

import chatledger as cl
from chatledger.backup import export_jsonl
from chatledger.store.engine import resolve_url
from chatledger.store.schema import SCHEMA_VERSION, metadata
from conftest import IN_CI, SERVER_URLS
from openai_server import FakeOpenAI, Reply
from twins import AnyLedger, Opener

PARTITIONS = 4

# table -> (partition key, its new primary key, unique indexes re-keyed to lead with it).
# Conversation-keyed tables hash on conversation_pk; the billing tables (usage outlives its
# conversation, a reservation may have none) hash on owner, the key of a budget's sums.
LAYOUT: dict[str, tuple[str, tuple[str, ...]]] = {
    "chatledger_messages": ("conversation_pk", ("conversation_pk", "seq")),
    "chatledger_summaries": ("conversation_pk", ("conversation_pk", "pk")),
    "chatledger_completions": ("owner", ("owner", "pk")),
    "chatledger_reservations": ("owner", ("owner", "pk")),
    "chatledger_budget_locks": ("owner", ("owner",)),
}


def sharded_metadata() -> MetaData:
    """chatledger's tables, with the partitioned ones declared ``PARTITION BY HASH`` and keys
    that carry their partition key (conversations, settings and the version table stay plain:
    in Citus terms the first is distributed by ``pk``, the others are reference tables)."""
    out = MetaData(naming_convention=metadata.naming_convention)
    for table in metadata.sorted_tables:
        copy = table.to_metadata(out)
        if table.name not in LAYOUT:
            continue
        key, primary = LAYOUT[table.name]
        copy.dialect_options["postgresql"]["partition_by"] = f"HASH ({key})"
        with warnings.catch_warnings():  # "not matching locally specified columns": meant
            warnings.simplefilter("ignore", SAWarning)
            copy.append_constraint(PrimaryKeyConstraint(*primary, name=f"pk_{table.name}"))
        for index in [i for i in copy.indexes if i.unique]:
            cols = [c.name for c in index.columns]
            if key in cols:
                continue
            # unique per conversation, and a conversation has one owner: the same uniqueness
            copy.indexes.discard(index)
            Index(
                index.name,
                *(copy.c[c] for c in [key, *cols]),
                unique=True,
                postgresql_where=index.dialect_options["postgresql"]["where"],
            )._set_parent(copy)
    return out


def create_layout(engine: Engine) -> MetaData:
    sharded = sharded_metadata()
    with engine.begin() as conn:
        sharded.create_all(conn)
        for name in LAYOUT:
            for r in range(PARTITIONS):
                conn.execute(
                    text(
                        f"CREATE TABLE {name}_p{r} PARTITION OF {name} "
                        f"FOR VALUES WITH (MODULUS {PARTITIONS}, REMAINDER {r})"
                    )
                )
        conn.execute(
            text("INSERT INTO chatledger_alembic_version VALUES (:v)"), {"v": SCHEMA_VERSION}
        )
    return sharded


@contextlib.contextmanager
def scratch_database(prefix: str) -> Iterator[str]:
    """A PostgreSQL database of its own (dropped at the end): the layout needs empty tables."""
    base = SERVER_URLS["postgresql"]
    admin = create_engine(resolve_url(base, asynchronous=False), isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
    except Exception as exc:
        admin.dispose()
        why = f"postgresql unreachable at {base}: {exc}"
        if IN_CI:
            pytest.fail(why, pytrace=False)
        pytest.skip(why)
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


HISTORY: list[dict[str, Any]] = [{"role": "system", "content": "You plan trips."}]
for _i in range(6):
    HISTORY.append({"role": "user", "content": f"Find a hotel in city {_i}. " * 6})
    HISTORY.append(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": f"call_{_i}",
                    "type": "function",
                    "function": {"name": "find_hotel", "arguments": json.dumps({"city": _i})},
                }
            ],
        }
    )
    HISTORY.append({"role": "tool", "tool_call_id": f"call_{_i}", "content": "hotel " * 20})
    HISTORY.append({"role": "assistant", "content": f"Booked a hotel in city {_i}. " * 4})


def workload(
    ledger: AnyLedger, exporter: cl.Ledger, server: FakeOpenAI, client: openai.OpenAI
) -> None:
    """Every kind of statement chatledger issues, checked by what it returns; ``exporter``: a
    sync ledger on the same database (export is the sync twin's)."""
    uid = uuid.uuid4().hex[:10]
    owner = f"owner-{uid}"
    convs = [ledger.create(f"c{n}-{uid}", owner=owner, model="gpt-4o") for n in range(6)]
    conv = convs[0]
    conv.extend(HISTORY)
    for other in convs[1:]:  # spread over the partitions
        other.append({"role": "user", "content": "hello"})
    assert conv.info.message_count == len(HISTORY)
    assert ledger.get(conv.id, owner=owner).info.last_seq == len(HISTORY)

    budget = conv.window(cl.TokenBudget(300))
    assert budget[0] == HISTORY[0] and len(budget) < len(HISTORY)
    assert conv.window(cl.StablePrefix(cl.TokenBudget(400)))[0] == HISTORY[0]
    assert conv.window(cl.LastRounds(2))[-1] == HISTORY[-1]

    server.queue(Reply(content="Hotels booked in cities 0 to 5."))
    summarizer = cl.OpenAISummarizer(client, "gpt-4o-mini", max_words=40)
    summarized = conv.window(
        [cl.Summarize(summarizer, trigger=300, keep=150), cl.TokenBudget(600)], explain=True
    )
    assert summarized.summary is not None and summarized.summary.created
    assert summarized.summary.text == "Hotels booked in cities 0 to 5."

    conv.append({"role": "user", "content": "And a museum?"})
    guard = cl.Budget(tokens=1_000_000, scope="owner")
    reply = conv.chat(client, strategy=cl.TokenBudget(2000), budget=guard, max_tokens=50)
    assert reply.choices[0].message.role == "assistant"
    kwargs = conv.request(cl.TokenBudget(2000), max_tokens=50)
    recorded = conv.record(client.chat.completions.create(**kwargs), idempotency_key=uid)
    again = conv.record(client.chat.completions.create(**kwargs), idempotency_key=uid)
    assert recorded.message is not None and again.message is not None
    assert again.message.seq == recorded.message.seq  # the key, unique per conversation
    usage = ledger.usage(owner=owner)
    assert usage.requests == 3 and usage.prompt_tokens > 0  # summary, chat, record (once)

    fork = conv.fork(f"fork-{uid}", at_seq=10)
    assert fork.messages() == conv.messages(stop=11) and len(fork.messages()) == 10
    fork.append({"role": "user", "content": "A different city?"})
    edited = conv.edit(2, {"role": "user", "content": "Find a hostel instead."}, branch=True)
    assert edited.messages()[1]["content"] == "Find a hostel instead."
    dropped = conv.truncate(len(HISTORY) - 4)
    assert conv.info.last_seq == len(HISTORY) - 4 and len(dropped) > 0
    assert conv.pop() is not None

    out = io.StringIO()
    assert export_jsonl(exporter, out, owner=owner) == 8
    assert out.getvalue().count("\n") > 8

    conv.delete()
    with pytest.raises(cl.ConversationNotFoundError):
        ledger.get(conv.id, owner=owner)
    assert ledger.usage(owner=owner).requests == usage.requests  # billing outlives it
    assert ledger.delete_owner(owner) == 7
    assert ledger.conversations(owner=owner) == []
    assert ledger.usage(owner=owner).requests == 0


@pytest.fixture(scope="module")
def partitioned_url() -> Iterator[str]:
    with scratch_database("chatledger_part") as url:
        engine = create_engine(resolve_url(url, asynchronous=False))
        try:
            create_layout(engine)
        finally:
            engine.dispose()
        yield url


@pytest.mark.parametrize("twin", ["sync", "async"])
def test_workload_on_hash_partitioned_tables(
    partitioned_url: str, twin: str, server: FakeOpenAI, client: openai.OpenAI
) -> None:
    with Opener(twin) as opener, cl.Ledger(partitioned_url) as exporter:  # type: ignore[arg-type]
        workload(opener(partitioned_url), exporter, server, client)

    engine = create_engine(resolve_url(partitioned_url, asynchronous=False))
    try:
        with engine.connect() as conn:
            parents = conn.execute(
                text(
                    "SELECT c.relname FROM pg_partitioned_table p "
                    "JOIN pg_class c ON c.oid = p.partrelid"
                )
            ).scalars()
            assert set(parents) == set(LAYOUT)
    finally:
        engine.dispose()


def test_postgresql_refuses_the_keys_of_today() -> None:
    """Why the layout re-keys summaries and the billing tables: the schema's own keys (a
    table's own ``pk``) cannot be partitioned by the conversation key."""
    with scratch_database("chatledger_part") as url:
        engine = create_engine(resolve_url(url, asynchronous=False))
        try:
            plain = MetaData()
            summaries = metadata.tables["chatledger_summaries"].to_metadata(plain)
            metadata.tables["chatledger_conversations"].to_metadata(plain)
            summaries.dialect_options["postgresql"]["partition_by"] = "HASH (conversation_pk)"
            with pytest.raises(Exception, match="partition"), engine.begin() as conn:
                plain.create_all(conn)
            with engine.connect() as conn:
                assert not inspect(conn).has_table("chatledger_summaries")
        finally:
            engine.dispose()


def _table(md: MetaData, name: str) -> Table:
    return md.tables[name]


def test_the_layout_keeps_every_column() -> None:
    sharded = sharded_metadata()
    for table in metadata.sorted_tables:
        assert [c.name for c in _table(sharded, table.name).columns] == [
            c.name for c in table.columns
        ]
        for key in _table(sharded, table.name).primary_key.columns:
            assert key.name in table.c
