"""Backup and restore (chatledger.backup): every field round-trips on every database, imports
are idempotent and atomic per conversation, exports are byte-identical across SQLite,
PostgreSQL and MariaDB, the fine-tuning format works both ways, and repair makes API-invalid
histories importable."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, make_url, select, text, update

import chatledger as cl
from chatledger.backup import (
    FORMAT_NAME,
    ImportReport,
    export_jsonl,
    import_jsonl,
)
from chatledger.repair import repair_history
from chatledger.store.engine import resolve_url
from chatledger.store.schema import completions, conversations, messages, summaries
from conftest import backend_url
from strategies import conversations as histories

SECRET = "the launch code is 0000"


def call(cid: str, name: str = "search") -> dict[str, Any]:
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": "{}"}}


def completion(rid: str, content: str, finish: str = "stop") -> dict[str, Any]:
    return {
        "id": rid,
        "model": "gpt-4o",
        "system_fingerprint": "fp_1",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish,
            }
        ],
        "usage": {"prompt_tokens": 40, "completion_tokens": 7},
    }


def build(ledger: cl.Ledger, owner: str) -> None:
    """Conversations with every field a backup keeps: title, metadata, a pinned prefix,
    message metadata, statuses and idempotency keys, tool calls (one still open), usage rows,
    a summary, and a fork (whose id sorts before its parent's)."""
    conv = ledger.create(
        "z-main", owner=owner, system="You are terse.", title="Trip", metadata={"b": 1, "a": [1]}
    )
    conv.append({"role": "user", "content": f"{SECRET}. Plan day 0. " * 20}, idempotency_key="k0")
    conv.record(completion(f"{owner}-r0", "Booked day 0. " * 20, "length"), metadata={"n": 0})
    conv.append({"role": "user", "content": "search for me"}, metadata={"lang": "é"})
    conv.append({"role": "assistant", "tool_calls": [call("c1"), call("c2", "book")]})
    conv.extend(
        [
            {"role": "tool", "tool_call_id": "c2", "content": "booked"},
            {"role": "tool", "tool_call_id": "c1", "content": "found 𝄞"},
        ],
        idempotency_key="batch",
    )
    for i in range(1, 6):
        conv.append({"role": "user", "content": f"Plan day {i}. " * 20})
        conv.record(completion(f"{owner}-r{i}", f"Booked day {i}. " * 20))
    window = conv.window(
        [cl.Summarize(lambda prev, msgs: f"{SECRET}: {len(msgs)} folded", trigger=400, keep=200)],
        explain=True,
    )
    assert window.summary is not None
    conv.fork("a-fork", at_seq=6)
    waiting = ledger.create("m-waiting", owner=owner, model="gpt-4o-mini")
    waiting.append({"role": "user", "content": "call a tool"})
    waiting.append({"role": "assistant", "tool_calls": [call("w1")]})


def export(ledger: cl.Ledger, **options: Any) -> str:
    out = io.StringIO()
    export_jsonl(ledger, out, **options)
    return out.getvalue()


def restore(ledger: cl.Ledger, data: str, **options: Any) -> ImportReport:
    return import_jsonl(ledger, io.StringIO(data), **options)


def state(ledger: cl.Ledger, owner: str) -> list[Any]:
    """What a conversation shows through the public API, for every conversation of owner."""
    out: list[Any] = []
    for info in sorted(ledger.conversations(owner=owner), key=lambda i: i.id):
        conv = ledger.get(info.id, owner=owner)
        out += [info, conv.records(), conv.usage(), conv.usage_records()]
        if not info.pending_tool_calls:  # a window waits for open calls' results
            out.append(conv.window(cl.TokenBudget(300)))
    return out


def test_round_trip_every_field(db_url: str, uid: str) -> None:
    with cl.Ledger(db_url) as ledger:
        build(ledger, uid)
        with ledger.engine.begin() as conn:  # columns no public call sets directly
            c, u = conversations.c, completions.c
            is_main = (c.owner == uid) & (c.id == "z-main")
            conn.execute(update(conversations).where(is_main).values(window_start=3))
            conn.execute(update(completions).where(u.owner == uid).values(cache_write_tokens=5))
        before, first = state(ledger, uid), export(ledger, owner=uid)
        spent = ledger.usage(owner=uid)
        ledger.delete_owner(uid)
        report = restore(ledger, first)
        assert report == ImportReport(imported=3, unchanged=0, refused=[], repaired=[])
        assert report.ok
        assert state(ledger, uid) == before  # rows, totals, rounds, tool state, windows, usage
        assert ledger.usage(owner=uid) == spent
        assert export(ledger, owner=uid) == first
    header, *lines = [json.loads(line) for line in first.splitlines()]
    assert header == {"format": FORMAT_NAME, "version": 1}
    assert [c["id"] for c in lines] == ["a-fork", "m-waiting", "z-main"]
    fork, waiting, main = lines
    assert (fork["parent"], fork["forked_at"]) == ("z-main", 6)
    assert main["title"] == "Trip" and main["metadata"] == {"b": 1, "a": [1]}
    assert main["window_start"] == 3 and main["usage"][0]["cache_write_tokens"] == 5
    assert (
        main["summaries"][0]["text"] == f"{SECRET}: {main['summaries'][0]['upto_seq'] - 1} folded"
    )
    assert [u["response_id"] for u in main["usage"]] == [f"{uid}-r{i}" for i in range(6)]
    assert main["messages"][2]["status"] == "length"
    assert main["messages"][3]["metadata"] == {"lang": "é"}
    keys = [m["idempotency_key"] for m in main["messages"]]
    assert keys[1] == "k0" and keys[5:7] == ["batch", "batch\x1f1"]
    assert waiting["model"] == "gpt-4o-mini" and "tool_calls" in waiting["messages"][-1]["message"]
    assert all(
        m["created_at"].endswith("Z") and len(m["created_at"]) == 27 for m in main["messages"]
    )


def test_idempotent_and_never_overwrites(db_url: str, uid: str, tmp_path: Path) -> None:
    with cl.Ledger(f"sqlite:///{tmp_path / 'src.db'}") as source:
        build(source, uid)
        data = export(source, owner=uid)
    with cl.Ledger(db_url) as ledger:
        seen: list[int] = []
        assert restore(ledger, data, progress=seen.append).imported == 3
        assert seen == [1, 2, 3]
        # forking touches the parent's updated_at, not its content: still unchanged
        ledger.get("z-main", owner=uid).fork("new-fork")
        again = restore(ledger, data)
        assert (again.imported, again.unchanged, again.refused) == (0, 3, [])
        ledger.get("m-waiting", owner=uid).append(
            {"role": "tool", "tool_call_id": "w1", "content": "mine"}
        )
        kept = ledger.get("m-waiting", owner=uid).messages()
        third = restore(ledger, data)
        assert (third.imported, third.unchanged) == (0, 2) and not third.ok
        [refusal] = third.refused
        assert (refusal.line, refusal.conversation_id) == (3, "m-waiting")
        assert "already exists with other content" in refusal.reason
        assert ledger.get("m-waiting", owner=uid).messages() == kept
        # into another owner: a copy, not a conflict
        other = restore(ledger, data, owner=f"{uid}-2")
        assert other.imported == 3
        assert export(ledger, owner=f"{uid}-2") == data.replace(
            f'"owner":"{uid}"', f'"owner":"{uid}-2"'
        )


def lines_of(owner: str, n: int) -> list[str]:
    out = []
    for i in range(n):
        c = {
            "id": f"c{i}",
            "owner": owner,
            "model": "gpt-4o",
            "created_at": "2025-01-02T03:04:05.000006Z",
            "updated_at": "2025-01-02T03:04:05.000007+02:00",
            "messages": [
                {
                    "seq": 1,
                    "message": {"role": "user", "content": f"hi {i}"},
                    "created_at": "2025-01-02T03:04:05Z",
                }
            ],
        }
        out.append(json.dumps(c))
    return out


def test_atomic_per_conversation(db_url: str, uid: str) -> None:
    lines = lines_of(uid, 4)
    bad = json.loads(lines[2])
    bad["messages"].append(
        {
            "seq": 2,
            "message": {"role": "tool", "tool_call_id": "x", "content": "orphan"},
            "created_at": "2025-01-02T03:04:05Z",
        }
    )
    lines[2] = json.dumps(bad)
    header = "\ufeff" + json.dumps({"format": FORMAT_NAME, "version": 1})  # with a BOM
    data = "\r\n".join([header, *lines]) + "\r\n"
    with cl.Ledger(db_url) as ledger:
        report = restore(ledger, data)
        assert report.imported == 3
        [refusal] = report.refused
        assert (refusal.line, refusal.conversation_id) == (4, "c2")
        assert "answers no tool call" in refusal.reason and "\n" not in refusal.reason
        assert sorted(c.id for c in ledger.conversations(owner=uid)) == ["c0", "c1", "c3"]
        info = ledger.get("c0", owner=uid).info
        assert info.updated_at.isoformat() == "2025-01-02T01:04:05.000007+00:00"


HOSTILE = [
    "not json",
    "[1, 2]",
    '{"id": 7}',
    json.dumps({"messages": "x"}),
    "{" * 10_000,
]


def test_hostile_lines_are_refusals(tmp_path: Path, uid: str) -> None:
    good = json.loads(lines_of(uid, 1)[0])
    variants = [
        {**good, "id": "x" * 300},
        {**good, "id": " padded"},
        {**good, "owner": 5},
        {**good, "model": ""},
        {**good, "created_at": "yesterday"},
        {**good, "created_at": "0001-01-01T00:00:00Z"},
        {
            **good,
            "messages": [{**good["messages"][0], "message": {"role": "wizard", "content": "x"}}],
        },
        {**good, "messages": [{**good["messages"][0], "seq": 2}]},
        {**good, "messages": [{**good["messages"][0], "idempotency_key": "a\x00b"}]},
        {
            **good,
            "usage": [{"model": "m", "created_at": "2025-01-02T03:04:05Z", "prompt_tokens": -1}],
        },
        {
            **good,
            "summaries": [
                {"upto_seq": 9, "text": "s", "tokens": 1, "created_at": "2025-01-02T03:04:05Z"}
            ],
        },
        {**good, "metadata": {"x": "\x00"}},
        {**good, "extra": 1},
    ]
    data = "\n".join([*HOSTILE, *map(json.dumps, variants), json.dumps(good)]) + "\n"
    with cl.Ledger(f"sqlite:///{tmp_path / 'h.db'}") as ledger:
        report = restore(ledger, data)
        assert report.imported == 1
        assert [r.line for r in report.refused] == list(range(1, len(HOSTILE) + len(variants) + 1))
        assert all(r.reason and "\n" not in r.reason for r in report.refused)
        finetune = restore(ledger, "[]\n{}\n" + "\n".join(HOSTILE), format="finetune")
        assert (finetune.imported, len(finetune.refused)) == (0, len(HOSTILE) + 2)
        assert restore(ledger, "") == ImportReport()
        with pytest.raises(cl.InvalidArgumentError):
            restore(ledger, json.dumps({"format": FORMAT_NAME, "version": 99}) + "\n")
        with pytest.raises(cl.InvalidArgumentError):
            restore(ledger, json.dumps({"format": FORMAT_NAME, "version": 1}), format="finetune")


def test_cross_database_chain_is_byte_identical(tmp_path: Path, uid: str) -> None:
    """SQLite -> PostgreSQL -> MariaDB -> SQLite: every export the same bytes."""
    with cl.Ledger(f"sqlite:///{tmp_path / 'first.db'}") as first:
        build(first, uid)
        exports = [export(first, owner=uid)]
    for url in (
        backend_url("postgresql", tmp_path),
        backend_url("mariadb", tmp_path),
        f"sqlite:///{tmp_path / 'last.db'}",
    ):
        with cl.Ledger(url) as ledger:
            assert restore(ledger, exports[-1]).imported == 3
            exports.append(export(ledger, owner=uid))
    assert len(set(exports)) == 1


def test_lineage_follows_the_parent(db_url: str, uid: str, tmp_path: Path) -> None:
    with cl.Ledger(f"sqlite:///{tmp_path / 'src.db'}") as source:
        parent = source.create("z-parent", owner=uid)
        parent.append({"role": "user", "content": "hello"})
        parent.fork("a-child")
        both = export(source, owner=uid)
        alone = export(source, owner=uid, ids=["a-child"])
    with cl.Ledger(db_url) as ledger:
        # the child comes first in the file; its parent later: the lineage stays
        assert restore(ledger, both, owner=uid).repaired == []
        assert ledger.get("a-child", owner=uid).info.parent == "z-parent"
        # without its parent the lineage goes, with a notice, and a re-import is unchanged
        report = restore(ledger, alone, owner=f"{uid}-solo")
        assert report.imported == 1
        [notice] = report.repaired
        assert notice.conversation_id == "a-child" and "z-parent" in notice.change
        child = ledger.get("a-child", owner=f"{uid}-solo").info
        assert (child.parent, child.forked_at) == (None, None)
        assert restore(ledger, alone, owner=f"{uid}-solo").unchanged == 1


def test_pages_and_order(db_url: str, uid: str) -> None:
    ids = ["b", "B", "a", "é", "a0", "Z", "zz", "_"]
    with cl.Ledger(db_url) as ledger:
        for cid in ids:
            ledger.create(cid, owner=uid).append({"role": "user", "content": cid})
        ledger.create("other", owner=f"{uid}-x")
        seen: list[int] = []
        data = export(ledger, owner=uid, page_size=3, progress=seen.append)
        assert seen == list(range(1, len(ids) + 1))
        got = [json.loads(line)["id"] for line in data.splitlines()[1:]]
        assert got == sorted(ids)  # code point order, on every database
        assert export(ledger, owner=uid, page_size=1) == data == export(ledger, owner=uid)
        assert "other" not in data
        with pytest.raises(cl.ConversationNotFoundError):
            export(ledger, owner=uid, ids=["a", "missing"])
        assert export(ledger, owner=uid, ids=["é", "a"]).count("\n") == 3


def test_finetune_both_ways(db_url: str, uid: str) -> None:
    with cl.Ledger(db_url) as ledger:
        conv = ledger.create("ft", owner=uid, system="sys")
        conv.extend(
            [
                {"role": "user", "content": "q"},
                {"role": "assistant", "tool_calls": [call("t1")]},
                {"role": "tool", "tool_call_id": "t1", "content": "r"},
                {"role": "assistant", "content": "a"},
            ]
        )
        data = export(ledger, owner=uid, ids=["ft"], format="finetune")
        assert json.loads(data) == {"messages": conv.messages()}
        tools = [{"type": "function", "function": {"name": "search", "parameters": {}}}]
        lines = [
            data.strip(),
            json.dumps({"messages": [{"role": "user", "content": "x"}], "tools": tools}),
        ]
        source = "\n".join(lines) + "\n"
        report = restore(ledger, source, format="finetune", owner=f"{uid}-ft")
        assert (report.imported, report.refused) == (2, [])
        again = restore(ledger, source, format="finetune", owner=f"{uid}-ft")
        assert (again.imported, again.unchanged) == (0, 2)
        found = ledger.conversations(owner=f"{uid}-ft")
        assert all(c.id.startswith("ft-") for c in found)
        imported = [ledger.get(c.id, owner=f"{uid}-ft").messages() for c in found]
        assert conv.messages() in imported
        named = restore(
            ledger, json.dumps({"id": "named", **json.loads(data)}), format="finetune", owner=uid
        )
        assert named.imported == 1 and ledger.get("named", owner=uid).messages() == conv.messages()


BROKEN: list[dict[str, Any]] = [
    {"role": "user", "content": "go"},
    {"role": "tool", "tool_call_id": "nobody", "content": "orphan"},
    {"role": "assistant", "tool_calls": [call("a"), call("b")]},
    {"role": "tool", "tool_call_id": "a", "content": "A"},
    {"role": "tool", "tool_call_id": "a", "content": "again"},
    {"role": "user", "content": "next"},
    {"role": "assistant", "tool_calls": [call("c")]},
    {"role": "user", "content": "and?"},
    {"role": "assistant", "content": "done", "tool_calls": [call("d")]},
    {"role": "assistant", "content": "more"},
    {"role": "assistant", "tool_calls": [call("e")]},
]


def test_repair_is_pure_and_reported() -> None:
    fixed = repair_history(BROKEN)
    assert [i for i, _ in fixed.kept] == [0, 2, 3, 5, 7, 8, 9, 10]
    assert fixed.kept[1][1]["tool_calls"] == [call("a")]
    assert fixed.kept[5][1] == {"role": "assistant", "content": "done"}
    assert fixed.kept[-1][1] == BROKEN[-1]  # open at the end: a valid stored history
    assert len(fixed.changes) == 5 and all(c.startswith("seq ") for c in fixed.changes)
    assert BROKEN[2]["tool_calls"] == [call("a"), call("b")]  # the input is not changed


def test_repair_on_import(db_url: str, uid: str) -> None:
    line = json.dumps({"id": "broken", "messages": BROKEN})
    with cl.Ledger(db_url) as ledger:
        refused = restore(ledger, line, format="finetune", owner=uid)
        assert refused.imported == 0 and "answers no tool call" in refused.refused[0].reason
        report = restore(ledger, line, format="finetune", owner=uid, repair=True)
        assert report.imported == 1 and len(report.repaired) == 5
        assert report.repaired[0].conversation_id == "broken"
        conv = ledger.get("broken", owner=uid)
        assert [m["role"] for m in conv.messages()] == [
            "user",
            "assistant",
            "tool",
            "user",
            "user",
            "assistant",
            "assistant",
            "assistant",
        ]
        assert conv.info.pending_tool_calls == ("e",)
        # backup lines: summaries and usage follow the messages a repair moved
        backup = json.loads(lines_of(uid, 1)[0])
        when = backup["created_at"]
        backup["messages"] = [
            {"seq": i + 1, "message": m, "created_at": when} for i, m in enumerate(BROKEN[:6])
        ]
        backup["summaries"] = [{"upto_seq": 5, "text": "s", "tokens": 3, "created_at": when}]
        backup["usage"] = [
            {"message_seq": 4, "model": "gpt-4o", "created_at": when},
            {"message_seq": 2, "model": "gpt-4o", "created_at": when},
        ]
        report = restore(ledger, json.dumps(backup), owner=f"{uid}-b", repair=True)
        assert report.imported == 1
        [line_out] = export(ledger, owner=f"{uid}-b").splitlines()[1:]
        out = json.loads(line_out)
        assert [m["seq"] for m in out["messages"]] == [1, 2, 3, 4]
        assert out["summaries"][0]["upto_seq"] == 3
        assert [u["message_seq"] for u in out["usage"]] == [3, None]


@pytest.fixture
def private_url(db_url: str, backend: str) -> Iterator[str]:
    """A database of this test's own: an encrypted ledger records it in the database."""
    if backend == "sqlite":
        yield db_url
        return
    name = f"{make_url(db_url).database}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(resolve_url(db_url, asynchronous=False), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield make_url(db_url).set(database=name).render_as_string(hide_password=False)
    finally:
        force = " WITH (FORCE)" if backend == "postgresql" else ""
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE {name}{force}"))
        admin.dispose()


def test_encrypted_ledgers(private_url: str, uid: str, tmp_path: Path) -> None:
    key = cl.Encryption.generate_key()
    with cl.Ledger(f"sqlite:///{tmp_path / 'enc.db'}", encryption=cl.Encryption([key])) as source:
        build(source, uid)
        data = export(source, owner=uid)
    assert SECRET in data  # an encrypted ledger exports plaintext
    with cl.Ledger(private_url, encryption=cl.Encryption([cl.Encryption.generate_key()])) as target:
        assert restore(target, data).imported == 3
        assert restore(target, data).unchanged == 3
        assert export(target, owner=uid) == data
        with target.engine.connect() as conn:
            for table, column in [
                (messages, messages.c.data),
                (summaries, summaries.c.text),
                (completions, completions.c.response_id),
                (conversations, conversations.c.meta),
            ]:
                stored = [v for v in conn.execute(select(column).select_from(table)).scalars() if v]
                assert stored and all(v.startswith("enc1:") for v in stored)
                assert not any(SECRET in v for v in stored)
    with cl.Ledger(f"sqlite:///{tmp_path / 'plain.db'}") as plain:  # and back to plaintext
        assert restore(plain, data).imported == 3
        assert export(plain, owner=uid) == data


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=histories(max_rounds=4), tagged=st.booleans(), title=st.none() | st.text())
def test_property_export_import_export_is_identity(
    history: list[dict[str, Any]], tagged: bool, title: str | None, tmp_path: Path
) -> None:
    owner = uuid.uuid4().hex[:12]
    title = None if title is None else title.replace("\x00", "")
    with cl.Ledger(f"sqlite:///{tmp_path / 'prop.db'}") as ledger:
        conv = ledger.create("h", owner=owner, title=title, metadata={"t": title})
        metas = [{"i": i, "s": "é𝄞"} if i % 2 else None for i in range(len(history))]
        key = "run-1" if tagged else None
        conv.extend(history, metadata=metas if tagged else None, idempotency_key=key)
        first = export(ledger, owner=owner)
        ledger.delete_owner(owner)
        assert restore(ledger, first).imported == 1
        assert export(ledger, owner=owner) == first
        assert restore(ledger, first).unchanged == 1
