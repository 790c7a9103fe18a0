"""Self-verifying accounting: the count made before sending is kept next to the billed one,
the ledger reports the drift per model and feature, and warns once when a model's drifts."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import openai
import pytest

import chatledger as cl
from chatledger.drift import DriftWatch, summarize
from openai_server import FakeOpenAI
from twins import AnyLedger

pytestmark = pytest.mark.twins

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look a word up.",
            "parameters": {"type": "object", "properties": {"word": {"type": "string"}}},
        },
    }
]


def test_drift_per_model_and_feature(
    ledger: AnyLedger, uid: str, server: FakeOpenAI, client: openai.OpenAI
) -> None:
    start = datetime.now(UTC)  # the server databases are shared by the whole run
    conv = ledger.conversation(uid, model="gpt-4o", system="Be brief.")
    # the "API" bills exactly what chatledger counts, except with tools, where it bills 5 more
    exact = {"n": 0}

    def billed(body: dict) -> int:
        n = cl.count_tokens(body["messages"], body["model"], body.get("tools"))
        return n + (5 if body.get("tools") else 0) + exact["n"]

    server.prompt_tokens = billed
    conv.chat(client, "hello", max_tokens=20)
    conv.chat(client, "and again", max_tokens=20)
    conv.chat(client, "use a tool", tools=TOOLS, max_tokens=20)
    kwargs = conv.request(max_tokens=20)  # the request/record pair counts too
    conv.record(client.chat.completions.create(**kwargs))

    rows = {(d.model, d.feature): d for d in ledger.token_drift(since=start)}
    model = next(m for m, f in rows if f == "all")
    everything = rows[(model, "all")]
    assert (everything.requests, everything.exact, everything.under) == (4, 3, 1)
    assert everything.worst_under == 5 and everything.mean_error == pytest.approx(-5 / 4)
    tools = rows[(model, "tools")]
    assert (tools.requests, tools.exact, tools.worst_under) == (1, 0, 5)
    records = conv.usage_records()
    assert [r.metadata["counted"] - r.prompt_tokens for r in records] == [0, 0, -5, 0]


def test_no_count_no_drift_row(ledger: AnyLedger, uid: str) -> None:
    """A response recorded without a known pre-send count is billed, not compared."""
    start = datetime.now(UTC)
    conv = ledger.conversation(uid)
    conv.append({"role": "user", "content": "hi"})
    conv.record(
        {
            "id": f"r-{uid}",
            "model": "gpt-4o",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "yo"},
                }
            ],
            "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10},
        }
    )
    assert ledger.token_drift(since=start) == []


def test_watch_warns_once_per_model(caplog: pytest.LogCaptureFixture) -> None:
    watch = DriftWatch(tolerance=2)
    with caplog.at_level(logging.WARNING, logger="chatledger"):
        assert not watch.note("m", 100, 101)  # within tolerance
        assert not watch.note("m", 100, 100)
        assert watch.note("m", 100, 110)  # an under-count of 10
        assert not watch.note("m", 100, 130)  # once
        assert not watch.note("other", 50, 49)  # over-counts are the safe side
    assert len([r for r in caplog.records if "drift" in r.getMessage()]) == 1


def test_summarize_signs_and_order() -> None:
    got = summarize([("a", 10, 12, ["tools"]), ("a", 10, 9, []), ("b", 5, 5, ["images"])])
    assert [(d.model, d.feature) for d in got] == [
        ("a", "all"),
        ("a", "tools"),
        ("b", "all"),
        ("b", "images"),
    ]
    a = got[0]
    assert (a.under, a.over, a.worst_under, a.worst_over) == (1, 1, 2, 1)
