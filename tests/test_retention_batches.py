"""Retention in bounded batches: ``delete_owner`` and ``delete_idle`` delete a bounded number of
whole conversations per transaction, so no lock is held for long, and a failure midway leaves
each conversation deleted or kept, never half of one. The batch size is lowered here through
the store's module constants, so a handful of conversations spans several batches."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select, update

import chatledger as cl
from chatledger.store import conversations as conv_store
from chatledger.store.schema import completions, conversations, messages, summaries
from twins import AnyConversation, AnyLedger, statements_of

pytestmark = pytest.mark.twins

LONG_AGO = datetime(2001, 1, 1, tzinfo=UTC)
# older than anything but this module's own rows, so a sweep of every owner touches only them
AGES = timedelta(days=365 * 20)


@pytest.fixture(autouse=True)
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conv_store, "BATCH_CONVERSATIONS", 3)
    monkeypatch.setattr(conv_store, "BATCH_MESSAGES", 5)


class Deletes:
    """Rows each ``DELETE`` of conversation rows removed, one entry per statement (and so per
    transaction: a batch deletes its conversations in one statement)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.batches: list[int] = []

    def seen(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE FROM CHATLEDGER_CONVERSATIONS"):
            self.batches.append(cursor.rowcount)


@pytest.fixture
def deletes(ledger: AnyLedger) -> Iterator[Deletes]:
    watch = Deletes(statements_of(ledger))
    event.listen(watch.engine, "after_cursor_execute", watch.seen)
    yield watch
    event.remove(watch.engine, "after_cursor_execute", watch.seen)


def reply(rid: str) -> dict[str, Any]:
    return {
        "id": rid,
        "model": "gpt-4o",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 2},
    }


def filled(ledger: AnyLedger, cid: str, owner: str) -> AnyConversation:
    """A conversation of three messages (system, user, assistant) and one usage row."""
    conv = ledger.conversation(cid, owner=owner, system="s")
    conv.append({"role": "user", "content": "hi"})
    conv.record(reply(f"r-{cid}"))
    return conv


def counts(ledger: AnyLedger, owner: str) -> dict[str, int]:
    """Rows stored for ``owner``: conversations, and the rows linked to them."""
    with ledger.engine.connect() as conn:
        pks = select(conversations.c.pk).where(conversations.c.owner == owner)
        out = {"conversations": conn.execute(select(func.count()).select_from(pks.subquery()))}
        for t in (messages, summaries, completions):
            where = t.c.conversation_pk.in_(pks)
            out[t.name] = conn.execute(select(func.count()).select_from(t).where(where))
        return {k: int(v.scalar_one()) for k, v in out.items()}


def orphans(ledger: AnyLedger, pks: list[int]) -> int:
    """Messages and summaries left under conversation keys that are gone."""
    with ledger.engine.connect() as conn:
        return sum(
            int(
                conn.execute(
                    select(func.count()).select_from(t).where(t.c.conversation_pk.in_(pks))
                ).scalar_one()
            )
            for t in (messages, summaries)
        )


def pks_of(ledger: AnyLedger, owner: str) -> list[int]:
    with ledger.engine.connect() as conn:
        q = select(conversations.c.pk).where(conversations.c.owner == owner)
        return [int(pk) for pk in conn.execute(q).scalars()]


def make_idle(ledger: AnyLedger, convs: list[AnyConversation], owner: str) -> None:
    with ledger.engine.begin() as conn:
        conn.execute(
            update(conversations)
            .where(conversations.c.owner == owner)
            .where(conversations.c.id.in_([c.id for c in convs]))
            .values(updated_at=LONG_AGO)
        )


def test_delete_owner_in_batches(ledger: AnyLedger, uid: str, deletes: Deletes) -> None:
    owner, other = f"erase-{uid}", f"keep-{uid}"
    for i in range(8):
        filled(ledger, f"{uid}-{i}", owner)
    gone = ledger.conversation(f"{uid}-gone", owner=owner)
    for i in range(4):  # usage rows that outlived their conversation: erased too, in batches
        gone.record(reply(f"r-{uid}-gone-{i}"))
    gone.delete()
    kept = [filled(ledger, f"{uid}-k{i}", other) for i in range(2)]
    pks = pks_of(ledger, owner)
    before_other = counts(ledger, other)
    assert ledger.usage(owner=owner).requests == 12
    deletes.batches.clear()

    assert ledger.delete_owner(owner) == 8
    # three messages a conversation, at most five a batch: one conversation per transaction
    assert deletes.batches == [1] * 8
    assert counts(ledger, owner)["conversations"] == 0
    assert orphans(ledger, pks) == 0
    assert ledger.usage(owner=owner).requests == 0  # every usage row, linked or not
    assert counts(ledger, other) == before_other
    assert [len(c.messages()) for c in kept] == [3, 3]
    assert ledger.delete_owner(owner) == 0


def test_batches_hold_many_small_conversations(
    ledger: AnyLedger, uid: str, deletes: Deletes
) -> None:
    owner = f"small-{uid}"
    for i in range(7):
        ledger.conversation(f"{uid}-{i}", owner=owner)  # no messages: the conversation cap holds
    assert ledger.delete_owner(owner) == 7
    assert deletes.batches == [3, 3, 1]


def test_delete_idle_in_batches(ledger: AnyLedger, uid: str, deletes: Deletes) -> None:
    a, b = f"idle-a-{uid}", f"idle-b-{uid}"
    idle_a = [filled(ledger, f"{uid}-a{i}", a) for i in range(7)]
    fresh_a = [filled(ledger, f"{uid}-f{i}", a) for i in range(2)]
    idle_b = [filled(ledger, f"{uid}-b{i}", b) for i in range(4)]
    make_idle(ledger, idle_a, a)
    make_idle(ledger, idle_b, b)
    pks = pks_of(ledger, a) + pks_of(ledger, b)

    assert ledger.delete_idle(AGES, owner=a) == 7
    assert len(deletes.batches) == 7 and sum(deletes.batches) == 7
    assert sorted(c.id for c in ledger.conversations(owner=a)) == sorted(c.id for c in fresh_a)
    assert counts(ledger, b)["conversations"] == 4  # another owner's idle ones: untouched
    assert ledger.usage(owner=a).requests == 9  # retention keeps the billing records

    assert ledger.delete_idle(AGES) == 4  # every owner's (nothing else here is that old)
    assert counts(ledger, b)["conversations"] == 0
    assert ledger.usage(owner=b).requests == 4
    assert [len(c.messages()) for c in fresh_a] == [3, 3]
    alive = set(pks_of(ledger, a))
    assert orphans(ledger, [pk for pk in pks if pk not in alive]) == 0


def test_a_failed_batch_leaves_whole_conversations(ledger: AnyLedger, uid: str) -> None:
    """A failure in the middle of the third batch: the first two batches stay deleted, the
    third is rolled back whole, and a re-run finishes the job."""
    owner = f"crash-{uid}"
    convs = [filled(ledger, f"{uid}-{i}", owner) for i in range(5)]
    engine = statements_of(ledger)
    seen = {"messages": 0}

    def crash(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE FROM CHATLEDGER_MESSAGES"):
            seen["messages"] += 1
            if seen["messages"] == 3:
                raise RuntimeError("the process died here")

    event.listen(engine, "before_cursor_execute", crash)
    try:
        with pytest.raises(RuntimeError, match="died"):
            ledger.delete_owner(owner)
    finally:
        event.remove(engine, "before_cursor_execute", crash)
    left = counts(ledger, owner)
    assert left["conversations"] == 3
    assert left["chatledger_messages"] == 9 and left["chatledger_completions"] == 3
    survivors = {c.id for c in ledger.conversations(owner=owner)}
    assert [len(c.messages()) for c in convs if c.id in survivors] == [3, 3, 3]
    assert ledger.delete_owner(owner) == 3
    assert counts(ledger, owner)["conversations"] == 0


def test_concurrent_append_lands_before_or_fails(ledger: AnyLedger, uid: str) -> None:
    """Appends racing an erasure: each one is stored before its conversation is deleted (and
    deleted with it) or fails with ConversationNotFoundError; no message is left behind."""
    owner = f"race-{uid}"
    convs = [ledger.conversation(f"{uid}-{i}", owner=owner, system="s") for i in range(12)]
    pks = pks_of(ledger, owner)
    outcomes: dict[str, int] = {"stored": 0, "not found": 0}
    errors: list[BaseException] = []
    done = threading.Event()

    def writer(mine: list[AnyConversation]) -> None:
        try:
            while not done.is_set():
                for conv in mine:
                    try:
                        conv.append({"role": "user", "content": "still here?"})
                        outcomes["stored"] += 1
                    except cl.ConversationNotFoundError:
                        outcomes["not found"] += 1
                if all(outcomes.values()):
                    break
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(convs[i::2],)) for i in range(2)]
    for t in threads:
        t.start()
    try:
        deleted = ledger.delete_owner(owner)
    finally:
        done.set()
        for t in threads:
            t.join(60)
    assert not errors, errors
    assert deleted == 12
    assert counts(ledger, owner)["conversations"] == 0
    assert orphans(ledger, pks) == 0
    for conv in convs:  # after the erasure every append fails
        with pytest.raises(cl.ConversationNotFoundError):
            conv.append({"role": "user", "content": "too late"})
