"""Cache reads and writes in the usage ledger: what providers report is stored with each
response and priced (reads at the cached rate, writes at the cache-write rate)."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest

import chatledger as cl
from chatledger.pricing import cost_micros
from twins import AnyLedger, Opener

pytestmark = pytest.mark.twins

# an Anthropic-like price: reads at 0.1x, writes at 1.25x
CLAUDE = cl.Price(Decimal("3"), Decimal("0.30"), Decimal("15"), cache_write=Decimal("3.75"))


def completion(rid: str, usage: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": rid,
        "model": "claude-like",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
        ],
        "usage": usage,
    }


@pytest.mark.parametrize(
    "usage",
    [
        # OpenAI-style details, and Anthropic's own name for writes
        {
            "prompt_tokens": 5000,
            "completion_tokens": 100,
            "prompt_tokens_details": {"cached_tokens": 3000, "cache_write_tokens": 1500},
        },
        {
            "prompt_tokens": 5000,
            "completion_tokens": 100,
            "prompt_tokens_details": {"cached_tokens": 3000},
            "cache_creation_input_tokens": 1500,
        },
    ],
)
def test_writes_and_reads_are_stored_and_priced(
    open_ledger: Opener, db_url: str, usage: dict[str, Any]
) -> None:
    ledger = open_ledger(
        db_url, prices=cl.PriceTable.default().with_overrides({"claude-like": CLAUDE})
    )
    conv = ledger.conversation(uuid.uuid4().hex, model="claude-like")
    conv.append({"role": "user", "content": "hi"})
    conv.record(completion(uuid.uuid4().hex, usage))
    rec = conv.usage_records()[-1]
    assert (rec.cached_tokens, rec.cache_write_tokens) == (3000, 1500)
    # 500 fresh at 3, 3000 read at 0.30, 1500 written at 3.75, 100 out at 15 (per 1M)
    assert rec.cost_micros == 500 * 3 + 3000 * 0.3 + 1500 * 3.75 + 100 * 15
    assert conv.usage().cost_usd == rec.cost_usd


def test_no_writes_reported_is_none(ledger: AnyLedger) -> None:
    conv = ledger.conversation(uuid.uuid4().hex, model="gpt-4o")
    conv.append({"role": "user", "content": "hi"})
    conv.record(completion(uuid.uuid4().hex, {"prompt_tokens": 10, "completion_tokens": 2}))
    assert conv.usage_records()[-1].cache_write_tokens is None


def test_prices_of_writes() -> None:
    no_write_rate = cl.Price(Decimal("2.50"), Decimal("1.25"), Decimal("10"))
    # without a write rate writes are billed as input
    assert cost_micros(
        no_write_rate, prompt_tokens=1000, completion_tokens=0, cache_write_tokens=400
    ) == cost_micros(no_write_rate, prompt_tokens=1000, completion_tokens=0)
    # writes reported on top of what is left are held to the prompt
    assert cost_micros(
        CLAUDE, prompt_tokens=100, completion_tokens=0, cached_tokens=60, cache_write_tokens=500
    ) == round(40 * 3.75 + 60 * 0.3)
    # a budget's worst case assumes every prompt token written when writes cost more
    table = cl.PriceTable.default().with_overrides({"claude-like": CLAUDE})
    assert table.estimate_micros("claude-like", 1000, 0) == 1000 * 3.75
    with pytest.raises(cl.InvalidArgumentError):
        cl.Price(Decimal("1"), None, Decimal("1"), cache_write=Decimal("-1"))
    with pytest.raises(cl.InvalidArgumentError):
        cost_micros(CLAUDE, prompt_tokens=1, completion_tokens=0, cache_write_tokens=-1)
