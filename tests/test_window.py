"""Windows on every database and both twins: the strategies, their composition, summaries and
their failures."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
from sqlalchemy import event

import chatledger as cl
from chatledger.strategies import Lookback, WindowView
from twins import AnyConversation, AnyLedger, Opener, statements_of

pytestmark = pytest.mark.twins


def call(cid: str, name: str = "search") -> dict[str, Any]:
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": '{"q": 1}'}}


def fill(conv: AnyConversation, rounds: int, words: int = 20) -> None:
    """Rounds of user/assistant, with a parallel tool call every third round."""
    for i in range(rounds):
        conv.append({"role": "user", "content": f"question {i} " + "word " * words})
        if i % 3 == 1:
            conv.append(
                {"role": "assistant", "tool_calls": [call(f"a{i}"), call(f"b{i}", "fetch")]}
            )
            conv.append({"role": "tool", "tool_call_id": f"b{i}", "content": "B " * words})
            conv.append({"role": "tool", "tool_call_id": f"a{i}", "content": "A " * words})
        conv.append({"role": "assistant", "content": f"answer {i} " + "word " * words})


@pytest.fixture
def conv(ledger: AnyLedger, uid: str) -> AnyConversation:
    c = ledger.conversation(uid, model="gpt-4o", system="You are terse.")
    c.append({"role": "developer", "content": "Cite sources."})
    fill(c, 12)
    return c


def test_whole_history_without_strategy(conv: AnyConversation) -> None:
    assert conv.window() == conv.messages()


def test_last_rounds(conv: AnyConversation) -> None:
    history = conv.messages()
    w = conv.window(cl.LastRounds(2))
    assert w[:2] == history[:2]
    users = [i for i, m in enumerate(history) if m["role"] == "user"]
    assert w[2:] == history[users[-2] :]
    assert conv.window(cl.LastRounds(100)) == history


def test_token_budget_fits_exactly_and_maximally(conv: AnyConversation) -> None:
    history = conv.messages()
    users = [i for i, m in enumerate(history) if m["role"] == "user"]
    for limit in (200, 350, 700, 1500):
        w = conv.window(cl.TokenBudget(limit, reserve=50), tools=None)
        n = cl.count_tokens(w, "gpt-4o")
        assert n <= limit - 50
        start = len(history) - (len(w) - 2)
        assert start in users
        prev = [u for u in users if u < start]
        if prev:  # one more round would not fit
            assert cl.count_tokens(history[:2] + history[prev[-1] :], "gpt-4o") > limit - 50


def test_budget_counts_tools(conv: AnyConversation) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "search",
                "description": "Search the web for a query " * 10,
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
            },
        }
    ]
    without = conv.window(cl.TokenBudget(600), explain=True)
    with_tools = conv.window(cl.TokenBudget(600), tools=tools, explain=True)
    assert with_tools.prompt_tokens == cl.count_tokens(with_tools.messages, "gpt-4o", tools)
    assert with_tools.prompt_tokens <= 600
    assert len(with_tools.messages) < len(without.messages)


def test_newest_round_too_big_starts_mid_round(ledger: AnyLedger, uid: str) -> None:
    conv = ledger.conversation(uid, model="gpt-4o", system="sys")
    conv.append({"role": "user", "content": "do the research"})
    for i in range(6):  # one long agent round
        conv.append({"role": "assistant", "tool_calls": [call(f"c{i}")]})
        conv.append({"role": "tool", "tool_call_id": f"c{i}", "content": "data " * 100})
    conv.append({"role": "assistant", "content": "done"})
    w = conv.window(cl.TokenBudget(400))
    cl.validate_messages(w)
    assert w[0] == {"role": "system", "content": "sys"}
    assert w[1]["role"] == "assistant" and "tool_calls" in w[1]  # never a tool message first
    assert w[-1] == {"role": "assistant", "content": "done"}
    assert cl.count_tokens(w, "gpt-4o") <= 400


def test_overflow_says_needed_and_allowed(ledger: AnyLedger, uid: str) -> None:
    conv = ledger.conversation(uid, model="gpt-4o", system="sys " * 50)
    conv.append({"role": "user", "content": "long " * 300})
    with pytest.raises(cl.ContextOverflowError) as info:
        conv.window(cl.TokenBudget(200, reserve=20))
    assert info.value.allowed == 180
    assert info.value.needed == cl.count_tokens(conv.messages(), "gpt-4o")
    assert "180" in str(info.value) and str(info.value.needed) in str(info.value)


def test_pending_tool_calls_refuse_a_window(ledger: AnyLedger, uid: str) -> None:
    conv = ledger.conversation(uid)
    conv.append({"role": "user", "content": "x"})
    conv.append({"role": "assistant", "tool_calls": [call("p1")]})
    with pytest.raises(cl.PendingToolCallsError, match="p1"):
        conv.window(cl.LastRounds(1))
    conv.append({"role": "tool", "tool_call_id": "p1", "content": "ok"})
    assert conv.window(cl.LastRounds(1))[-1]["role"] == "tool"


def test_prefix_only_and_empty_conversations(ledger: AnyLedger, uid: str) -> None:
    conv = ledger.conversation(uid, system="only a system prompt")
    assert conv.window(cl.TokenBudget(100)) == [
        {"role": "system", "content": "only a system prompt"}
    ]
    empty = ledger.conversation(f"{uid}-e")
    assert empty.window(cl.LastRounds(3)) == []


class Recorder:
    """A deterministic summarizer that remembers its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str | None, list[dict[str, Any]]]] = []

    def __call__(self, previous: str | None, messages: list[dict[str, Any]]) -> str:
        self.calls.append((previous, messages))
        return f"S{len(self.calls)} covers {len(messages)} messages"


def test_summarize_persists_and_reuses(
    open_ledger: Opener, db_url: str, conv: AnyConversation
) -> None:
    rec = Recorder()
    strategy = [cl.Summarize(rec, trigger=600, keep=300), cl.TokenBudget(800)]
    w = conv.window(strategy, explain=True)
    assert len(rec.calls) == 1 and rec.calls[0][0] is None
    assert w.summary is not None and w.summary.created
    assert w.messages[2] == {
        "role": "system",
        "content": "Summary of the earlier conversation:\nS1 covers "
        f"{w.summary.upto_seq - 2} messages",
    }
    # the folded messages are exactly the ones between the prefix and the kept tail
    assert rec.calls[0][1] == conv.messages(start=3, stop=w.summary.upto_seq + 1)
    assert w.kept.first == w.summary.upto_seq + 1
    assert w.prompt_tokens == cl.count_tokens(w.messages, "gpt-4o") <= 800
    # nothing new: no summarizer call, same window, also from another ledger (process)
    assert conv.window(strategy) == w.messages
    with open_ledger(db_url) as other:
        assert other.get(conv.id).window(strategy) == w.messages
    assert len(rec.calls) == 1
    # the originals are all still stored
    assert len(conv.messages()) == conv.refresh().message_count
    # new rounds: the summary grows incrementally from the previous one
    fill(conv, 6)
    w2 = conv.window(strategy, explain=True)
    assert len(rec.calls) == 2
    previous, folded = rec.calls[1]
    assert previous == "S1 covers " + f"{w.summary.upto_seq - 2} messages"
    assert folded[0] == conv.messages(start=w.summary.upto_seq + 1, limit=1)[0]
    assert w2.summary is not None and w2.summary.upto_seq > w.summary.upto_seq


@pytest.mark.parametrize(
    "failure", ["raise", "empty", "timeout", "none"], ids=lambda f: f"summarizer-{f}"
)
def test_failing_summarizer_falls_back_to_truncation(
    conv: AnyConversation, failure: str, caplog: pytest.LogCaptureFixture
) -> None:
    release = threading.Event()

    def broken(previous: str | None, messages: list[dict[str, Any]]) -> Any:
        if failure == "raise":
            raise RuntimeError("model server down")
        if failure == "timeout":
            release.wait(5)
            return "too late"
        return "" if failure == "empty" else None

    strategy = [cl.Summarize(broken, trigger=600, keep=300, timeout=0.2), cl.TokenBudget(800)]
    with caplog.at_level(logging.WARNING, logger="chatledger"):
        w = conv.window(strategy, explain=True)
    release.set()
    assert w.summary is None and w.summary_failed
    assert "summarizer failed" in caplog.text and conv.id in caplog.text
    assert cl.count_tokens(w.messages, "gpt-4o") <= 300 + w.prefix.tokens + w.overhead_tokens  # type: ignore[operator]
    cl.validate_messages(w.messages)
    # a later turn retries, and succeeds with a working summarizer
    rec = Recorder()
    ok = conv.window([cl.Summarize(rec, trigger=600, keep=300), cl.TokenBudget(800)], explain=True)
    assert len(rec.calls) == 1 and ok.summary is not None and not ok.summary_failed


@pytest.mark.sync_only  # the async twin takes async summarizers (see test_summarizer.py)
def test_async_summarizer_with_sync_conversation_is_refused(conv: AnyConversation) -> None:
    async def summarize(previous: str | None, messages: list[dict[str, Any]]) -> str:
        return "never"

    with pytest.raises(cl.InvalidArgumentError, match="AsyncLedger"):
        conv.window(cl.Summarize(summarize, trigger=100, keep=50))


def test_budget_drops_summary_before_newest_round(ledger: AnyLedger, uid: str) -> None:
    conv = ledger.conversation(uid, model="gpt-4o", system="s")
    fill(conv, 6, words=30)

    def verbose(previous: str | None, messages: list[dict[str, Any]]) -> str:
        return "summary " * 300

    conv.append({"role": "user", "content": "last " * 60})
    w = conv.window(
        [cl.Summarize(verbose, trigger=200, keep=100), cl.TokenBudget(150)], explain=True
    )
    assert w.summary_dropped
    assert w.prompt_tokens <= 150
    assert w.messages[-1]["content"].startswith("last")


def test_window_reads_only_what_it_sends(ledger: AnyLedger, uid: str) -> None:
    """Rows and statements do not grow with the stored history."""
    conv = ledger.conversation(uid, model="gpt-4o", system="sys")
    counts: dict[int, tuple[int, int]] = {}
    engine = statements_of(ledger)
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        for size, new_rounds in ((20, 20), (200, 180)):
            fill(conv, new_rounds)
            statements.clear()
            w = conv.window(cl.TokenBudget(500), explain=True)
            counts[size] = (w.rows_read, len(statements))
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert counts[200][1] == counts[20][1] <= 8
    assert counts[200][0] <= counts[20][0] + 10


def test_custom_strategy_protocol(conv: AnyConversation) -> None:
    class KeepLastUser:
        def lookback(self) -> Lookback:
            return Lookback(rounds=1)

        def apply(self, view: WindowView) -> int:
            return view.newest_round_start

    history = conv.messages()
    w = conv.window(KeepLastUser())
    assert w[2]["role"] == "user" and w[2:] == history[len(history) - len(w) + 2 :]

    class Bad:
        def lookback(self) -> Lookback:
            return Lookback()

        def apply(self, view: WindowView) -> int:
            tools = [e.seq for e in view.entries if e.role == "tool"]
            return tools[0]

    with pytest.raises(cl.ChatLedgerError, match="not one of the valid starts"):
        conv.window(Bad())
    with pytest.raises(cl.InvalidArgumentError, match="strategy"):
        conv.window(object())  # type: ignore[arg-type]


def test_strategy_arguments_are_checked() -> None:
    with pytest.raises(cl.InvalidArgumentError, match="n"):
        cl.LastRounds(0)
    with pytest.raises(cl.InvalidArgumentError, match="reserve"):
        cl.TokenBudget(100, reserve=100)
    with pytest.raises(cl.InvalidArgumentError, match="keep"):
        cl.Summarize(lambda p, m: "", trigger=10, keep=20)
    with pytest.raises(cl.InvalidArgumentError, match="template"):
        cl.Summarize(lambda p, m: "", template="no placeholder")


def test_explain_is_readable(conv: AnyConversation) -> None:
    w = conv.window(
        [cl.Summarize(Recorder(), trigger=600, keep=300), cl.TokenBudget(800)], explain=True
    )
    text = str(w)
    for word in ("prefix", "summary", "kept", "TokenBudget(800", "prompt tokens"):
        assert word in text
    assert w.prefix.count == 2 and w.kept.last == conv.refresh().last_seq


def test_window_records_match_messages(conv: AnyConversation) -> None:
    w = conv.window(cl.TokenBudget(600), explain=True)
    assert [r.message for r in w.records] == w.messages
    assert w.records[-1].seq == conv.refresh().last_seq


def test_window_rows_pair_each_message_with_its_record(conv: AnyConversation) -> None:
    w = conv.window(
        [cl.Summarize(Recorder(), trigger=600, keep=300), cl.TokenBudget(800)], explain=True
    )
    rows = w.rows()
    assert [m for m, _ in rows] == w.messages
    assert [r for _, r in rows].count(None) == (1 if w.summary and not w.summary_dropped else 0)
    assert all(r.message == m for m, r in rows if r is not None)


def test_strategy_kinds_agree_with_runtime_protocol_checks() -> None:
    """The window's cheap kind check answers as ``isinstance`` on the protocols does, for the
    built-ins, user classes and things that are not strategies at all."""
    from chatledger import window as w

    kinds = [
        (w.Strategy, w.is_strategy),
        (w.Folding, w.is_folding),
        (w.Budgeted, w.is_budgeted),
        (w.Around, w.is_around),
        (w.Rewriting, w.is_rewriting),
    ]

    class Partial:
        def lookback(self) -> Lookback:
            return Lookback()

    class FoldsWithoutTimeout:
        summarizer = staticmethod(lambda p, m: "")

        def lookback(self) -> Lookback:
            return Lookback()

        def apply(self, view: WindowView) -> int:
            return view.start

        def fold(self, view: WindowView) -> None:
            return None

        def summary_message(self, text: str) -> dict[str, Any]:
            return {"role": "system", "content": text}

    candidates: list[object] = [
        cl.LastRounds(2),
        cl.TokenBudget(500),
        cl.Summarize(lambda p, m: "", trigger=100, keep=50),
        cl.StablePrefix(cl.TokenBudget(500)),
        cl.ClearToolResults(keep=1),
        Partial(),
        FoldsWithoutTimeout(),
        object(),
        "TokenBudget",
        None,
    ]
    checked = 0
    for obj in candidates:
        for kind, is_kind in kinds:
            assert is_kind(obj) == isinstance(obj, kind), (obj, kind)
            checked += is_kind(obj)
    assert checked >= 9  # every built-in is at least a Strategy, and each has its own kind
