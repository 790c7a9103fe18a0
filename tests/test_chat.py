"""The round trip through the real openai SDK against a local OpenAI-compatible server:
request, response, streaming, usage, cost and budgets, on every database and both twins (the
async twin gets an ``openai.AsyncOpenAI`` with the test client's settings: see twins.py)."""

from __future__ import annotations

import json
import warnings
from decimal import Decimal
from typing import Any

import openai
import pytest
from sqlalchemy import event

import chatledger as cl
from openai_server import FakeOpenAI, Reply, Usage
from twins import AnyLedger, Opener, statements_of

pytestmark = pytest.mark.twins

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


def price(table: cl.PriceTable, model: str, prompt: int, completion: int, cached: int = 0) -> int:
    p = table.price(model)
    assert p is not None
    cached_rate = p.cached_input if p.cached_input is not None else p.input
    usd = (
        Decimal(prompt - cached) * p.input
        + Decimal(cached) * cached_rate
        + Decimal(completion) * p.output
    ) / Decimal(1_000_000)
    return int((usd * 1_000_000).to_integral_value(rounding="ROUND_HALF_UP"))


def test_chat_tool_call_round_trip(
    ledger: AnyLedger, uid: str, server: FakeOpenAI, client: openai.OpenAI
) -> None:
    conv = ledger.conversation(uid, owner=f"o-{uid}", model="gpt-4o", system="Be brief.")
    server.queue(
        Reply(
            tool_calls=[{"id": "call_9", "name": "get_weather", "arguments": {"city": "Oslo"}}],
            usage=Usage(prompt_tokens=120, completion_tokens=18, cached_tokens=64),
        ),
        Reply(content="It is 5 C in Oslo.", usage=Usage(prompt_tokens=160, completion_tokens=9)),
    )
    first = conv.chat(client, "Weather in Oslo?", tools=TOOLS, max_tokens=200, temperature=0)
    assert first.choices[0].finish_reason == "tool_calls"
    sent = server.requests[0]
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Oslo?"},
    ]
    assert sent["tools"] == TOOLS and sent["max_tokens"] == 200 and sent["model"] == "gpt-4o"
    stored = conv.messages()
    assert stored[-1]["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": json.dumps({"city": "Oslo"}),
    }
    assert conv.refresh().pending_tool_calls == ("call_9",)
    conv.append({"role": "tool", "tool_call_id": "call_9", "content": '{"temp_c": 5}'})
    second = conv.chat(client, tools=TOOLS, strategy=cl.TokenBudget(4000), max_tokens=200)
    assert second.choices[0].message.content == "It is 5 C in Oslo."
    assert server.requests[1]["messages"] == [
        *stored,
        {"role": "tool", "tool_call_id": "call_9", "content": '{"temp_c": 5}'},
    ]
    records = conv.usage_records()
    assert [(r.prompt_tokens, r.completion_tokens, r.cached_tokens) for r in records] == [
        (120, 18, 64),
        (160, 9, 0),
    ]
    assert records[0].message_seq == 3 and records[1].message_seq == 5
    assert records[0].finish_reason == "tool_calls" and records[0].response_id == first.id
    table = ledger.prices
    assert records[0].cost_micros == price(table, "gpt-4o", 120, 18, 64)
    totals = conv.usage()
    assert (totals.requests, totals.prompt_tokens, totals.completion_tokens) == (2, 280, 27)
    assert totals.cost_micros == records[0].cost_micros + records[1].cost_micros  # type: ignore[operator]
    assert ledger.usage(owner=f"o-{uid}") == totals


def test_request_is_ready_for_the_sdk(
    ledger: AnyLedger, uid: str, server: FakeOpenAI, client: openai.OpenAI
) -> None:
    conv = ledger.conversation(uid, model="gpt-4o-mini", system="sys")
    conv.append({"role": "user", "content": "JSON please: list three colours " * 30})
    kwargs = conv.request(
        cl.TokenBudget(1000),
        response_format={"type": "json_object"},
        max_completion_tokens=300,
        seed=7,
        user=None,
    )
    assert set(kwargs) == {
        "model",
        "messages",
        "response_format",
        "max_completion_tokens",
        "seed",
        "prompt_cache_key",
    }
    # one cache key per conversation, which names neither the id nor the owner
    assert kwargs["prompt_cache_key"] == conv.request()["prompt_cache_key"]
    assert uid not in kwargs["prompt_cache_key"] and len(kwargs["prompt_cache_key"]) <= 64
    assert "prompt_cache_key" not in conv.request(prompt_cache_key=None)
    assert conv.request(prompt_cache_key="mine")["prompt_cache_key"] == "mine"
    with pytest.raises(cl.InvalidParameterError, match="prompt_cache_key"):
        conv.request(prompt_cache_key="k" * 65)
    assert cl.count_tokens(kwargs["messages"], "gpt-4o-mini") <= 1000 - 300
    client.chat.completions.create(**kwargs)
    assert server.requests[0]["seed"] == 7
    with pytest.raises(cl.InvalidParameterError) as info:
        conv.request(temperature=3, top_logprobs=5, n=0)
    assert {"temperature", "top_logprobs", "n"} <= set(info.value.params)
    with pytest.raises(cl.InvalidParameterError, match="max_tokens"):
        conv.request(cl.TokenBudget(500), max_tokens=500)
    with pytest.raises(cl.InvalidParameterError, match="messages"):
        conv.request(messages=[])


def test_json_object_needs_the_word_json(ledger: AnyLedger, uid: str) -> None:
    conv = ledger.conversation(uid)
    conv.append({"role": "user", "content": "give me a list"})
    with pytest.raises(cl.InvalidParameterError, match="JSON"):
        conv.request(response_format={"type": "json_object"})


def test_finish_reasons_mark_the_message(
    ledger: AnyLedger, uid: str, server: FakeOpenAI, client: openai.OpenAI
) -> None:
    conv = ledger.conversation(uid)
    server.queue(
        Reply(content="This answer was cut", finish_reason="length"),
        Reply(content="", finish_reason="content_filter"),
        Reply(
            tool_calls=[{"id": "c1", "name": "get_weather", "arguments": '{"city": "Par'}],
            finish_reason="length",
        ),
    )
    conv.chat(client, "one")
    conv.chat(client, "two")
    conv.chat(client, "three", tools=TOOLS)
    recs = conv.records()
    assert [(r.role, r.status) for r in recs] == [
        ("user", None),
        ("assistant", "length"),
        ("user", None),
        ("assistant", "content_filter"),
        ("user", None),
        ("assistant", "length"),
    ]
    # the half-written tool call is not stored: the history stays valid for the API
    assert recs[-1].message == {"role": "assistant", "content": ""}
    meta = conv.usage_records()[-1].metadata
    assert meta is not None and meta["dropped_tool_calls"] == 1
    cl.validate_messages(conv.messages())


def test_n_choices_keep_one_bill_all(
    ledger: AnyLedger, uid: str, server: FakeOpenAI, client: openai.OpenAI
) -> None:
    conv = ledger.conversation(uid)
    server.queue(Reply(content="first", usage=Usage(prompt_tokens=10, completion_tokens=6)))
    conv.chat(client, "pick", n=3, choice=1)
    assert conv.messages()[-1] == {"role": "assistant", "content": "first [1]"}
    (usage,) = conv.usage_records()
    assert usage.completion_tokens == 6
    assert usage.metadata is not None and usage.metadata["chosen"] == 1
    assert [c["message"]["content"] for c in usage.metadata["choices"]] == [
        "first",
        "first [1]",
        "first [2]",
    ]


def test_record_is_idempotent_by_response_id(
    ledger: AnyLedger, uid: str, server: FakeOpenAI, client: openai.OpenAI
) -> None:
    conv = ledger.conversation(uid)
    conv.append({"role": "user", "content": "hi"})
    completion = client.chat.completions.create(**conv.request())
    a = conv.record(completion)
    b = conv.record(completion.model_dump())
    assert a.message == b.message and a.usage == b.usage
    assert len(conv.messages()) == 2 and len(conv.usage_records()) == 1


def test_api_error_records_nothing(
    ledger: AnyLedger, uid: str, server: FakeOpenAI, client: openai.OpenAI
) -> None:
    conv = ledger.conversation(uid)
    server.queue(Reply.api_error(429, "Rate limit reached"))
    with pytest.raises(openai.RateLimitError):
        conv.chat(client, "hello?")
    # the user message stays; the next window is valid and the retry works
    assert conv.messages() == [{"role": "user", "content": "hello?"}]
    assert conv.usage_records() == []
    conv.chat(client)
    assert conv.messages()[-1]["content"] == "echo: hello?"


def test_streaming_records_the_reply(
    ledger: AnyLedger, uid: str, server: FakeOpenAI, client: openai.OpenAI
) -> None:
    conv = ledger.conversation(uid, model="gpt-4o")
    server.queue(
        Reply(
            content="Checking the weather.",
            tool_calls=[
                {"id": "t1", "name": "get_weather", "arguments": {"city": "Rome"}},
                {"id": "t2", "name": "get_weather", "arguments": {"city": "Oslo"}},
            ],
            usage=Usage(prompt_tokens=50, completion_tokens=30),
        )
    )
    with conv.chat(
        client, "Rome and Oslo?", tools=TOOLS, stream=True, stream_options={"include_usage": True}
    ) as s:
        text = "".join(
            c.choices[0].delta.content or "" for c in s if c.choices and c.choices[0].delta
        )
    assert text == "Checking the weather."
    stored = conv.messages()[-1]
    assert stored["content"] == "Checking the weather."
    assert [json.loads(tc["function"]["arguments"]) for tc in stored["tool_calls"]] == [
        {"city": "Rome"},
        {"city": "Oslo"},
    ]
    assert s.record is not None and s.record.message is not None
    assert s.record.usage.prompt_tokens == 50 and s.record.usage.completion_tokens == 30
    assert conv.refresh().pending_tool_calls == ("t1", "t2")


def test_broken_stream_stores_what_arrived(
    ledger: AnyLedger, uid: str, server: FakeOpenAI, client: openai.OpenAI
) -> None:
    conv = ledger.conversation(uid, model="gpt-4o")
    server.queue(
        Reply(
            content="one two three four five six seven eight",
            tool_calls=[{"id": "t1", "name": "get_weather", "arguments": {"city": "Lisbon"}}],
            break_stream_after=4,
        )
    )
    received: list[Any] = []
    recorder = conv.chat(client, "count", tools=TOOLS, stream=True)
    with pytest.raises(openai.APIConnectionError), recorder as s:
        received.extend(s)
    assert received  # some chunks arrived before the break
    recs = conv.records()
    assert recs[-1].status == "incomplete"
    partial = recs[-1].message
    assert "tool_calls" not in partial  # arguments never completed
    assert "one two three four five".startswith(partial.get("content", "").strip())
    usage = conv.usage_records()[-1]
    assert usage.metadata is not None and usage.metadata["usage"] == "estimated"
    assert usage.prompt_tokens == cl.count_tokens(conv.messages()[:-1], "gpt-4o", TOOLS)
    cl.validate_messages(conv.messages())


def test_stream_abandoned_by_the_caller(
    ledger: AnyLedger, uid: str, server: FakeOpenAI, client: openai.OpenAI
) -> None:
    conv = ledger.conversation(uid)
    server.queue(Reply(content="a b c d e f g h i j k l"))
    with conv.chat(client, "go", stream=True) as s:
        for i, _ in enumerate(s):
            if i == 2:
                break
    assert conv.records()[-1].status == "incomplete"
    assert conv.messages()[-1]["role"] == "assistant"


def test_budgets_stop_requests_before_they_are_sent(
    open_ledger: Opener, db_url: str, uid: str, server: FakeOpenAI, client: openai.OpenAI
) -> None:
    owner = f"o-{uid}"
    guard = cl.Budget(tokens=400, scope="owner", period="day")
    with open_ledger(db_url, budgets=[guard]) as led:
        conv = led.conversation(uid, owner=owner)
        server.queue(Reply(content="ok", usage=Usage(prompt_tokens=200, completion_tokens=100)))
        conv.chat(client, "first", max_tokens=50)
        with pytest.raises(cl.BudgetExceededError) as info:
            conv.chat(client, "second", max_tokens=150)
        assert info.value.scope == "owner" and info.value.used == 300
        assert len(server.requests) == 1
        other = led.conversation(f"{uid}-2", owner=owner)
        with pytest.raises(cl.BudgetExceededError):
            other.chat(client, "third", max_tokens=150)
        # a money ceiling per conversation
        money = cl.Budget(usd="0.0001", scope="conversation")
        fresh = led.conversation(f"{uid}-3", owner=f"other-{uid}", model="gpt-4o")
        with pytest.raises(cl.BudgetExceededError, match=r"\$"):
            fresh.chat(client, "expensive " * 20, budget=money, max_tokens=300)


def test_budgets_are_checked_together(ledger: AnyLedger, uid: str) -> None:
    """request() reads what every budget has used together: the connections it opens do not
    grow with the number of budgets."""
    conv = ledger.conversation(uid, owner=f"o-{uid}")
    conv.append({"role": "user", "content": "hi"})
    opened: list[Any] = []

    def count(conn: Any) -> None:
        opened.append(conn)

    engine = statements_of(ledger)
    event.listen(engine, "engine_connect", count)
    try:
        conv.request(budget=cl.Budget(tokens=10_000), max_tokens=10)
        one = len(opened)
        opened.clear()
        budgets = [
            cl.Budget(tokens=10_000),
            cl.Budget(tokens=10_000, scope="owner", period="day"),
            cl.Budget(usd="1", scope="owner", period="month"),
        ]
        conv.request(budget=budgets, max_tokens=10)
        three = len(opened)
    finally:
        event.remove(engine, "engine_connect", count)
    assert three == one


def test_cost_estimate_and_totals_by_period(ledger: AnyLedger, uid: str) -> None:
    conv = ledger.conversation(uid, model="gpt-4o-mini")
    conv.append({"role": "user", "content": "hi"})
    completion: dict[str, Any] = {
        "id": f"r-{uid}",
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hey"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1_000_000, "completion_tokens": 1_000_000},
    }
    rec = conv.record(completion)
    assert rec.usage.model == "gpt-4o-mini-2024-07-18"
    assert rec.usage.cost_micros == price(ledger.prices, "gpt-4o-mini", 1_000_000, 1_000_000)
    later = rec.usage.created_at
    from datetime import timedelta

    assert conv.usage(since=later + timedelta(seconds=1)).requests == 0
    assert conv.usage(since=later - timedelta(seconds=1)).requests == 1


def test_estimate_before_sending(ledger: AnyLedger, uid: str) -> None:
    conv = ledger.conversation(uid, model="gpt-4o", system="sys")
    conv.append({"role": "user", "content": "price me"})
    kwargs = conv.request(tools=TOOLS, max_tokens=100, n=2)
    est = conv.estimate(kwargs)
    assert est.prompt_tokens == cl.count_tokens(kwargs["messages"], "gpt-4o", TOOLS)
    assert est.max_completion_tokens == 200
    assert est.max_cost_micros == price(ledger.prices, "gpt-4o", est.prompt_tokens, 200)
    with warnings.catch_warnings():  # warned once per process, when the counter is made
        warnings.simplefilter("ignore", cl.UnknownModelWarning)
        unknown = conv.estimate({**kwargs, "model": "my-local-llama"})
    assert unknown.max_cost_micros is None and unknown.max_cost_usd is None


def test_a_refused_turn_leaves_no_trace(
    ledger: AnyLedger, uid: str, server: FakeOpenAI, client: openai.OpenAI
) -> None:
    """chat(message) refused before sending (a budget, a window that cannot fit, a bad
    parameter) takes its message back; the next turn does not send two user messages."""
    conv = ledger.conversation(uid, model="gpt-4o-mini", system="sys")
    conv.chat(client, "first")
    before = conv.messages()
    refusals = [
        (cl.BudgetExceededError, {"budget": cl.Budget(tokens=5), "max_tokens": 10}),
        (cl.ContextOverflowError, {"strategy": cl.TokenBudget(5)}),
        (cl.InvalidParameterError, {"temperature": 9}),
    ]
    for error, kwargs in refusals:
        with pytest.raises(error):
            conv.chat(client, "refused " * 20, **kwargs)
        assert conv.messages() == before
        assert conv.info.last_seq == len(before)
    sent_before = len(server.requests)
    conv.chat(client, "second")
    roles = [m["role"] for m in server.requests[sent_before]["messages"]]
    assert roles == ["system", "user", "assistant", "user"]
