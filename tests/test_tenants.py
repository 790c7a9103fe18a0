"""Tenants and data protection: owner scoping, erasure, retention, encryption at rest."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

import chatledger as cl
from chatledger.store.schema import completions, conversations, messages, summaries

SECRET = "my card number is 4111 1111 1111 1111"


def rows_of(ledger: cl.Ledger, owner: str) -> dict[str, int]:
    with ledger.engine.connect() as conn:
        pks = select(conversations.c.pk).where(conversations.c.owner == owner)
        return {
            t.name: conn.execute(
                select(func.count()).select_from(t).where(t.c.conversation_pk.in_(pks))
            ).scalar_one()
            for t in (messages, summaries, completions)
        }


def fill(conv: cl.Conversation) -> None:
    for i in range(8):
        conv.append({"role": "user", "content": f"{SECRET} question {i} " * 8})
        conv.record(
            {
                "id": f"{conv.id}-{i}",
                "model": "gpt-4o",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": f"answer {i} " * 20},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 100, "completion_tokens": 20},
            }
        )


def summarize(previous: str | None, msgs: list[dict[str, Any]]) -> str:
    return f"{SECRET}: summary of {len(msgs)}"


def test_owner_scoping_and_erasure(ledger: cl.Ledger, uid: str) -> None:
    alice, bob = f"alice-{uid}", f"bob-{uid}"
    a = ledger.conversation(f"a-{uid}", owner=alice, model="gpt-4o")
    b = ledger.conversation(f"b-{uid}", owner=bob, model="gpt-4o")
    fill(a)
    fill(b)
    a.window([cl.Summarize(summarize, trigger=300, keep=150), cl.TokenBudget(2000)])
    # another owner sees nothing and learns nothing
    for call in (
        lambda: ledger.get(a.id, owner=bob),
        lambda: ledger.delete(a.id, owner=bob),
    ):
        with pytest.raises(cl.ConversationNotFoundError) as info:
            call()
        assert str(info.value) == f"conversation {a.id!r} not found"
    assert [c.id for c in ledger.conversations(owner=bob)] == [b.id]
    assert ledger.usage(owner=alice).requests == 8
    counts = rows_of(ledger, alice)
    assert counts["chatledger_messages"] == 16 and counts["chatledger_completions"] == 8
    assert counts["chatledger_summaries"] >= 1
    assert ledger.delete_owner(alice) == 1
    with ledger.engine.connect() as conn:
        leftover = {
            t.name: conn.execute(
                select(func.count()).select_from(t).where(t.c.conversation_pk == a._pk)
            ).scalar_one()
            for t in (messages, summaries, completions)
        }
    assert leftover == {
        "chatledger_messages": 0,
        "chatledger_summaries": 0,
        "chatledger_completions": 0,
    }
    assert ledger.usage(owner=alice).requests == 0
    assert len(b.messages()) == 16  # the other tenant is untouched


def test_retention_deletes_idle_conversations(ledger: cl.Ledger, uid: str) -> None:
    owner = f"ret-{uid}"
    old = ledger.conversation(f"old-{uid}", owner=owner)
    old.append({"role": "user", "content": "long ago"})
    fresh = ledger.conversation(f"fresh-{uid}", owner=owner)
    fresh.append({"role": "user", "content": "just now"})
    with ledger.engine.begin() as conn:
        conn.execute(
            update(conversations)
            .where(conversations.c.id == old.id)
            .values(updated_at=old.info.updated_at - timedelta(days=100))
        )
    assert ledger.delete_idle(timedelta(days=90), owner=owner) == 1
    assert [c.id for c in ledger.conversations(owner=owner)] == [fresh.id]
    with pytest.raises(cl.InvalidArgumentError, match="older_than"):
        ledger.delete_idle(timedelta(0))


@pytest.fixture
def keys() -> tuple[str, str]:
    return cl.Encryption.generate_key(), cl.Encryption.generate_key()


def test_encryption_at_rest_sqlite_file_has_no_plaintext(
    tmp_path: Path, keys: tuple[str, str]
) -> None:
    path = tmp_path / "secret.db"
    url = f"sqlite:///{path}"
    with cl.Ledger(url, encryption=cl.Encryption([keys[0]])) as led:
        conv = led.conversation("c", owner="o", model="gpt-4o", metadata={"note": SECRET})
        fill(conv)
        w = conv.window(
            [cl.Summarize(summarize, trigger=300, keep=150), cl.TokenBudget(2000)], explain=True
        )
        assert w.summary is not None
        history = conv.messages()
        assert SECRET in history[0]["content"]
        # counts and windows work: computed from stored counts, the content decrypted
        assert conv.count_tokens() == cl.count_tokens(history, "gpt-4o")
        assert w.prompt_tokens == cl.count_tokens(w.messages, "gpt-4o")
        assert conv.info.metadata == {"note": SECRET}
        conv.record(
            {
                "id": "multi",
                "model": "gpt-4o",
                "choices": [
                    {
                        "index": i,
                        "message": {"role": "assistant", "content": f"{SECRET} {i}"},
                        "finish_reason": "stop",
                    }
                    for i in range(2)
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1},
            }
        )
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())  # the file, its WAL and SHM
    for needle in ("4111 1111", "question 3", "answer 2", "summary of"):
        assert needle.encode() not in raw, needle
    # a wrong key fails clearly; no key at all too
    wrong = cl.Ledger(url, encryption=cl.Encryption([keys[1]]))
    with wrong, pytest.raises(cl.DecryptionError, match="key"):
        wrong.get("c").messages()
    with cl.Ledger(url) as none, pytest.raises(cl.DecryptionError, match="encrypt"):
        none.get("c").messages()
    # rotation: the new key first, the old one still accepted, everything re-encrypted
    with cl.Ledger(url, encryption=cl.Encryption([keys[1], keys[0]])) as both:
        assert both.get("c").messages() == [
            *history,
            {"role": "assistant", "content": f"{SECRET} 0"},
        ]
        assert both.rotate_encryption(batch=7) > len(history)
    with cl.Ledger(url, encryption=cl.Encryption([keys[1]])) as new_only:
        conv = new_only.get("c")
        assert conv.messages()[: len(history)] == history
        assert conv.usage_records()[-1].metadata is not None
        assert conv.window(cl.TokenBudget(2000))[-1]["content"].startswith(SECRET)


def test_encryption_on_server_databases(db_url: str, uid: str, keys: tuple[str, str]) -> None:
    with cl.Ledger(db_url, encryption=cl.Encryption([keys[0]])) as led:
        conv = led.conversation(uid, model="gpt-4o")
        conv.append({"role": "user", "content": SECRET}, metadata={"k": SECRET})
        assert conv.messages() == [{"role": "user", "content": SECRET}]
        assert conv.records()[0].metadata == {"k": SECRET}
        with led.engine.connect() as conn:
            data, meta = conn.execute(
                select(messages.c.data, messages.c.meta).where(
                    messages.c.conversation_pk == conv._pk
                )
            ).one()
        assert SECRET not in data and SECRET not in meta and data.startswith("enc1:")
        assert json.dumps(conv.messages())  # decrypts to the original


def test_bad_keys_are_refused() -> None:
    with pytest.raises(cl.InvalidArgumentError, match="keys"):
        cl.Encryption([])
    with pytest.raises(cl.InvalidArgumentError, match=r"keys\[0\]"):
        cl.Encryption(["not a key"])
    with pytest.raises(cl.InvalidArgumentError, match="encryption"):
        cl.Ledger("sqlite://", encryption="secret")  # type: ignore[arg-type]
