"""Editing history: pop, truncate, rewind, fork, edit, regenerate and a new system prompt, on
both twins and every database; the stored history stays exact and API-valid after each."""

from __future__ import annotations

from typing import Any

import openai
import pytest

import chatledger as cl
from openai_server import FakeOpenAI
from twins import AnyConversation, AnyLedger

pytestmark = pytest.mark.twins

SYS = {"role": "system", "content": "Be brief."}


def call(cid: str, name: str = "lookup") -> dict[str, Any]:
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": "{}"}}


def turn(i: int) -> list[dict[str, Any]]:
    return [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]


def assert_exact(conv: AnyConversation) -> None:
    """Seq gap-free, running totals equal the recomputed sums, the row agrees, and the
    stored history is one the API accepts (as a prefix: open calls are allowed)."""
    recs = conv.records()
    assert [r.seq for r in recs] == list(range(1, len(recs) + 1))
    total = 0
    for r in recs:
        total += r.tokens
        assert r.cumulative_tokens == total
    info = conv.refresh()
    assert (info.last_seq, info.message_count, info.token_total) == (len(recs), len(recs), total)
    if recs:
        cl.validate_messages([r.message for r in recs], allow_pending_tool_calls=True)
        assert conv.count_tokens() == cl.count_tokens([r.message for r in recs], conv.model)


def test_pop_returns_the_newest_and_seq_continues(ledger: AnyLedger, uid: str) -> None:
    conv = ledger.conversation(uid, system="Be brief.")
    conv.extend([*turn(1), *turn(2)])
    popped = conv.pop()
    assert popped is not None and popped.message == {"role": "assistant", "content": "a2"}
    assert conv.append({"role": "assistant", "content": "better"}).seq == 5
    assert_exact(conv)
    assert [conv.pop() is not None for _ in range(5)] == [True] * 5
    assert conv.pop() is None and conv.messages() == []
    assert_exact(conv)


def test_popping_a_tool_result_reopens_its_call(ledger: AnyLedger, uid: str) -> None:
    conv = ledger.conversation(uid)
    conv.extend(
        [
            {"role": "user", "content": "look up two"},
            {"role": "assistant", "tool_calls": [call("c1"), call("c2")]},
            {"role": "tool", "tool_call_id": "c1", "content": "one"},
            {"role": "tool", "tool_call_id": "c2", "content": "two"},
        ]
    )
    assert conv.pop() is not None
    assert conv.info.pending_tool_calls == ("c2",)
    with pytest.raises(cl.InvalidMessageError):  # the call is open again: nothing else may come
        conv.append({"role": "user", "content": "next"})
    with pytest.raises(cl.PendingToolCallsError):
        conv.window()
    conv.append({"role": "tool", "tool_call_id": "c2", "content": "two again"})
    assert conv.info.pending_tool_calls == ()
    assert_exact(conv)


def test_truncate_and_rewind(ledger: AnyLedger, uid: str) -> None:
    conv = ledger.conversation(uid, system="Be brief.")
    for i in range(4):
        conv.extend(turn(i))
    removed = conv.truncate(8)
    assert [r.seq for r in removed] == [9]
    assert_exact(conv)
    assert [r.message["content"] for r in conv.rewind()] == ["q3"]  # a half round goes whole
    assert [r.message["content"] for r in conv.rewind(2)] == ["q1", "a1", "q2", "a2"]
    assert conv.messages() == [SYS, *turn(0)]
    conv.rewind(10)  # fewer rounds than asked: everything after the pinned prefix
    assert conv.messages() == [SYS]
    assert conv.truncate(5) == []  # nothing after seq 5
    assert_exact(conv)
    with pytest.raises(cl.InvalidArgumentError):
        conv.truncate(-1)


def test_truncate_drops_summaries_that_cover_removed_messages(ledger: AnyLedger, uid: str) -> None:
    conv = ledger.conversation(uid, system="Be brief.")
    for i in range(12):
        conv.extend(turn(i))
    calls: list[int] = []

    def summarizer(previous: str | None, messages: list[dict[str, Any]]) -> str:
        calls.append(len(messages))
        return f"summary of {len(messages)}"

    strategy = cl.Summarize(summarizer, trigger=40, keep=20)
    first = conv.window(strategy, explain=True)
    assert first.summary is not None and first.summary.created
    covered = first.summary.upto_seq
    conv.truncate(covered - 2)  # removes messages the summary covers
    again = conv.window(strategy, explain=True)
    assert again.summary is None or again.summary.upto_seq <= covered - 2
    assert_exact(conv)


def test_edit_replaces_and_drops_what_followed(ledger: AnyLedger, uid: str) -> None:
    conv = ledger.conversation(uid, system="Be brief.")
    for i in range(3):
        conv.extend(turn(i))
    edited = conv.edit(4, {"role": "user", "content": "q1, rephrased"})
    assert edited.messages() == [SYS, *turn(0), {"role": "user", "content": "q1, rephrased"}]
    assert_exact(conv)
    with pytest.raises(cl.InvalidMessageError):  # an edit is checked like an append
        conv.edit(2, {"role": "tool", "tool_call_id": "nope", "content": "x"})
    assert_exact(conv)


def test_edit_on_a_branch_keeps_the_original(ledger: AnyLedger, uid: str) -> None:
    conv = ledger.conversation(uid, owner="alice", system="Be brief.")
    for i in range(3):
        conv.extend(turn(i))
    branch = conv.edit(4, {"role": "user", "content": "other question"}, branch=True)
    assert branch.id != conv.id and branch.owner == "alice"
    assert branch.info.parent == conv.id and branch.info.forked_at == 3
    assert len(conv.messages()) == 7
    assert branch.messages()[-1] == {"role": "user", "content": "other question"}
    assert_exact(branch)
    assert_exact(conv)


def test_fork_copies_history_and_summary(ledger: AnyLedger, uid: str) -> None:
    conv = ledger.conversation(uid, owner="bob", system="Be brief.", title="t")
    for i in range(12):
        conv.extend(turn(i))
    strategy = cl.Summarize(lambda prev, msgs: "gist", trigger=40, keep=20)
    made = conv.window(strategy, explain=True)
    assert made.summary is not None
    child = conv.fork(f"{uid}-child")
    assert child.id == f"{uid}-child" and child.owner == "bob" and child.info.title == "t"
    assert (child.info.parent, child.info.forked_at) == (conv.id, 25)
    assert child.messages() == conv.messages()
    reused = child.window(strategy, explain=True)
    assert reused.summary is not None and not reused.summary.created  # the shared summary
    child.append({"role": "user", "content": "only in the child"})
    assert len(conv.messages()) == 25
    early = conv.fork(at_seq=3)
    assert early.messages() == [SYS, *turn(0)]
    assert early.window(strategy, explain=True).summary is None  # it covered more than seq 3
    assert_exact(child)
    assert_exact(early)


def test_update_system_prompt(ledger: AnyLedger, uid: str) -> None:
    conv = ledger.conversation(uid, system="Be brief.")
    conv.extend(turn(0))
    conv.update(system="Answer in French, at length, with care.")
    assert conv.window()[0] == {
        "role": "system",
        "content": "Answer in French, at length, with care.",
    }
    assert_exact(conv)
    bare = ledger.conversation(f"{uid}-bare")
    with pytest.raises(cl.InvalidArgumentError, match="no pinned"):
        bare.update(system="x")


def test_regenerate_keeps_both_replies_usage(
    ledger: AnyLedger, uid: str, server: FakeOpenAI, client: openai.OpenAI
) -> None:
    conv = ledger.conversation(uid, system="Be brief.")
    server.queue("first answer", "second answer")
    conv.chat(client, "hello", max_tokens=20)
    conv.regenerate(client, max_tokens=20)
    assert [m["content"] for m in conv.messages()] == ["Be brief.", "hello", "second answer"]
    assert conv.usage().requests == 2
    assert_exact(conv)


def test_a_stale_handle_never_writes_on_removed_messages(ledger: AnyLedger, uid: str) -> None:
    conv = ledger.conversation(uid)
    for i in range(3):
        conv.extend(turn(i))
    other = ledger.get(uid)
    other.truncate(2)
    stored = conv.append({"role": "user", "content": "late"})  # the handle saw seq 6
    assert stored.seq == 3
    assert_exact(conv)


def test_a_handle_from_before_an_edit_that_restored_last_seq(ledger: AnyLedger, uid: str) -> None:
    """Another handle pops and appends back to the same last_seq (with other tokens, or an
    open tool call in place of a reply): a handle that saw the state before must not append
    on top of what it saw; it re-reads and appends on what is stored."""
    a = ledger.conversation(uid, system="Be brief.")
    a.extend(turn(1))
    b = ledger.get(uid)
    b.pop()
    b.append({"role": "assistant", "content": "a much longer reply " * 20})
    a.append({"role": "user", "content": "next"})
    assert_exact(a)
    # the same with the tool state: the message a saw last is replaced by an open call
    b.pop()
    b.append(
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        }
    )
    with pytest.raises(cl.InvalidMessageError):
        a.append({"role": "user", "content": "unanswered call in between"})
    assert_exact(a)
    assert b.info.revision > 0 and a.refresh().revision == b.refresh().revision


def test_edits_racing_appends_stay_exact(ledger: AnyLedger, uid: str) -> None:
    """Edits take the lock appends take: under threads, never a gap, a duplicate or an
    invalid history, and every append either stored or refused with a typed error."""
    import threading

    conv = ledger.conversation(uid, system="Be brief.")
    errors: list[BaseException] = []

    def appender(w: int) -> None:
        mine = ledger.get(uid)
        for i in range(12):
            try:
                mine.extend(turn(w * 100 + i))
            except cl.StorageError:
                pass  # a lock timeout is typed and retryable; nothing half-written
            except BaseException as exc:
                errors.append(exc)

    def editor() -> None:
        mine = ledger.get(uid)
        for i in range(12):
            try:
                if i % 3 == 0:
                    mine.pop()
                elif i % 3 == 1:
                    mine.rewind(1)
                else:
                    mine.truncate(max(1, i))
            except cl.StorageError:
                pass
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=appender, args=(w,)) for w in range(3)]
    threads.append(threading.Thread(target=editor))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert_exact(conv)
    conv.append({"role": "user", "content": "after the race"})
    assert_exact(conv)
