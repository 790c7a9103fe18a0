"""OpenAISummarizer through the real openai SDK against a local OpenAI-compatible server, on
both twins (the async twin's summarizer is built on an ``openai.AsyncOpenAI``: see twins.py),
and what only the async twin does: async summarizers and their timeout."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import openai
import pytest

import chatledger as cl
from openai_server import FakeOpenAI, Reply
from twins import AnyLedger

pytestmark = pytest.mark.twins


def call(cid: str) -> dict[str, Any]:
    return {"id": cid, "type": "function", "function": {"name": "search", "arguments": "{}"}}


HISTORY: list[dict[str, Any]] = [{"role": "system", "content": "You are a travel agent."}]
for i in range(10):
    HISTORY.append({"role": "user", "content": f"Day {i}: plan a visit to city {i}. " * 6})
    if i % 4 == 2:
        HISTORY.append({"role": "assistant", "tool_calls": [call(f"s{i}")]})
        HISTORY.append({"role": "tool", "tool_call_id": f"s{i}", "content": "museum, park " * 8})
    HISTORY.append({"role": "assistant", "content": f"Booked city {i}: hotel and museum. " * 5})


def test_openai_summarizer(ledger: AnyLedger, uid: str, server: FakeOpenAI) -> None:
    server.queue(Reply(content="  The user is planning visits to cities 0-6; all booked.  "))
    client = openai.OpenAI(base_url=server.url, api_key="test", max_retries=0)
    summarizer = cl.OpenAISummarizer(client, "gpt-4o-mini", max_words=80)
    conv = ledger.conversation(uid, model="gpt-4o")
    conv.extend(HISTORY)
    strategy = [cl.Summarize(summarizer, trigger=500, keep=250), cl.TokenBudget(700)]
    w = conv.window(strategy, explain=True)

    assert w.summary is not None and w.summary.created
    assert w.summary.text == "The user is planning visits to cities 0-6; all booked."
    assert w.messages[1]["content"].endswith(w.summary.text)
    (request,) = server.requests
    assert request["model"] == "gpt-4o-mini" and request["max_tokens"] == 600
    assert "80 words" in request["messages"][0]["content"]
    transcript = request["messages"][1]["content"]
    assert "Day 0: plan a visit to city 0." in transcript
    assert "search({}) [s2]" in transcript and "tool result [s2]" in transcript
    assert "Previous summary" not in transcript
    assert w.prompt_tokens == cl.count_tokens(w.messages, "gpt-4o") <= 700
    # reused: the server is not asked again
    assert conv.window(strategy) == w.messages
    assert len(server.requests) == 1
    client.close()


def test_openai_summarizer_error_falls_back(
    ledger: AnyLedger, uid: str, server: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    server.queue(Reply.api_error(500, "upstream exploded"), Reply(content="Recovered summary."))
    client = openai.OpenAI(base_url=server.url, api_key="test", max_retries=0)
    conv = ledger.conversation(uid, model="gpt-4o")
    conv.extend(HISTORY)
    strategy = [
        cl.Summarize(cl.OpenAISummarizer(client, "m"), trigger=500, keep=250),
        cl.TokenBudget(700),
    ]
    with caplog.at_level(logging.WARNING, logger="chatledger"):
        first = conv.window(strategy, explain=True)
    assert first.summary_failed and first.summary is None
    assert "InternalServerError" in caplog.text
    cl.validate_messages(first.messages)
    second = conv.window(strategy, explain=True)  # the next turn retries
    assert second.summary is not None and second.summary.text == "Recovered summary."
    client.close()


@pytest.mark.async_only  # both twins on one database, side by side
async def test_async_window_matches_sync(aledger: cl.AsyncLedger, db_url: str, uid: str) -> None:
    conv = await aledger.conversation(uid, model="gpt-4o")
    await conv.extend(HISTORY)
    with cl.Ledger(db_url) as led:
        sync_conv = led.get(uid)
        for strategy in (
            cl.LastRounds(3),
            cl.TokenBudget(400),
            [cl.LastRounds(5), cl.TokenBudget(600)],
        ):
            assert await conv.window(strategy) == sync_conv.window(strategy)


@pytest.mark.async_only  # an async summarizer, cancelled at its timeout
async def test_async_summarizer_timeout_and_sync_summarizer_in_thread(
    aledger: cl.AsyncLedger, uid: str
) -> None:
    async def slow(previous: str | None, messages: list[dict[str, Any]]) -> str:
        await asyncio.sleep(5)
        return "late"

    conv = await aledger.conversation(uid, model="gpt-4o")
    await conv.extend(HISTORY)
    tasks = asyncio.all_tasks()
    w = await conv.window(
        [cl.Summarize(slow, trigger=500, keep=250, timeout=0.1), cl.TokenBudget(700)], explain=True
    )
    assert w.summary_failed and w.summary is None
    assert asyncio.all_tasks() <= tasks  # the summarizer's task was cancelled, not left behind
    w2 = await conv.window(
        [cl.Summarize(lambda p, m: f"{len(m)} folded", trigger=500, keep=250), cl.TokenBudget(700)],
        explain=True,
    )
    assert w2.summary is not None and w2.summary.text.endswith("folded")
    with pytest.raises(cl.ContextOverflowError):
        await conv.window(cl.TokenBudget(20))
