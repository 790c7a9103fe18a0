"""Property tests: every strategy and composition keeps the five window invariants, and a
token budget is met exactly and maximally, on SQLite and PostgreSQL, for both twins.

The checks recompute everything from the full stored history with ``count_tokens``; they share
no code with the window builder beyond the token counter itself.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import chatledger as cl
from strategies import conversations
from twins import AnyLedger

pytestmark = pytest.mark.twins

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look a thing up",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        },
    }
]


def deterministic_summarizer(previous: str | None, messages: list[dict[str, Any]]) -> str:
    roles = ",".join(m["role"][0] for m in messages)
    return f"{(previous or '')[:40]}|{len(messages)}:{roles}"


def prefix_len(history: list[dict[str, Any]]) -> int:
    n = 0
    while n < len(history) and history[n]["role"] in ("system", "developer"):
        n += 1
    return n


def valid_starts(history: list[dict[str, Any]], lo: int) -> list[int]:
    """Tail starts (0-based) that keep a window valid, from ``lo``: computed independently."""
    users = [i for i, m in enumerate(history) if m["role"] == "user" and i >= lo]
    out = [lo, *(i for i in users if i > lo)]
    newest = out[-1]
    out += [i for i in range(newest + 1, len(history)) if history[i]["role"] != "tool"]
    return out


budgets = st.integers(60, 3000)
strategy_specs = st.one_of(
    st.tuples(st.just("budget"), budgets, st.integers(0, 50)),
    st.tuples(st.just("rounds"), st.integers(1, 4), st.just(0)),
    st.tuples(st.just("rounds+budget"), st.integers(1, 4), budgets),
    st.tuples(st.just("summarize+budget"), st.integers(40, 400), budgets),
    st.tuples(st.just("summarize"), st.integers(40, 400), st.just(0)),
)


def build(spec: tuple[str, int, int]) -> tuple[Any, cl.TokenBudget | None]:
    kind, a, b = spec
    if kind == "budget":
        budget = cl.TokenBudget(a + b + 1, reserve=b)
        return budget, budget
    if kind == "rounds":
        return cl.LastRounds(a), None
    if kind == "rounds+budget":
        budget = cl.TokenBudget(b)
        return [cl.LastRounds(a), budget], budget
    summ = cl.Summarize(deterministic_summarizer, trigger=a, keep=max(1, a // 2))
    if kind == "summarize":
        return summ, None
    budget = cl.TokenBudget(b)
    return [summ, budget], budget


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    history=conversations(max_rounds=8),
    spec=strategy_specs,
    model=st.sampled_from(["gpt-4o", "gpt-4.1-mini"]),
    with_tools=st.booleans(),
    turns=st.integers(1, 2),
)
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_window_invariants(
    backend: str,
    shared_ledger: AnyLedger,
    history: list[dict[str, Any]],
    spec: tuple[str, int, int],
    model: str,
    with_tools: bool,
    turns: int,
) -> None:
    led = shared_ledger
    conv = led.conversation(uuid.uuid4().hex, model=model)
    conv.extend(history)
    strategy, budget = build(spec)
    tools = TOOLS if with_tools else None
    k = prefix_len(history)
    for _ in range(turns):  # a second turn reuses the stored summary
        try:
            w = conv.window(strategy, tools=tools, explain=True)
        except cl.ContextOverflowError as exc:
            assert budget is not None
            # then even the smallest valid window is over budget, and the error says so
            smallest = history[:k] + history[valid_starts(history, k)[-1] :]
            assert cl.count_tokens(smallest, model, tools) > budget.allowed
            assert exc.allowed == budget.allowed and exc.needed > exc.allowed
            event("overflow")
            return
        msgs = w.messages
        # 1. the pinned prefix is kept
        assert msgs[:k] == history[:k]
        # 2. prefix, at most one summary message, then a contiguous newest-last tail
        rest = msgs[k:]
        has_summary = w.summary is not None and not w.summary_dropped
        if has_summary:
            assert rest[0] == w.summary.message  # type: ignore[union-attr]
            rest = rest[1:]
        start = len(history) - len(rest)
        assert history[start:] == rest
        assert w.kept.first == (start + 1 if rest else None)
        # 3. valid for the API, tool calls with their results, no tool message first
        cl.validate_messages(msgs)
        assert start in valid_starts(history, min(start, k)) or not rest
        if rest:
            assert rest[0]["role"] != "tool"
        # 4. the newest message is there
        assert msgs[-1] == history[-1]
        # 5. the exact prompt tokens, within the budget
        exact = cl.count_tokens(msgs, model, tools)
        assert w.prompt_tokens == exact
        if budget is not None:
            assert exact <= budget.allowed
        # maximal: the previous valid start would not fit (not before a summary's end, nor
        # before the rounds a LastRounds ahead of the budget kept)
        if budget is not None:
            lo = w.summary.upto_seq if w.summary else k  # seq == 0-based index + 1
            if spec[0] == "rounds+budget":
                users = [i for i, m in enumerate(history) if m["role"] == "user" and i >= k]
                lo = max(lo, users[-spec[1]] if len(users) >= spec[1] else k)
            earlier = [s for s in valid_starts(history, lo) if s < start]
            if earlier and not w.summary_dropped and w.prefix.count == k:
                bigger = msgs[: len(msgs) - len(rest)] + history[earlier[-1] :]
                if cl.tokens.system_text(bigger) == cl.tokens.system_text(msgs):
                    assert cl.count_tokens(bigger, model, tools) > budget.allowed
        event(f"summary={has_summary} dropped={w.dropped.count > 0} kept={len(rest)}"[:40])
        # the parts partition the stored history
        parts = [w.prefix, w.summarized, w.dropped, w.kept]
        assert sum(p.count for p in parts) == len(history)
