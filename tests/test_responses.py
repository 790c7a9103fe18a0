"""The Responses API round trip through the real openai SDK (``client.responses.create``)
against the local server's ``/v1/responses`` (tests/fake_responses.py): input items built from
the window, function calls and their outputs, reasoning replayed in place, usage and cost,
streaming; on every database and both twins."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import openai
import pytest

import chatledger as cl
from chatledger import responses
from fake_responses import ResponseReply, ResponseUsage, responses_of
from openai_server import FakeOpenAI
from twins import AnyLedger

pytestmark = pytest.mark.twins

MODEL = "gpt-5.1"
TOOLS: list[dict[str, Any]] = [
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
            "strict": True,
        },
    }
]
ENCRYPTED: list[Any] = ["reasoning.encrypted_content"]


def price(table: cl.PriceTable, prompt: int, completion: int, cached: int = 0) -> int:
    p = table.price(MODEL)
    assert p is not None and p.cached_input is not None
    usd = (
        Decimal(prompt - cached) * p.input
        + Decimal(cached) * p.cached_input
        + Decimal(completion) * p.output
    ) / Decimal(1_000_000)
    return int((usd * 1_000_000).to_integral_value(rounding="ROUND_HALF_UP"))


def test_function_call_and_reasoning_round_trip(
    ledger: AnyLedger, uid: str, server: FakeOpenAI, client: openai.OpenAI
) -> None:
    script = responses_of(server)
    conv = ledger.conversation(uid, model=MODEL, system="Be brief.")
    conv.append({"role": "user", "content": "Weather in Oslo?"})
    kwargs = conv.responses_request(tools=TOOLS, instructions=True, include=ENCRYPTED, store=False)
    assert kwargs["model"] == MODEL and kwargs["instructions"] == "Be brief."
    assert kwargs["input"] == [{"role": "user", "content": "Weather in Oslo?"}]
    assert kwargs["tools"][0]["name"] == "get_weather" and "function" not in kwargs["tools"][0]
    assert kwargs["tools"][0]["strict"] is True

    script.queue(
        ResponseReply(
            reasoning="The user wants the weather: call the tool.",
            function_calls=[{"name": "get_weather", "arguments": {"city": "Oslo"}}],
            usage=ResponseUsage(input_tokens=120, output_tokens=58, reasoning_tokens=40),
        ),
        ResponseReply(
            text="It is 5 C in Oslo.",
            usage=ResponseUsage(input_tokens=200, output_tokens=9, cached_tokens=128),
        ),
    )
    first = client.responses.create(**kwargs)
    recorded = conv.record(first)
    assert recorded.message is not None
    stored = recorded.message.message
    call = stored["tool_calls"][0]
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Oslo"}'}
    kept = (recorded.message.metadata or {})[responses.METADATA_KEY]
    reasoning = kept["output"][0]
    assert reasoning["type"] == "reasoning" and reasoning["encrypted_content"]
    assert kept["reasoning_tokens"] == 40

    # the caller answers with a Responses item: it is stored as the tool message it stands for
    output = {"type": "function_call_output", "call_id": call["id"], "output": "5 C, cloudy"}
    answered = conv.append(output)
    assert answered.message == {
        "role": "tool",
        "tool_call_id": call["id"],
        "content": "5 C, cloudy",
    }

    kwargs = conv.responses_request(tools=TOOLS, instructions=True, include=ENCRYPTED, store=False)
    sent = kwargs["input"]
    assert [i.get("type", "message") for i in sent] == [
        "message",
        "reasoning",
        "function_call",
        "function_call_output",
    ]
    assert sent[1] == reasoning  # replayed as received, right before its call
    assert sent[2]["call_id"] == call["id"] and sent[2]["id"].startswith("fc_")
    # the window's estimate carries the current turn's reasoning again
    window = conv.window(tools=TOOLS, explain=True)
    assert isinstance(window, cl.Window)
    second = client.responses.create(**kwargs)  # the server refuses a call without its reasoning
    done = conv.record(second)
    assert done.message is not None and done.message.message == {
        "role": "assistant",
        "content": "It is 5 C in Oslo.",
    }
    assert conv.messages()[1:] == [
        {"role": "user", "content": "Weather in Oslo?"},
        stored,
        answered.message,
        {"role": "assistant", "content": "It is 5 C in Oslo."},
    ]
    cl.validate_messages(conv.messages())

    records = sorted(conv.usage_records(), key=lambda r: r.message_seq or 0)
    assert [
        (r.prompt_tokens, r.completion_tokens, r.cached_tokens, r.reasoning_tokens) for r in records
    ] == [(120, 58, 0, 40), (200, 9, 128, 0)]
    assert [r.response_id for r in records] == [first.id, second.id]
    assert [r.finish_reason for r in records] == ["tool_calls", "stop"]
    assert records[0].cost_micros == price(ledger.prices, 120, 58)
    assert records[1].cost_micros == price(ledger.prices, 200, 9, 128)
    assert records[1].metadata is not None and records[1].metadata["api"] == "responses"
    assert records[1].metadata["counted"] >= window.prompt_tokens + 40
    assert conv.usage().cost_micros == records[0].cost_micros + records[1].cost_micros
    assert script.pending == 0


def test_earlier_turns_reasoning_stays_in_place(
    ledger: AnyLedger, uid: str, server: FakeOpenAI, client: openai.OpenAI
) -> None:
    """Reasoning with a text reply is replayed in later turns too, before its message."""
    script = responses_of(server)
    conv = ledger.conversation(uid, model=MODEL)
    conv.append({"role": "user", "content": "Think, then answer."})
    script.queue(ResponseReply(reasoning="thinking", text="Answer."), "Second answer.")
    conv.record(client.responses.create(**conv.responses_request(include=ENCRYPTED)))
    conv.append({"role": "user", "content": "And again?"})
    kwargs = conv.responses_request(include=ENCRYPTED)
    kinds = [i.get("type", i.get("role")) for i in kwargs["input"]]
    assert kinds == ["user", "reasoning", "message", "user"]
    assert kwargs["input"][2]["content"][0]["text"] == "Answer."
    conv.record(client.responses.create(**kwargs))
    assert conv.messages()[-1] == {"role": "assistant", "content": "Second answer."}


def test_record_takes_the_dict_once(
    ledger: AnyLedger, uid: str, server: FakeOpenAI, client: openai.OpenAI
) -> None:
    conv = ledger.conversation(uid, model=MODEL, system="S.")
    conv.append(
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]}
    )
    assert conv.messages()[-1] == {"role": "user", "content": [{"type": "text", "text": "Hi"}]}
    kwargs = conv.responses_request(max_output_tokens=50, prompt_cache_key=None)
    assert "prompt_cache_key" not in kwargs and kwargs["max_output_tokens"] == 50
    assert kwargs["input"][0] == {"role": "system", "content": "S."}  # instructions not asked
    assert kwargs["input"][1]["content"] == [{"type": "input_text", "text": "Hi"}]
    response = client.responses.create(**kwargs).model_dump(mode="json")
    first = conv.record(response)
    again = conv.record(response)
    assert first.message is not None and again.message is not None
    assert again.message.seq == first.message.seq and len(conv.usage_records()) == 1
    assert first.message.metadata is None  # nothing beside the message to keep


def test_parameters_the_conversation_builds_are_refused(ledger: AnyLedger, uid: str) -> None:
    conv = ledger.conversation(uid, model=MODEL)
    conv.append({"role": "user", "content": "x"})
    bad: dict[str, Any]
    for bad in ({"input": []}, {"previous_response_id": "resp_1"}, {"max_output_tokens": 0}):
        with pytest.raises(cl.InvalidParameterError):
            conv.responses_request(**bad)


def test_streaming_records_the_completed_response(
    ledger: AnyLedger, uid: str, server: FakeOpenAI, client: openai.OpenAI
) -> None:
    script = responses_of(server)
    conv = ledger.conversation(uid, model=MODEL)
    conv.append({"role": "user", "content": "Tell me."})
    script.queue(
        ResponseReply(
            reasoning="short",
            text="A streamed answer in pieces.",
            usage=ResponseUsage(input_tokens=30, output_tokens=12, reasoning_tokens=5),
        )
    )
    stream = client.responses.create(**conv.responses_request(stream=True, include=ENCRYPTED))
    seen: list[Any] = []
    with conv.stream_response(stream) as events:
        seen.extend(events)
    kinds = [e.type for e in seen]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds
    assert events.record is not None and events.record.message is not None
    assert events.record.message.message == {
        "role": "assistant",
        "content": "A streamed answer in pieces.",
    }
    assert responses.METADATA_KEY in (events.record.message.metadata or {})
    usage = conv.usage_records()[-1]
    assert (usage.prompt_tokens, usage.completion_tokens, usage.reasoning_tokens) == (30, 12, 5)
    assert usage.cost_micros == price(ledger.prices, 30, 12)


def test_broken_stream_stores_what_arrived(
    ledger: AnyLedger, uid: str, server: FakeOpenAI, client: openai.OpenAI
) -> None:
    script = responses_of(server)
    conv = ledger.conversation(uid, model=MODEL)
    conv.append({"role": "user", "content": "Count."})
    script.queue(
        ResponseReply(
            text="one two three four five six seven eight",
            function_calls=[{"name": "get_weather", "arguments": {"city": "Lisbon"}}],
            break_stream_after=5,
        )
    )
    stream = client.responses.create(**conv.responses_request(tools=TOOLS, stream=True))
    with pytest.raises(openai.APIConnectionError), conv.stream_response(stream) as events:
        list(events)
    last = conv.records()[-1]
    assert last.status == "incomplete" and "tool_calls" not in last.message
    assert "one two three four five six seven eight".startswith(last.message["content"])
    usage = conv.usage_records()[-1]
    assert usage.metadata is not None and usage.metadata["usage"] == "estimated"
    cl.validate_messages(conv.messages())


def test_conversions_are_pure() -> None:
    flat = responses.responses_tools([*TOOLS, {"type": "web_search"}])
    assert flat[0] == {
        "type": "function",
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": TOOLS[0]["function"]["parameters"],
        "strict": True,
    }
    assert flat[1] == {"type": "web_search"}
    assert responses.responses_tools(flat) == flat  # already flat: unchanged
    image = {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}}
    items = responses.input_items(
        [
            {"role": "developer", "content": "D"},
            {"role": "user", "content": [{"type": "text", "text": "see"}, image]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "ok"}]},
        ]
    )
    assert items == [
        {"role": "developer", "content": "D"},
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "see"},
                {"type": "input_image", "image_url": "https://x/y.png", "detail": "low"},
            ],
        },
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "ok"},
    ]
    incomplete = responses.parse_response(
        {
            "object": "response",
            "id": "resp_1",
            "model": MODEL,
            "status": "incomplete",
            "incomplete_details": {"reason": "max_output_tokens"},
            "output": [
                {"type": "message", "id": "m", "content": [{"type": "output_text", "text": "Cut"}]},
                {
                    "type": "function_call",
                    "id": "fc",
                    "call_id": "c",
                    "name": "f",
                    "arguments": "{",
                },
            ],
            "usage": {"input_tokens": 3, "output_tokens": 4},
        }
    )
    assert incomplete.message == {"role": "assistant", "content": "Cut"}
    assert incomplete.status == "length" and incomplete.dropped_tool_calls == 1
    assert incomplete.usage.finish_reason == "length" and incomplete.metadata is None


def test_the_server_refuses_a_call_sent_without_its_reasoning(
    server: FakeOpenAI, client: openai.OpenAI
) -> None:
    """What makes the replay tests meaningful: the local server holds the API's rule."""
    responses_of(server).queue(
        ResponseReply(reasoning="r", function_calls=[{"name": "f", "arguments": {}}])
    )
    first = client.responses.create(model=MODEL, input="go", include=ENCRYPTED)
    reasoning, call = (item.model_dump(mode="json", exclude_none=True) for item in first.output)
    answer = {"type": "function_call_output", "call_id": call["call_id"], "output": "x"}
    user = {"role": "user", "content": "go"}
    with pytest.raises(openai.BadRequestError, match="required 'reasoning' item"):
        client.responses.create(model=MODEL, input=[user, call, answer])  # type: ignore[list-item]
    edited = {**reasoning, "encrypted_content": "tampered"}
    with pytest.raises(openai.BadRequestError, match="required 'reasoning' item"):
        client.responses.create(model=MODEL, input=[edited, call, answer])  # type: ignore[list-item]
    with pytest.raises(openai.BadRequestError, match="required following item"):
        client.responses.create(model=MODEL, input=[reasoning, answer])  # type: ignore[list-item]


@pytest.mark.parametrize("strategy", ["last-rounds", "token-budget"])
def test_a_dropped_round_takes_its_reasoning_with_it(
    ledger: AnyLedger, uid: str, server: FakeOpenAI, client: openai.OpenAI, strategy: str
) -> None:
    """Kept items go where their message goes: the window's strategy drops old rounds with
    their reasoning, and what it keeps is replayed (whether the window read the tail in its
    snapshot, as a token budget does, or after it)."""
    script = responses_of(server)
    conv = ledger.conversation(uid, model=MODEL, system="S.")
    for turn in range(3):
        conv.append({"role": "user", "content": f"question {turn} " + "word " * 40})
        script.queue(ResponseReply(reasoning=f"thought {turn}", text=f"answer {turn}"))
        conv.record(client.responses.create(**conv.responses_request(include=ENCRYPTED)))
    conv.append({"role": "user", "content": "last question"})
    chosen = cl.LastRounds(2) if strategy == "last-rounds" else cl.TokenBudget(120)
    kwargs = conv.responses_request(chosen, instructions=True, include=ENCRYPTED)
    window = conv.window(chosen, explain=True)
    assert isinstance(window, cl.Window) and window.dropped.count > 0
    summaries = [i["summary"][0]["text"] for i in kwargs["input"] if i.get("type") == "reasoning"]
    kept_rounds = (window.kept.count - 1) // 2
    assert kept_rounds >= 1 and summaries == [f"thought {t}" for t in range(3 - kept_rounds, 3)]
    assert kwargs["instructions"] == "S."
    script.queue("done")
    conv.record(client.responses.create(**kwargs))  # the server checks every pairing


def test_budgets_reserve_and_shrink_max_output_tokens(
    ledger: AnyLedger, uid: str, server: FakeOpenAI, client: openai.OpenAI
) -> None:
    conv = ledger.conversation(uid, owner=f"o-{uid}", model=MODEL)
    conv.append({"role": "user", "content": "hi"})
    prompt = conv.count_tokens()
    with pytest.raises(cl.BudgetExceededError):
        conv.responses_request(max_output_tokens=1000, budget=cl.Budget(tokens=prompt + 300))
    shrink = cl.Budget(tokens=prompt + 300, shrink=True)
    kwargs = conv.responses_request(max_output_tokens=1000, budget=shrink)
    assert kwargs["max_output_tokens"] == 300 and "max_tokens" not in kwargs
    with pytest.raises(cl.BudgetExceededError):  # the first request holds its 300
        conv.responses_request(max_output_tokens=1000, budget=shrink)
    responses_of(server).queue(ResponseReply(text="ok", usage=ResponseUsage(output_tokens=1)))
    conv.record(client.responses.create(**kwargs))  # settles the reservation: 1 token spent
    again = conv.responses_request(max_output_tokens=1000, budget=shrink)
    assert again["max_output_tokens"] > 200


def test_replies_with_nothing_to_send_back() -> None:
    cut_while_thinking = responses.parse_response(
        {
            "object": "response",
            "id": "resp_2",
            "status": "incomplete",
            "incomplete_details": {"reason": "max_output_tokens"},
            "output": [{"type": "reasoning", "id": "rs_1", "summary": []}],
            "usage": {"input_tokens": 3, "output_tokens": 64},
        }
    )
    # a reasoning item without its following item would be refused: it is not kept
    assert cut_while_thinking.message == {"role": "assistant", "content": ""}
    assert cut_while_thinking.metadata is None and cut_while_thinking.status == "length"
    failed = responses.parse_response(
        {"object": "response", "id": "resp_3", "status": "failed", "output": []}
    )
    assert failed.message is None and failed.status == "failed" and failed.usage.estimated
    refused = [{"role": "assistant", "refusal": "I can't help with that."}]
    assert responses.input_items(refused) == [
        {"role": "assistant", "content": "I can't help with that."}
    ]
