"""A conversation's identity is (owner, id), on every database and both twins: owners each
hold their own "default", nothing one owner does reveals another's ids, ``owner=None`` is the
conversation with no owner, and a handle stays bound to the conversation it opened."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

import chatledger as cl
from chatledger.store.schema import conversations
from twins import AnyConversation, AnyLedger

pytestmark = pytest.mark.twins


def test_two_owners_each_hold_default(ledger: AnyLedger, uid: str) -> None:
    alice, bob, cid = f"alice-{uid}", f"bob-{uid}", f"default-{uid}"
    a = ledger.conversation(cid, owner=alice, system="for alice")
    b = ledger.conversation(cid, owner=bob, system="for bob")  # not "taken", not "not found"
    a.append({"role": "user", "content": "alice's secret"})
    assert b.messages() == [{"role": "system", "content": "for bob"}]
    assert ledger.get(cid, owner=alice).messages()[-1]["content"] == "alice's secret"
    assert (a.id, a.owner, b.id, b.owner) == (cid, alice, cid, bob)
    with pytest.raises(cl.ConversationExistsError):
        ledger.create(cid, owner=bob)  # taken by bob himself: that is bob's to know
    carol = ledger.create(cid, owner=f"carol-{uid}")
    assert carol.messages() == []
    ledger.delete(cid, owner=bob)
    assert len(a.messages()) == 2  # alice's is untouched
    with pytest.raises(cl.ConversationNotFoundError):
        b.messages()


def test_another_owners_id_is_indistinguishable_from_a_free_one(
    ledger: AnyLedger, uid: str
) -> None:
    """Everything bob can do with alice's id he can do, with the same outcome, with an id
    nobody uses: no error, message or listing tells them apart."""
    alice, bob = f"alice-{uid}", f"bob-{uid}"
    taken, free = f"taken-{uid}", f"free-{uid}"
    ledger.conversation(taken, owner=alice).append({"role": "user", "content": "x"})

    def outcome(call: Callable[[], Any], cid: str) -> str:
        try:
            result = call()
        except cl.ChatLedgerError as exc:
            return f"{type(exc).__name__}: {exc}".replace(cid, "<id>")
        if isinstance(result, cl.ConversationInfo) or hasattr(result, "info"):
            info = result if isinstance(result, cl.ConversationInfo) else result.info
            return f"ok {info.owner} {info.message_count}"
        return f"ok {result!r}"

    assert [c.id for c in ledger.conversations(owner=bob)] == []
    calls = [
        lambda cid: ledger.get(cid, owner=bob),
        lambda cid: ledger.delete(cid, owner=bob),
        lambda cid: ledger.conversation(cid, owner=bob).info,
        lambda cid: ledger.create(cid, owner=bob),
        lambda cid: ledger.get(cid, owner=bob).info,
        lambda cid: ledger.delete(cid, owner=bob),
    ]
    for call in calls:
        assert outcome(lambda c=call: c(taken), taken) == outcome(lambda c=call: c(free), free)
    assert ledger.get(taken, owner=alice).info.message_count == 1


def test_owner_none_is_the_conversation_without_owner(ledger: AnyLedger, uid: str) -> None:
    cid = f"x-{uid}"
    ledger.conversation(cid, owner=f"o-{uid}").append({"role": "user", "content": "owned"})
    with pytest.raises(cl.ConversationNotFoundError):
        ledger.get(cid)  # not "any owner's": the one with no owner, and there is none
    with pytest.raises(cl.ConversationNotFoundError):
        ledger.delete(cid)
    plain = ledger.conversation(cid)
    assert plain.owner is None and plain.info.owner is None and plain.messages() == []
    with ledger.engine.connect() as c:
        stored = c.execute(
            select(conversations.c.owner).where(conversations.c.id == cid).order_by("owner")
        ).scalars()
        assert list(stored) == ["", f"o-{uid}"]  # "" stands for no owner
    ledger.delete(cid)
    assert ledger.get(cid, owner=f"o-{uid}").messages()[0]["content"] == "owned"
    assert cid in {c.id for c in ledger.conversations()}  # listing: None means every owner


@pytest.mark.sync_only  # threads on one sync ledger; the async twin has the same statements
def test_concurrent_get_or_create_of_one_id_by_many_owners(ledger: AnyLedger, uid: str) -> None:
    cid = f"race-{uid}"
    owners = [f"o{i}-{uid}" for i in range(8)] + [None]
    got: dict[str | None, str] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(owners) * 2)

    def open_it(owner: str | None) -> None:
        try:
            barrier.wait()
            conv = ledger.conversation(cid, owner=owner)
            got.setdefault(owner, repr(conv))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_it, args=(o,)) for o in owners * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with ledger.engine.connect() as c:
        count = len(c.execute(select(conversations.c.pk).where(conversations.c.id == cid)).all())
    assert count == len(owners) == len(got)


# --- a handle is bound to the conversation it opened ----------------------------------------

CALLS: dict[str, Callable[[AnyConversation], Any]] = {
    "append": lambda c: c.append({"role": "user", "content": "late"}),
    "extend": lambda c: c.extend([{"role": "user", "content": "late"}]),
    "messages": lambda c: c.messages(),
    "records": lambda c: c.records(),
    "last": lambda c: c.last(2),
    "count_tokens": lambda c: c.count_tokens(),
    "window": lambda c: c.window(cl.TokenBudget(1000)),
    "request": lambda c: c.request(max_tokens=5),
    "record": lambda c: c.record(
        {"id": "late", "model": "gpt-4o", "choices": [], "usage": {"prompt_tokens": 1}}
    ),
    "usage": lambda c: c.usage(),
    "usage_records": lambda c: c.usage_records(),
    "refresh": lambda c: c.refresh(),
    "update title": lambda c: c.update(title="late"),
    "update model": lambda c: c.update(model="gpt-4"),
    "delete": lambda c: c.delete(),
}


@pytest.mark.parametrize("name", list(CALLS))
def test_a_handle_never_reaches_a_recreated_conversation(
    ledger: AnyLedger, uid: str, name: str
) -> None:
    owner = f"o-{uid}"
    old = ledger.conversation(uid, owner=owner, model="gpt-4o", system="first")
    old.append({"role": "user", "content": "hello"})
    ledger.delete(uid, owner=owner)
    with pytest.raises(cl.ConversationNotFoundError) as info:  # deleted: not found
        CALLS[name](old)
    assert info.value.conversation_id == uid
    new = ledger.conversation(uid, owner=owner, model="gpt-4o", system="second")
    with pytest.raises(cl.ConversationNotFoundError) as info:  # re-created: still not found
        CALLS[name](old)
    assert info.value.conversation_id == uid
    assert new.messages() == [{"role": "system", "content": "second"}]
    assert new.refresh().title is None and new.usage().requests == 0
    assert new.model == "gpt-4o"


def test_update_model_decides_the_recount_on_the_row(ledger: AnyLedger, uid: str) -> None:
    """A stale handle that still thinks the conversation counts with the target model's rules
    must not skip the recount: the row decides."""
    a = ledger.conversation(uid, model="gpt-4")  # cl100k
    a.extend(
        [{"role": "user", "content": "héllo wörld " * 20}, {"role": "assistant", "content": "ok"}]
    )
    b = ledger.get(uid)
    b.update(model="gpt-4o")  # o200k: every count redone
    a.update(model="gpt-4")  # a's handle saw gpt-4 all along: the row says otherwise
    fresh = ledger.get(uid)
    assert fresh.model == "gpt-4"
    assert fresh.count_tokens() == cl.count_tokens(fresh.messages(), "gpt-4")
    b.update(model="gpt-4o")
    assert ledger.get(uid).count_tokens() == cl.count_tokens(fresh.messages(), "gpt-4o")


@pytest.mark.sync_only  # a thread flipping the model under windows; statements are shared
def test_a_window_is_one_snapshot(ledger: AnyLedger, uid: str) -> None:
    conv = ledger.conversation(uid, model="gpt-4")
    conv.extend([{"role": "user", "content": f"ünïcode {i} " * 15} for i in range(30)])
    stop = threading.Event()
    errors: list[BaseException] = []

    def flip() -> None:
        other = ledger.get(uid)
        models = ["gpt-4o", "gpt-4"]
        try:
            while not stop.is_set():
                other.update(model=models[0])
                models.reverse()
        except BaseException as exc:
            errors.append(exc)

    flipper = threading.Thread(target=flip)
    flipper.start()
    try:
        for _ in range(40):
            w = conv.window(cl.TokenBudget(5000), explain=True)
            assert w.prompt_tokens == cl.count_tokens(w.messages, w.model)
    finally:
        stop.set()
        flipper.join()
    assert errors == []
