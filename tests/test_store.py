"""The storage suite, on SQLite, PostgreSQL and MariaDB over real connections, for both twins."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from sqlalchemy import func, select, text

import chatledger as cl
from chatledger.store import SCHEMA_VERSION
from chatledger.store.schema import conversations, messages
from twins import AnyConversation, AnyLedger, Opener, stored_pk

pytestmark = pytest.mark.twins


def call(cid: str, args: str = '{"z": 1, "a": [1, 2], "m": {"k": "v"}}') -> dict[str, Any]:
    return {"id": cid, "type": "function", "function": {"name": "lookup", "arguments": args}}


def rows(ledger: AnyLedger, conv: AnyConversation) -> list[Any]:
    with ledger.engine.connect() as conn:
        pk = conn.execute(select(conversations.c.pk).where(conversations.c.id == conv.id)).scalar()
        return conn.execute(
            select(messages).where(messages.c.conversation_pk == pk).order_by(messages.c.seq)
        ).all()


def snapshot(ledger: AnyLedger) -> list[Any]:
    """Every chatledger row, to prove a refused write changed nothing."""
    with ledger.engine.connect() as conn:
        return [
            conn.execute(select(conversations).order_by(conversations.c.pk)).all(),
            conn.execute(
                select(messages).order_by(messages.c.conversation_pk, messages.c.seq)
            ).all(),
        ]


def test_issue_example(ledger: AnyLedger, uid: str) -> None:
    conv = ledger.conversation(
        f"support-{uid}", owner="user-7", model="gpt-4o", system="You are a helpful assistant."
    )
    conv.append({"role": "user", "content": "Who won the world series in 2020?"})
    conv.extend(
        [
            {
                "role": "assistant",
                "content": "The Los Angeles Dodgers won the World Series in 2020.",
            },
            {"role": "user", "content": "Where was it played?"},
        ]
    )
    history = conv.messages()
    assert [m["role"] for m in history] == ["system", "user", "assistant", "user"]
    assert history[0] == {"role": "system", "content": "You are a helpful assistant."}
    n = cl.count_tokens(history, model="gpt-4o", tools=None)
    assert conv.count_tokens() == n
    again = ledger.conversation(f"support-{uid}", owner="user-7")
    assert again.messages() == history
    again.extend(
        [
            {"role": "assistant", "content": None, "tool_calls": [call("a1")]},
            {"role": "tool", "tool_call_id": "a1", "content": "Dodgers 🏆"},
            {"role": "assistant", "content": "Arlington, Texas."},
        ]
    )
    assert "content" not in again.messages()[4]
    assert [r.seq for r in conv.last(2)] == [6, 7]


def test_round_trip_is_identical(
    ledger: AnyLedger, open_ledger: Opener, db_url: str, uid: str
) -> None:
    conv = ledger.conversation(uid, model="gpt-4o-mini")
    long_text = "λ🦄 " * 100_000 + "end"
    sent = [
        {"role": "developer", "content": "Reply in 𝔉𝔯𝔞𝔨𝔱𝔲𝔯 if asked 🙂"},
        {"role": "user", "content": long_text, "name": "Zoë"},
        {"role": "assistant", "content": None, "tool_calls": [call("c1"), call("c2", "{}")]},
        {"role": "tool", "tool_call_id": "c1", "content": "emoji 😀 and 中文"},
        {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "ok"}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "see"},
                {
                    "type": "image_url",
                    "image_url": {"url": "https://example.test/i.png", "detail": "high"},
                },
            ],
        },
        {"role": "assistant", "refusal": "no", "content": "fine"},
    ]
    stored = conv.extend(sent)
    back = conv.messages()
    expected = [{k: v for k, v in m.items() if v is not None} for m in sent]
    assert back == expected
    # key order inside the arguments string is exactly what was sent
    assert (
        back[2]["tool_calls"][0]["function"]["arguments"]
        == '{"z": 1, "a": [1, 2], "m": {"k": "v"}}'
    )
    assert back[1]["content"] == long_text
    assert [s.seq for s in stored] == [1, 2, 3, 4, 5, 6, 7]
    # and a second ledger (a new process) reads the same
    with open_ledger(db_url) as other:
        assert other.get(uid).messages() == expected


def test_seq_tokens_cumulative_rounds(ledger: AnyLedger, uid: str) -> None:
    conv = ledger.conversation(uid, model="gpt-4o", system="sys")
    conv.append({"role": "developer", "content": "dev"})
    conv.extend(
        [
            {"role": "user", "content": "q1"},
            {"role": "assistant", "tool_calls": [call("t1")]},
            {"role": "tool", "tool_call_id": "t1", "content": "r"},
            {"role": "assistant", "content": "a1"},
            {"role": "user", "content": "q2"},
        ]
    )
    conv.append({"role": "assistant", "content": "a2"})
    recs = conv.records()
    assert [r.seq for r in recs] == list(range(1, 9))
    assert [r.round_seq for r in recs] == [0, 0, 3, 3, 3, 3, 7, 7]
    counter = cl.TokenCounter("gpt-4o")
    expected = counter.messages([r.message for r in recs])
    total = 0
    for r, n in zip(recs, expected, strict=True):
        assert r.tokens == n
        total += r.tokens
        assert r.cumulative_tokens == total
    info = conv.refresh()
    assert (info.last_seq, info.message_count, info.token_total) == (8, 8, total)
    assert info.prefix_seq == 2 and info.last_round_seq == 7
    assert conv.count_tokens() == cl.count_tokens(conv.messages(), model="gpt-4o")
    tools = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
            },
        }
    ]
    assert conv.count_tokens(tools) == cl.count_tokens(conv.messages(), model="gpt-4o", tools=tools)
    # database rows agree with what was returned
    assert [r.cum_tokens for r in rows(ledger, conv)] == [r.cumulative_tokens for r in recs]


def test_ranges_and_last(ledger: AnyLedger, uid: str) -> None:
    conv = ledger.conversation(uid)
    conv.extend(
        {"role": "user" if i % 2 == 0 else "assistant", "content": str(i)} for i in range(20)
    )
    assert [m["content"] for m in conv.messages(start=5, stop=8)] == ["4", "5", "6"]
    assert [m["content"] for m in conv.messages(start=18)] == ["17", "18", "19"]
    assert [m["content"] for m in conv.messages(limit=2)] == ["0", "1"]
    assert [r.seq for r in conv.last(3)] == [18, 19, 20]
    assert conv.last(0) == []
    with pytest.raises(cl.InvalidArgumentError, match="start"):
        conv.messages(start=-1)


def test_invalid_input_writes_nothing(ledger: AnyLedger, uid: str) -> None:
    conv = ledger.conversation(uid, system="s")
    conv.append({"role": "user", "content": "hello"})
    before = snapshot(ledger)
    bad_batches: list[list[Any]] = [
        [{"role": "assistant", "content": "ok"}, {"role": "user"}],
        [{"role": "tool", "tool_call_id": "nope", "content": "x"}],
        [{"role": "assistant", "tool_calls": [call("a")]}, {"role": "user", "content": "too soon"}],
        [{"role": "user", "content": "x\x00y"}],
        [{"role": "user", "content": "fine"}, 17],
    ]
    for batch in bad_batches:
        with pytest.raises(cl.InvalidMessageError):
            conv.extend(batch)
    with pytest.raises(cl.InvalidMessageError) as info:
        conv.extend([{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}])
    assert info.value.problems[0].index == 1 and info.value.problems[0].field == "role"
    assert snapshot(ledger) == before


def test_tool_pairing_across_appends(ledger: AnyLedger, uid: str) -> None:
    conv = ledger.conversation(uid)
    conv.append({"role": "user", "content": "weather?"})
    conv.append({"role": "assistant", "tool_calls": [call("p1"), call("p2")]})
    assert conv.refresh().pending_tool_calls == ("p1", "p2")
    with pytest.raises(cl.InvalidMessageError) as info:
        conv.append({"role": "user", "content": "hurry"})
    assert "'p1'" in str(info.value) and "'p2'" in str(info.value)
    conv.append({"role": "tool", "tool_call_id": "p2", "content": "sun"})
    with pytest.raises(cl.InvalidMessageError, match="duplicates"):
        conv.append({"role": "tool", "tool_call_id": "p2", "content": "sun again"})
    with pytest.raises(cl.InvalidMessageError, match="matches no tool_calls id"):
        conv.append({"role": "tool", "tool_call_id": "p9", "content": "?"})
    conv.append({"role": "tool", "tool_call_id": "p1", "content": "rain"})
    assert conv.refresh().pending_tool_calls == ()
    conv.append({"role": "assistant", "content": "sun and rain"})
    cl.validate_messages(conv.messages())


def test_conversation_get_create_and_owner_scoping(ledger: AnyLedger, uid: str) -> None:
    a = ledger.conversation(
        f"c-{uid}", owner=f"alice-{uid}", model="gpt-4.1", title="t", metadata={"k": [1]}
    )
    assert (a.owner, a.model, a.encoding) == (f"alice-{uid}", "gpt-4.1", "o200k_base")
    assert a.info.title == "t" and a.info.metadata == {"k": [1]}
    # get-or-create returns the existing one as stored
    same = ledger.conversation(f"c-{uid}", owner=f"alice-{uid}", model="gpt-3.5-turbo", system="x")
    assert same.model == "gpt-4.1" and same.messages() == []
    with pytest.raises(cl.ConversationNotFoundError):
        ledger.get(f"c-{uid}", owner=f"mallory-{uid}")
    # identity is (owner, id): mallory's "c-..." is a conversation of her own, and creating
    # one tells her nothing about alice's
    theirs = ledger.conversation(f"c-{uid}", owner=f"mallory-{uid}")
    assert theirs.owner == f"mallory-{uid}" and theirs.messages() == []
    with pytest.raises(cl.ConversationNotFoundError):
        ledger.get(f"missing-{uid}")
    ledger.create(f"c-{uid}")  # no owner: another conversation again
    with pytest.raises(cl.ConversationExistsError):
        ledger.create(f"c-{uid}", owner=f"alice-{uid}")
    # case and trailing spaces never alias another owner (MySQL collations would)
    with pytest.raises(cl.ConversationNotFoundError):
        ledger.get(f"c-{uid}", owner=f"ALICE-{uid}")
    with pytest.raises(cl.InvalidArgumentError, match="owner"):
        ledger.get(f"c-{uid}", owner=f"alice-{uid} ")
    generated = ledger.conversation(owner=f"alice-{uid}")
    assert len(generated.id) == 32
    listed = ledger.conversations(owner=f"alice-{uid}")
    assert {c.id for c in listed} == {f"c-{uid}", generated.id}
    assert listed[0].id == generated.id  # newest first


def test_delete_and_delete_owner(ledger: AnyLedger, uid: str) -> None:
    owner = f"o-{uid}"
    convs = [ledger.conversation(f"{uid}-{i}", owner=owner, system="s") for i in range(3)]
    keep = ledger.conversation(f"{uid}-keep", owner=f"other-{uid}", system="s")
    convs[0].append({"role": "user", "content": "hi"})
    ledger.delete(convs[0].id, owner=owner)
    with pytest.raises(cl.ConversationNotFoundError):
        ledger.get(convs[0].id)
    with pytest.raises(cl.ConversationNotFoundError):
        convs[0].append({"role": "user", "content": "after delete"})
    with pytest.raises(cl.ConversationNotFoundError):
        ledger.delete(keep.id, owner=owner)
    assert ledger.delete_owner(owner) == 2
    assert ledger.conversations(owner=owner) == []
    assert keep.messages() == [{"role": "system", "content": "s"}]
    with ledger.engine.connect() as conn:
        orphans = conn.execute(
            select(func.count())
            .select_from(messages)
            .where(~messages.c.conversation_pk.in_(select(conversations.c.pk)))
        ).scalar()
    assert orphans == 0


def test_idempotency_key(ledger: AnyLedger, uid: str) -> None:
    conv = ledger.conversation(uid)
    first = conv.append({"role": "user", "content": "once"}, idempotency_key="k1")
    again = conv.append({"role": "user", "content": "once"}, idempotency_key="k1")
    assert again == first
    batch = [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]
    one = conv.extend(batch, idempotency_key="k2")
    two = conv.extend(batch, idempotency_key="k2")
    assert one == two and len(conv.messages()) == 3
    with pytest.raises(cl.IdempotencyConflictError):
        conv.append({"role": "user", "content": "different"}, idempotency_key="k1")


def test_metadata_per_message(ledger: AnyLedger, uid: str) -> None:
    conv = ledger.conversation(uid)
    conv.append({"role": "user", "content": "x"}, metadata={"ui_id": "m-1", "n": 2})
    assert conv.records()[0].metadata == {"ui_id": "m-1", "n": 2}
    with pytest.raises(cl.InvalidArgumentError, match="metadata"):
        conv.append({"role": "user", "content": "y"}, metadata={"bad": float("nan")})


def test_message_size_limit(open_ledger: Opener, db_url: str, uid: str) -> None:
    with open_ledger(db_url, max_message_bytes=1000) as small:
        conv = small.conversation(uid)
        conv.append({"role": "user", "content": "x" * 900})
        with pytest.raises(cl.InvalidMessageError, match="max_message_bytes"):
            conv.append({"role": "user", "content": "é" * 600})  # 1200 bytes of UTF-8
        assert len(conv.messages()) == 1


def test_model_change_recounts(ledger: AnyLedger, uid: str) -> None:
    conv = ledger.conversation(uid, model="gpt-4o", system="You are a helpful assistant.")
    conv.extend(
        [
            {"role": "user", "content": "Ünïcödé text ✓ " * 20},
            {"role": "assistant", "content": "ok"},
        ]
    )
    info = conv.update(model="gpt-4", title="renamed", metadata={"plan": "pro"})
    assert (info.model, info.encoding, info.title) == ("gpt-4", "cl100k_base", "renamed")
    assert info.metadata == {"plan": "pro"} == conv.refresh().metadata
    recs = conv.records()
    counter = cl.TokenCounter("gpt-4")
    assert [r.tokens for r in recs] == [counter.message(r.message) for r in recs]
    assert conv.count_tokens() == cl.count_tokens(conv.messages(), model="gpt-4")
    nxt = conv.append({"role": "user", "content": "more"})
    assert nxt.tokens == counter.message({"role": "user", "content": "more"})
    assert nxt.cumulative_tokens == sum(r.tokens for r in recs) + nxt.tokens


def test_stale_handle_after_other_worker_changes_model(ledger: AnyLedger, uid: str) -> None:
    mine = ledger.conversation(uid, model="gpt-4o")
    theirs = ledger.get(uid)
    theirs.update(model="gpt-3.5-turbo")
    stored = mine.append({"role": "user", "content": "counted with the new rules"})
    assert mine.model == "gpt-3.5-turbo"
    assert stored.tokens == cl.TokenCounter("gpt-3.5-turbo").message(stored.message)


def test_concurrent_appends_are_gap_free(ledger: AnyLedger, uid: str) -> None:
    """Four workers (threads; on the async twin, concurrent tasks on its one event loop)."""
    conv = ledger.conversation(uid)
    errors: list[BaseException] = []

    def worker(w: int) -> None:
        try:
            handle = ledger.get(uid)
            for i in range(15):
                handle.append({"role": "user", "content": f"w{w} m{i}"})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    recs = conv.records()
    assert [r.seq for r in recs] == list(range(1, 61))
    assert sorted(r.message["content"] for r in recs) == sorted(
        f"w{w} m{i}" for w in range(4) for i in range(15)
    )
    cum = 0
    for r in recs:
        cum += r.tokens
        assert r.cumulative_tokens == cum
    assert conv.refresh().token_total == cum


def test_schema_version_recorded(ledger: AnyLedger, uid: str) -> None:
    # the first call creates the schema (the server databases are shared by every test)
    assert ledger.conversations(owner=f"nobody-{uid}") == []
    with ledger.engine.connect() as conn:
        assert conn.execute(
            text("SELECT version_num FROM chatledger_alembic_version")
        ).scalars().all() == [SCHEMA_VERSION]


def test_stored_json_is_compact_utf8(ledger: AnyLedger, uid: str) -> None:
    conv = ledger.conversation(uid)
    conv.append({"role": "user", "content": "😀"})
    (row,) = rows(ledger, conv)
    assert row.data == '{"role":"user","content":"😀"}'
    assert json.loads(row.data) == {"role": "user", "content": "😀"}


def test_bad_arguments(ledger: AnyLedger) -> None:
    for bad in ["", " x", "x\n", "a" * 256, 5]:
        with pytest.raises(cl.InvalidArgumentError, match="id"):
            ledger.conversation(bad)  # type: ignore[arg-type]
    with pytest.raises(cl.InvalidArgumentError, match="model"):
        ledger.conversation("fine-id-x", model="")
    with pytest.raises(cl.InvalidArgumentError, match="limit"):
        ledger.conversations(limit=0)


def test_stale_handle_after_delete_never_reaches_another_conversation(
    ledger: AnyLedger, uid: str
) -> None:
    alice = ledger.conversation(f"a-{uid}", owner="alice")
    alice.append({"role": "user", "content": "alice's"})
    alice_pk = stored_pk(ledger, alice.id)
    ledger.delete(alice.id, owner="alice")
    bob = ledger.conversation(f"b-{uid}", owner="bob")  # may be given the freed key
    bob.append({"role": "user", "content": "bob secret"})
    assert stored_pk(ledger, bob.id) != alice_pk
    with pytest.raises(cl.ConversationNotFoundError):
        alice.append({"role": "user", "content": "into the void"})
    for call in (alice.messages, alice.refresh, alice.count_tokens, alice.usage, alice.window):
        with pytest.raises(cl.ConversationNotFoundError, match=alice.id):
            call()
    assert bob.messages() == [{"role": "user", "content": "bob secret"}]


def test_extend_with_metadata_per_message(ledger: AnyLedger, uid: str) -> None:
    conv = ledger.conversation(uid)
    stored = conv.extend(
        [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
        metadata=[{"ui": 1}, None],
    )
    assert [s.metadata for s in stored] == [{"ui": 1}, None]
    assert [r.metadata for r in conv.records()] == [{"ui": 1}, None]
    with pytest.raises(cl.InvalidArgumentError, match="one entry"):
        conv.extend([{"role": "user", "content": "c"}], metadata=[None, None])
