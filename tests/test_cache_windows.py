"""Windows that keep the provider's prompt cache warm: StablePrefix holds the window's start
between requests and re-plans down to its low water; ClearToolResults sends old tool results
as placeholders. Property tests over growing conversations, turn by turn, on SQLite and
PostgreSQL for both twins; the checks recompute everything from the stored history with
``count_tokens``."""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
import uuid
from typing import Any

import openai
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import chatledger as cl
from fake_prompt_cache import PromptCache
from openai_server import FakeOpenAI
from strategies import conversations, rounds
from test_window_property import TOOLS, deterministic_summarizer, prefix_len, valid_starts
from twins import AnyLedger

pytestmark = pytest.mark.twins

PLACEHOLDER = "[cleared]"


def build(kind: str, budget: int, low: float, keep: int, step: int) -> tuple[Any, int | None]:
    """A composition to test, and its prompt budget (None: no budget)."""
    tb = cl.TokenBudget(budget)
    clear = cl.ClearToolResults(keep, PLACEHOLDER, step=step)
    summ = cl.Summarize(deterministic_summarizer, trigger=budget // 2, keep=budget // 4)
    chains: dict[str, Any] = {
        "stable(budget)": cl.StablePrefix(tb, low_water=low),
        "stable(rounds)": cl.StablePrefix(cl.LastRounds(3), low_water=low),
        "stable(rounds, budget)": cl.StablePrefix([cl.LastRounds(3), tb], low_water=low),
        "stable(summarize, budget)": cl.StablePrefix([summ, tb], low_water=low),
        "clear, budget": [clear, tb],
        "clear alone": clear,
        "stable(clear, budget)": cl.StablePrefix([clear, tb], low_water=low),
        "clear, stable(summarize, budget)": [clear, cl.StablePrefix([summ, tb], low_water=low)],
    }
    return chains[kind], (None if kind in ("stable(rounds)", "clear alone") else budget)


KINDS = [
    "stable(budget)",
    "stable(rounds)",
    "stable(rounds, budget)",
    "stable(summarize, budget)",
    "clear, budget",
    "clear alone",
    "stable(clear, budget)",
    "clear, stable(summarize, budget)",
]


def check_window(
    w: cl.Window, history: list[dict[str, Any]], model: str, tools: Any, budget: int | None
) -> int:
    """The window invariants; returns the tail's 0-based start."""
    msgs = w.messages
    k = prefix_len(history)
    assert msgs[:k] == history[:k]
    rest = msgs[k:]
    if w.summary is not None and not w.summary_dropped:
        assert rest[0] == w.summary.message
        rest = rest[1:]
    start = len(history) - len(rest)
    for i, sent in enumerate(rest, start):
        stored = history[i]
        if i + 1 in w.rewritten:  # cleared: same call, placeholder content
            assert stored["role"] == "tool"
            assert sent == {**stored, "content": PLACEHOLDER}
        else:
            assert sent == stored
    cl.validate_messages(msgs)
    assert start in valid_starts(history, min(start, k)) or not rest
    assert msgs[-1]["role"] == history[-1]["role"]
    exact = cl.count_tokens(msgs, model, tools)
    assert w.prompt_tokens == exact
    if budget is not None:
        assert exact <= budget
    return start


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    history=conversations(max_rounds=3),
    more=st.lists(st.integers(0, 10**6), min_size=2, max_size=6),
    data=st.data(),
    kind=st.sampled_from(KINDS),
    budget=st.integers(150, 2500),
    low=st.sampled_from([0.3, 0.6, 1.0]),
    keep=st.integers(0, 3),
    step=st.integers(1, 3),
    with_tools=st.booleans(),
)
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_invariants_turn_by_turn(
    backend: str,
    shared_ledger: AnyLedger,
    history: list[dict[str, Any]],
    more: list[int],
    data: st.DataObject,
    kind: str,
    budget: int,
    low: float,
    keep: int,
    step: int,
    with_tools: bool,
) -> None:
    model = "gpt-4o"
    conv = shared_ledger.conversation(uuid.uuid4().hex, model=model)
    conv.extend(history)
    strategy, allowed = build(kind, budget, low, keep, step)
    tools = TOOLS if with_tools else None
    held_before: int | None = None
    for turn, _ in enumerate(more):
        if turn:
            new = data.draw(rounds(100 + turn))
            conv.extend(new)
            history = history + new
        try:
            w = conv.window(strategy, tools=tools, explain=True)
        except cl.ContextOverflowError:
            event("overflow")
            return
        start = check_window(w, history, model, tools, allowed)
        stable = kind.startswith("stable(") and "summarize" not in kind
        if stable and held_before is not None and start != held_before:
            # it moved: the held start was no longer a valid start, or no longer fitted; a
            # re-plan leaves at most low water of the budget, or only the newest round
            users = [i for i, m in enumerate(history) if m["role"] == "user"]
            if allowed is not None and start <= users[-1]:
                assert w.prompt_tokens <= low * allowed or start == users[-1]
            event("re-planned")
        elif stable and held_before is not None:
            event("held")
        conv.request(strategy, tools=tools)  # a request remembers where its window started
        held_before = start


def test_held_start_until_it_no_longer_fits(ledger: AnyLedger) -> None:
    """A growing conversation: the start stays put turn after turn, then jumps once to low
    water, then stays put again; plain TokenBudget slides every turn."""
    conv = ledger.conversation(uuid.uuid4().hex, model="gpt-4o", system="You are terse.")
    stable, plain = cl.StablePrefix(cl.TokenBudget(600), low_water=0.5), cl.TokenBudget(600)
    starts, plain_starts = [], []
    for i in range(40):
        conv.extend(
            [
                {"role": "user", "content": f"question {i} " + "word " * 20},
                {"role": "assistant", "content": f"answer {i} " + "word " * 20},
            ]
        )
        w = conv.window(stable, explain=True)
        assert w.prompt_tokens <= 600
        assert w.predicted_cached_tokens == 0  # under 1,024 tokens nothing is cached
        starts.append(w.kept.first)
        plain_starts.append(conv.window(plain, explain=True).kept.first)
        conv.request(stable)
    moves = sum(a != b for a, b in itertools.pairwise(starts))
    plain_moves = sum(a != b for a, b in itertools.pairwise(plain_starts))
    assert plain_moves >= 25  # the sliding window moves nearly every turn once full
    assert 2 <= moves <= plain_moves // 4
    # a bare window() does not move the remembered start
    conv.extend([{"role": "user", "content": "x " * 400}])
    before = conv.info.window_start
    conv.window(stable)
    assert conv.info.window_start == before


def test_explain_predicts_the_cached_prefix(ledger: AnyLedger) -> None:
    conv = ledger.conversation(uuid.uuid4().hex, model="gpt-4o", system="Be brief.")
    stable, plain = cl.StablePrefix(cl.TokenBudget(4000)), cl.TokenBudget(4000)
    held = moved = 0
    for i in range(40):
        conv.extend(
            [
                {"role": "user", "content": f"q{i} " + "w " * 60},
                {"role": "assistant", "content": f"a{i} " + "w " * 60},
            ]
        )
        conv.append({"role": "user", "content": f"next {i}"})
        w = conv.window(stable, explain=True)
        if w.held:
            held += 1
            # everything before the newest round, in steps of 128
            before = w.prompt_tokens - cl.count_tokens(w.messages[-1:], "gpt-4o")
            expected = (before // 128) * 128 if before >= 1024 else 0
            assert abs(w.predicted_cached_tokens - expected) <= 128
            assert w.predicted_cached_tokens % 128 == 0
            # saved at gpt-4o's list prices: $2.50 against $1.25 per 1M tokens
            assert w.predicted_saving_micros == w.predicted_cached_tokens * 1.25
            assert "start held" in str(w)
        p = conv.window(plain, explain=True)
        if p.dropped.count:
            moved += 1
            assert p.predicted_cached_tokens == 0  # a sliding window shares only the prefix
        conv.request(stable)
        conv.append({"role": "assistant", "content": "ok"})
    assert held >= 20 and moved >= 10


def test_clear_tool_results_steps_and_keeps_pairs(ledger: AnyLedger) -> None:
    conv = ledger.conversation(uuid.uuid4().hex, model="gpt-4o")
    clear = cl.ClearToolResults(keep=2, placeholder=PLACEHOLDER, step=3)
    seen = []
    for i in range(9):
        conv.extend(
            [
                {"role": "user", "content": f"look up {i}"},
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": f"c{i}",
                            "type": "function",
                            "function": {"name": "lookup", "arguments": "{}"},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": f"c{i}", "content": "result " * 50},
                {"role": "assistant", "content": "done"},
            ]
        )
        w = conv.window(clear, explain=True)
        cl.validate_messages(w.messages)
        full = [m for m in w.messages if m["role"] == "tool" and m["content"] != PLACEHOLDER]
        cleared = [m for m in w.messages if m.get("content") == PLACEHOLDER]
        assert len(full) <= 2 and len(cleared) == len(w.rewritten)
        assert w.prompt_tokens == cl.count_tokens(w.messages, "gpt-4o")
        seen.append(len(cleared))
    assert seen == [0, 0, 3, 3, 3, 6, 6, 6, 9]  # moves in steps of 3
    # the stored history is untouched
    assert all(m.get("content") != PLACEHOLDER for m in conv.messages())


_REQUEST_IN_ANOTHER_PROCESS = """
import sys
import chatledger as cl
with cl.Ledger(sys.argv[1]) as led:
    conv = led.conversation(sys.argv[2])
    conv.request(cl.StablePrefix(cl.TokenBudget(400), low_water=0.5))
    print(conv.info.window_start)
"""


def test_remembered_start_survives_processes(db_url: str) -> None:
    cid = uuid.uuid4().hex
    with cl.Ledger(db_url) as led:
        conv = led.conversation(cid, model="gpt-4o")
        for i in range(30):
            conv.extend(
                [
                    {"role": "user", "content": f"q{i} " + "w " * 30},
                    {"role": "assistant", "content": f"a{i} " + "w " * 30},
                ]
            )
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_REQUEST_IN_ANOTHER_PROCESS), db_url, cid],
        capture_output=True,
        text=True,
        check=True,
    )
    remembered = int(out.stdout)
    with cl.Ledger(db_url) as led:
        conv = led.conversation(cid)
        assert conv.info.window_start == remembered
        conv.extend([{"role": "user", "content": "one more"}])
        w = conv.window(cl.StablePrefix(cl.TokenBudget(400), low_water=0.5), explain=True)
        assert w.kept.first == remembered  # held from the other process's request


def test_arguments_are_checked() -> None:
    for bad in (0, -1, 1.5, True, "0.5"):
        with pytest.raises(cl.InvalidArgumentError):
            cl.StablePrefix(cl.TokenBudget(100), low_water=bad)  # type: ignore[arg-type]
    with pytest.raises(cl.InvalidArgumentError):
        cl.StablePrefix(None)
    for kwargs in ({"keep": -1}, {"step": 0}, {"placeholder": ""}, {"keep": True}):
        with pytest.raises(cl.InvalidArgumentError):
            cl.ClearToolResults(**kwargs)


def test_cache_hits_through_the_sdk(
    ledger: AnyLedger, server: FakeOpenAI, client: openai.OpenAI
) -> None:
    """End to end under the test server's simulated prompt cache: once the budget starts
    trimming, most StablePrefix turns are served from cache, and plain TokenBudget's are not;
    ``record()`` stores the cached tokens the API reported."""
    server.prompt_cache = PromptCache()
    shares = {}
    for name, strategy in (
        ("stable", cl.StablePrefix(cl.TokenBudget(3000), low_water=0.6)),
        ("plain", cl.TokenBudget(3000)),
    ):
        conv = ledger.conversation(uuid.uuid4().hex, model="gpt-4o", system="Be brief.")
        for i in range(30):
            w = conv.window(strategy, explain=True)
            conv.chat(client, f"question {i} " + "word " * 200, strategy=strategy)
        assert w.dropped.count > 0  # trimming began well before the last turns
        records = conv.usage_records()
        assert len(records) == 30
        trimmed = sorted(records, key=lambda r: r.created_at)[-12:]
        shares[name] = sum(r.cached_tokens > 0 for r in trimmed) / len(trimmed)
    assert shares["stable"] >= 0.7
    assert shares["plain"] <= 0.2


def test_a_refused_request_remembers_nothing(ledger: AnyLedger) -> None:
    """The start is stored only once a request passed every check: a budget refusal writes
    nothing, not even this hint."""
    conv = ledger.conversation(uuid.uuid4().hex, model="gpt-4o")
    conv.extend(
        [{"role": "user", "content": "q " * 50}, {"role": "assistant", "content": "a " * 50}] * 5
    )
    conv.append({"role": "user", "content": "next"})
    stable = cl.StablePrefix(cl.TokenBudget(300))
    with pytest.raises(cl.BudgetExceededError):
        conv.request(stable, budget=cl.Budget(tokens=10), max_tokens=10)
    assert conv.refresh().window_start is None
    conv.request(stable)
    assert conv.refresh().window_start == conv.window(stable, explain=True).kept.first
