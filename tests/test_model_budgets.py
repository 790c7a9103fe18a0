"""Budgets relative to the model: TokenBudget and Summarize thresholds given as fractions of
the conversation's model's context window, turned into tokens when a window is planned."""

from __future__ import annotations

import uuid

import pytest

import chatledger as cl
from chatledger.model_catalogue import model_limits
from twins import AnyLedger

pytestmark = pytest.mark.twins


def test_fraction_follows_each_conversations_model(ledger: AnyLedger) -> None:
    budget = cl.TokenBudget(0.0001)  # of 128k (gpt-4o) is 12 tokens; of 1M (gpt-4.1) 104
    small = ledger.conversation(uuid.uuid4().hex, model="gpt-4o")
    large = ledger.conversation(uuid.uuid4().hex, model="gpt-4.1")
    for conv in (small, large):
        conv.extend([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}])
        conv.extend([{"role": "user", "content": "again"}])
    w_small = small.window(budget, explain=True)
    w_large = large.window(budget, explain=True)
    assert w_small.allowed == int(0.0001 * model_limits("gpt-4o").context_window)
    assert w_large.allowed == int(0.0001 * model_limits("gpt-4.1").context_window)
    assert w_small.prompt_tokens <= w_small.allowed
    assert w_large.kept.count > w_small.kept.count  # the larger model keeps more
    # a reserve for max_tokens comes off the resolved budget
    kwargs = large.request(budget, max_tokens=20)
    assert cl.count_tokens(kwargs["messages"], "gpt-4.1") <= w_large.allowed - 20


def test_unknown_model_needs_tokens(ledger: AnyLedger) -> None:
    conv = ledger.conversation(uuid.uuid4().hex, model="my-local-llama")
    conv.append({"role": "user", "content": "hi"})
    with pytest.raises(cl.InvalidArgumentError, match=r"budget as a number of tokens|unknown"):
        conv.window(cl.TokenBudget(0.5))
    assert conv.window(cl.TokenBudget(500)) == [{"role": "user", "content": "hi"}]


def test_summarize_fractions(ledger: AnyLedger) -> None:
    calls: list[int] = []

    def summarize(previous: str | None, messages: list[dict[str, object]]) -> str:
        calls.append(len(messages))
        return "short summary"

    conv = ledger.conversation(uuid.uuid4().hex, model="gpt-4o")
    for i in range(20):
        conv.extend(
            [
                {"role": "user", "content": f"q{i} " + "w " * 40},
                {"role": "assistant", "content": f"a{i} " + "w " * 40},
            ]
        )
    strategy = cl.Summarize(summarize, trigger=0.004, keep=0.002)  # 512 and 256 tokens
    w = conv.window(strategy, explain=True)
    assert calls and w.summary is not None
    assert w.kept.tokens is not None and w.kept.tokens <= 256


@pytest.mark.parametrize("bad", [0.0, -0.5, 1.5, float("nan"), float("inf")])
def test_bad_fractions(bad: float) -> None:
    with pytest.raises(cl.InvalidArgumentError):
        cl.TokenBudget(bad)
    with pytest.raises(cl.InvalidArgumentError):
        cl.Summarize(lambda p, m: "", trigger=bad, keep=0.1)


def test_mixed_summarize_thresholds_refused() -> None:
    with pytest.raises(cl.InvalidArgumentError):
        cl.Summarize(lambda p, m: "", trigger=0.5, keep=1000)
