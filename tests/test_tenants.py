"""Tenants and data protection: owner scoping, erasure and retention, and the database's
record of whether it is encrypted, for both twins (encryption at rest itself, keys and
rotation, is tests/test_encryption.py)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

import chatledger as cl
from chatledger import migrate
from chatledger.encryption import EncryptionMismatchError
from chatledger.store.schema import completions, conversations, messages, summaries
from test_migrations import drop_database, fresh_database
from twins import AnyConversation, AnyLedger, Opener, stored_pk

pytestmark = pytest.mark.twins

SECRET = "my card number is 4111 1111 1111 1111"


def rows_of(ledger: AnyLedger, owner: str) -> dict[str, int]:
    with ledger.engine.connect() as conn:
        pks = select(conversations.c.pk).where(conversations.c.owner == owner)
        return {
            t.name: conn.execute(
                select(func.count()).select_from(t).where(t.c.conversation_pk.in_(pks))
            ).scalar_one()
            for t in (messages, summaries, completions)
        }


def fill(conv: AnyConversation) -> None:
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


def test_owner_scoping_and_erasure(ledger: AnyLedger, uid: str) -> None:
    alice, bob = f"alice-{uid}", f"bob-{uid}"
    a = ledger.conversation(f"a-{uid}", owner=alice, model="gpt-4o")
    b = ledger.conversation(f"b-{uid}", owner=bob, model="gpt-4o")
    fill(a)
    fill(b)
    a_pk = stored_pk(ledger, a.id)
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
                select(func.count()).select_from(t).where(t.c.conversation_pk == a_pk)
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


def test_retention_deletes_idle_conversations(ledger: AnyLedger, uid: str) -> None:
    owner = f"ret-{uid}"
    old = ledger.conversation(f"old-{uid}", owner=owner)
    old.append({"role": "user", "content": "long ago"})
    old.record(
        {"id": f"old-{uid}", "model": "gpt-4o", "choices": [], "usage": {"prompt_tokens": 9}}
    )
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
    assert ledger.usage(owner=owner).prompt_tokens == 9  # retention keeps the billing record
    with pytest.raises(cl.InvalidArgumentError, match="older_than"):
        ledger.delete_idle(timedelta(0))


# --- the database records whether it is encrypted ----------------------------------------------


@pytest.fixture
def own_url(backend: str, db_url: str, tmp_path: Path) -> Iterator[str]:
    """A database of this test's own: whether a database is encrypted is the database's."""
    url = fresh_database(backend, db_url, tmp_path)
    yield url
    drop_database(backend, db_url, url)


def count_rows(led: AnyLedger) -> int:
    with led.engine.connect() as c:
        return sum(
            c.execute(select(func.count()).select_from(t)).scalar_one()
            for t in (conversations, messages, completions)
        )


def test_a_ledger_without_keys_never_touches_an_encrypted_database(
    open_ledger: Opener, own_url: str
) -> None:
    key = cl.Encryption.generate_key()
    with open_ledger(own_url, encryption=cl.Encryption([key])) as led:
        led.conversation("c", owner="o").append({"role": "user", "content": SECRET})
        before = count_rows(led)
    # a worker started without the key: refused before anything is read or written
    with open_ledger(own_url) as keyless:
        for call in (
            lambda: keyless.conversation("new", owner="o"),
            lambda: keyless.get("c", owner="o"),
            lambda: keyless.usage(owner="o"),
        ):
            with pytest.raises(EncryptionMismatchError, match="encrypted"):
                call()
        assert count_rows(keyless) == before
    with open_ledger(own_url, encryption=cl.Encryption([key])) as led:
        assert led.get("c", owner="o").messages()[0]["content"] == SECRET


def test_a_ledger_with_keys_refuses_a_plaintext_database_until_it_is_encrypted(
    open_ledger: Opener, own_url: str
) -> None:
    key = cl.Encryption.generate_key()
    with open_ledger(own_url) as plain:
        plain.conversation("c", owner="o").append({"role": "user", "content": SECRET})
    keyed = open_ledger(own_url, encryption=cl.Encryption([key]))
    with keyed, pytest.raises(EncryptionMismatchError, match=r"migrate\.encrypt"):
        keyed.get("c", owner="o")
    report = migrate.encrypt(own_url, cl.Encryption([key]))
    assert report.complete and report.rotated >= 1
    with open_ledger(own_url, encryption=cl.Encryption([key])) as keyed:
        assert keyed.get("c", owner="o").messages() == [{"role": "user", "content": SECRET}]
        with keyed.engine.connect() as c:
            data = c.execute(select(messages.c.data)).scalars().all()
        assert data and all(d.startswith("enc1:") for d in data)
    with open_ledger(own_url) as plain, pytest.raises(EncryptionMismatchError):
        plain.get("c", owner="o")


def test_enc1_is_only_text_to_a_ledger_without_encryption(ledger: AnyLedger, uid: str) -> None:
    """No in-band marker decides what a value is: a message or a summary that starts with
    ``enc1:`` is text to an unencrypted ledger, never something to decrypt."""
    forged = "enc1:gAAAAABmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZm"
    conv = ledger.conversation(uid, model="gpt-4o")
    for i in range(6):
        conv.append({"role": "user", "content": f"{forged} {i} " * 10})
        conv.append({"role": "assistant", "content": "noted " * 20})
    conv.update(metadata={"note": forged})

    def echo(previous: str | None, msgs: list[dict[str, Any]]) -> str:
        return forged  # a summary that starts with the marker, as a user could make it

    w = conv.window([cl.Summarize(echo, trigger=200, keep=100)], explain=True)
    assert w.summary is not None and w.summary.text == forged
    again = ledger.get(uid)
    w = again.window([cl.Summarize(echo, trigger=200, keep=100)], explain=True)
    assert w.summary is not None and not w.summary.created and w.summary.text == forged
    assert again.messages()[0]["content"].startswith(forged)
    assert again.info.metadata == {"note": forged}


def test_plaintext_in_an_encrypted_database_is_flagged(
    open_ledger: Opener, own_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    enc = cl.Encryption([cl.Encryption.generate_key()])
    led = open_ledger(own_url, encryption=enc)
    led.conversation("c").append({"role": "user", "content": "sealed"})
    with led.engine.begin() as c:  # written around chatledger (an old worker, a hand edit)
        c.execute(update(messages).values(data='{"role":"user","content":"planted"}'))
    with caplog.at_level(logging.WARNING, logger="chatledger"):
        assert led.get("c").messages() == [{"role": "user", "content": "planted"}]
    assert "unencrypted value" in caplog.text and "rotate_encryption" in caplog.text
