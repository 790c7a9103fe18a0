"""The Responses API as an openai SDK user meets it: the async client, ``responses.stream()``,
every form ``record`` takes (the Response, its dict, its final event, its events), tool rounds
under truncation, the same history sent to Chat Completions, and requests that are refused;
through the real SDK against the local server (tests/fake_responses.py checks every pairing
the API checks)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
from sqlalchemy import func, select

import chatledger as cl
from chatledger import responses
from chatledger.store.schema import completions, conversations, reservations
from fake_responses import ResponseReply, ResponseUsage, responses_of
from openai_server import FakeOpenAI
from twins import AnyLedger

pytestmark = pytest.mark.twins

MODEL = "gpt-5.1"
ENCRYPTED: list[Any] = ["reasoning.encrypted_content"]
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        },
    }
]


def call(q: str) -> ResponseReply:
    """A reasoning model's tool turn: a reasoning item, then the call."""
    return ResponseReply(
        reasoning=f"look up {q}",
        function_calls=[{"name": "lookup", "arguments": {"q": q}}],
        usage=ResponseUsage(reasoning_tokens=30),
    )


def check_pairs(items: list[Any]) -> None:
    """What the API requires of ``input``, beyond what the server refuses: each output after
    its call, and each replayed call right after the reasoning item that preceded it."""
    calls: set[str] = set()
    for i, item in enumerate(items):
        if item.get("type") == "function_call":
            calls.add(item["call_id"])
            if "id" in item and i and items[i - 1].get("type") == "reasoning":
                assert items[i - 1]["encrypted_content"].startswith("gAAAA")
        elif item.get("type") == "function_call_output":
            assert item["call_id"] in calls


def tool_loop(conv: Any, client: openai.OpenAI, turn: int, **kwargs: Any) -> dict[str, Any]:
    """One user turn of a tool loop through the real SDK: the kwargs of its first request."""
    conv.append({"role": "user", "content": f"question {turn} " + "word " * 30})
    first = conv.responses_request(tools=TOOLS, include=ENCRYPTED, store=False, **kwargs)
    response = client.responses.create(**first)
    conv.record(response)
    for item in response.output:
        if item.type == "function_call":
            output = f"result {turn} " + "data " * 30
            conv.append({"type": "function_call_output", "call_id": item.call_id, "output": output})
    again = conv.responses_request(tools=TOOLS, include=ENCRYPTED, store=False, **kwargs)
    check_pairs(again["input"])
    conv.record(client.responses.create(**again))
    return dict(first)


def test_every_form_of_a_response_records_once(
    ledger: AnyLedger, uid: str, server: FakeOpenAI, client: openai.OpenAI
) -> None:
    """The Response, its dict, its final event (object and dict), the list of its events and
    a generator of them are one reply: one message and one usage row."""
    script = responses_of(server)
    conv = ledger.conversation(uid, model=MODEL)
    conv.append({"role": "user", "content": "Hi"})
    script.queue(
        ResponseReply(
            reasoning="greet",
            text="Hello there.",
            usage=ResponseUsage(input_tokens=50, output_tokens=20, reasoning_tokens=8),
        )
    )
    events = list(client.responses.create(**conv.responses_request(stream=True)))
    final = events[-1]
    assert final.type == "response.completed"
    forms: list[object] = [
        final.response,
        final.response.model_dump(),
        final,
        final.model_dump(mode="json"),
        events,
        (e.model_dump() for e in events),
    ]
    seqs = set()
    for form in forms:
        recorded = conv.record(form)
        assert recorded.message is not None and recorded.message.message == {
            "role": "assistant",
            "content": "Hello there.",
        }
        kept = (recorded.message.metadata or {})[responses.METADATA_KEY]
        assert [e["type"] for e in kept["output"]] == ["reasoning", "message"]
        seqs.add(recorded.message.seq)
        assert (recorded.usage.prompt_tokens, recorded.usage.reasoning_tokens) == (50, 8)
    assert len(seqs) == 1 and len(conv.usage_records()) == 1 and len(conv.messages()) == 2


def test_what_record_refuses_writes_nothing(
    ledger: AnyLedger, uid: str, server: FakeOpenAI, client: openai.OpenAI
) -> None:
    conv = ledger.conversation(uid, model=MODEL)
    conv.append({"role": "user", "content": "Hi"})
    stream = client.responses.create(**conv.responses_request(), stream=True)
    with pytest.raises(cl.InvalidArgumentError, match="stream_response"):
        conv.record(stream)  # a live stream: reading it is I/O, stream_response does that
    stream.close()
    chunks = [{"object": "chat.completion.chunk", "id": "c", "choices": []}]
    with pytest.raises(cl.InvalidArgumentError, match=r"chat.completion.chunk|dict"):
        conv.record(chunks)
    with pytest.raises(cl.InvalidArgumentError):
        conv.record([])
    assert len(conv.messages()) == 1 and conv.usage_records() == []


def test_responses_stream_helper(
    ledger: AnyLedger, uid: str, server: FakeOpenAI, client: openai.OpenAI
) -> None:
    """``client.responses.stream(**kwargs)`` takes the same kwargs; its events (with the
    SDK's snapshots) are recorded by ``stream_response``, and its final response is the same
    reply (recorded once)."""
    script = responses_of(server)
    conv = ledger.conversation(uid, model=MODEL, system="S.")
    conv.append({"role": "user", "content": "Weather?"})
    script.queue(call("Oslo"))
    kwargs = conv.responses_request(tools=TOOLS, instructions=True, include=ENCRYPTED)
    with client.responses.stream(**kwargs) as stream, conv.stream_response(stream) as events:
        kinds = [event.type for event in events]
    assert "response.reasoning_summary_text.delta" in kinds
    assert "response.function_call_arguments.done" in kinds
    assert events.record is not None and events.record.message is not None
    stored = events.record.message
    assert stored.message["tool_calls"][0]["function"]["arguments"] == '{"q": "Oslo"}'
    again = conv.record(stream.get_final_response())
    assert again.message is not None and again.message.seq == stored.seq
    assert len(conv.usage_records()) == 1
    call_id = stored.message["tool_calls"][0]["id"]
    conv.append({"type": "function_call_output", "call_id": call_id, "output": "5 C"})
    script.queue("It is 5 C.")
    kwargs = conv.responses_request(tools=TOOLS, instructions=True, include=ENCRYPTED)
    with client.responses.stream(**kwargs) as stream, conv.stream_response(stream) as events:
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "It is 5 C." and conv.messages()[-1]["content"] == text


def test_a_broken_stream_sends_back_no_half_item(
    ledger: AnyLedger, uid: str, server: FakeOpenAI, client: openai.OpenAI
) -> None:
    """A reasoning item whose ``output_item.done`` never came (no encrypted content) is not
    kept; one that came is not replayed before the unfinished message that followed it (that
    message goes back without its id); the next request is one the server accepts."""
    script = responses_of(server)
    conv = ledger.conversation(uid, model=MODEL)
    for turn, cut in enumerate((6, 11)):  # inside the reasoning item; inside the message
        conv.append({"role": "user", "content": f"Think hard {turn}."})
        script.queue(ResponseReply(reasoning="deep", text="Partial answer", break_stream_after=cut))
        stream = client.responses.create(**conv.responses_request(include=ENCRYPTED, stream=True))
        with pytest.raises(openai.APIConnectionError), conv.stream_response(stream) as events:
            list(events)
        assert conv.records()[-1].status == "incomplete"
    first, second = conv.records()[1], conv.records()[3]
    assert first.metadata is None and first.message == {"role": "assistant", "content": ""}
    assert "Partial answer".startswith(second.message["content"]) and second.message["content"]
    conv.append({"role": "user", "content": "Go on."})
    kwargs = conv.responses_request(include=ENCRYPTED)
    assert [i.get("type", i.get("role")) for i in kwargs["input"]] == [
        "user",
        "user",
        "assistant",
        "user",
    ]
    conv.record(client.responses.create(**kwargs))


@pytest.mark.parametrize(
    "strategy",
    [
        cl.LastRounds(2),
        cl.TokenBudget(400),
        [cl.ClearToolResults(keep=1, step=1), cl.TokenBudget(400)],
        cl.StablePrefix(cl.TokenBudget(500)),
    ],
    ids=["last-rounds", "token-budget", "clear-tool-results", "stable-prefix"],
)
@pytest.mark.parametrize("backend", ["sqlite"])  # planning: the same on every database
def test_truncation_keeps_calls_outputs_and_reasoning_together(
    ledger: AnyLedger, uid: str, server: FakeOpenAI, client: openai.OpenAI, strategy: Any
) -> None:
    """Tool rounds of a reasoning model under each strategy: whatever is dropped, every call
    that goes out has its output after it and its reasoning item right before it (the server
    refuses anything else), and the reasoning of dropped rounds is gone with them."""
    script = responses_of(server)
    conv = ledger.conversation(uid, model=MODEL, system="S.")
    for turn in range(4):
        script.queue(call(f"q{turn}"), ResponseReply(reasoning=f"sum {turn}", text=f"A{turn}."))
        tool_loop(conv, client, turn, strategy=strategy)
    conv.append({"role": "user", "content": "last"})
    kwargs = conv.responses_request(strategy, tools=TOOLS, include=ENCRYPTED, store=False)
    window = conv.window(strategy, tools=TOOLS, explain=True)
    assert isinstance(window, cl.Window) and window.dropped.count > 0
    items = kwargs["input"]
    check_pairs(items)
    summaries = [i["summary"][0]["text"] for i in items if i.get("type") == "reasoning"]
    kept_turns = sorted({int(s.split()[-1].lstrip("q")) for s in summaries})
    assert kept_turns and kept_turns[-1] == 3 and 0 not in kept_turns
    for turn in kept_turns:  # a kept round keeps both of its reasoning items
        assert summaries.count(f"look up q{turn}") == summaries.count(f"sum {turn}") == 1
    script.queue("done")
    conv.record(client.responses.create(**kwargs))  # the server checks every pairing


def test_the_history_goes_to_chat_completions_too(
    ledger: AnyLedger, uid: str, server: FakeOpenAI, client: openai.OpenAI
) -> None:
    """A conversation recorded from the Responses API is a Chat Completions history: its
    windows carry the tool calls and results and no reasoning, the chat endpoint accepts them,
    and a chat completion recorded in between replays as plain items afterwards."""
    script = responses_of(server)
    conv = ledger.conversation(uid, model=MODEL, system="S.")
    script.queue(call("Oslo"), ResponseReply(reasoning="done", text="5 C in Oslo."))
    tool_loop(conv, client, 0)
    chat = conv.request(tools=TOOLS)
    assert [m["role"] for m in chat["messages"]] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
    ]
    assert "reasoning" not in str(chat["messages"]) and "encrypted" not in str(chat)
    server.queue("Chat says hi.")
    conv.record(client.chat.completions.create(**chat))
    conv.append({"role": "user", "content": "And now?"})
    kwargs = conv.responses_request(tools=TOOLS, include=ENCRYPTED, store=False)
    kinds = [i.get("type", i.get("role")) for i in kwargs["input"]]
    assert kinds == [
        "system",
        "user",
        "reasoning",
        "function_call",
        "function_call_output",
        "reasoning",
        "message",
        "assistant",
        "user",
    ]
    script.queue("ok")
    conv.record(client.responses.create(**kwargs))
    cl.validate_messages(conv.messages())


def test_a_refused_request_writes_nothing(
    ledger: AnyLedger, uid: str, server: FakeOpenAI, client: openai.OpenAI
) -> None:
    """Refused by a budget, or for a parameter: no reservation, no usage, no remembered
    window start, no message."""
    owner = f"o-{uid}"
    conv = ledger.conversation(uid, owner=owner, model=MODEL, system="S.")
    for turn in range(3):
        conv.append({"role": "user", "content": f"q{turn} " + "word " * 60})
        conv.record(client.responses.create(**conv.responses_request()))
    before = conv.messages()
    held = cl.StablePrefix(cl.TokenBudget(300))

    def state() -> tuple[Any, ...]:
        with ledger.engine.connect() as c:
            row = c.execute(
                select(conversations.c.window_start, conversations.c.pk).where(
                    conversations.c.id == uid, conversations.c.owner == owner
                )
            ).one()
            count = func.count()
            return (
                row.window_start,
                c.execute(select(count).where(reservations.c.owner == owner)).scalar(),
                c.execute(select(count).where(completions.c.conversation_pk == row.pk)).scalar(),
            )

    start = state()
    assert start[1:] == (0, 3)
    with pytest.raises(cl.BudgetExceededError):
        conv.responses_request(held, max_output_tokens=50, budget=cl.Budget(tokens=100))
    with pytest.raises(cl.InvalidParameterError):
        conv.responses_request(held, previous_response_id="resp_1")
    assert state() == start and conv.messages() == before
    conv.responses_request(held, max_output_tokens=50, budget=cl.Budget(tokens=10_000))
    moved = state()
    assert moved[0] is not None and moved[0] != start[0] and moved[1] == 1  # it was possible


def test_parallel_calls_and_interleaved_reasoning_replay_in_order() -> None:
    """A response's output order comes back exactly; a reasoning item whose following item
    no longer goes out (merged into the one message, edited away) is left out, since the API
    refuses it alone."""
    output: list[dict[str, Any]] = [
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "e1"},
        {"type": "message", "id": "msg_1", "content": [{"type": "output_text", "text": "A "}]},
        {"type": "reasoning", "id": "rs_2", "summary": [], "encrypted_content": "e2"},
        {"type": "message", "id": "msg_2", "content": [{"type": "output_text", "text": "B"}]},
        {"type": "reasoning", "id": "rs_3", "summary": [], "encrypted_content": "e3"},
        {"type": "function_call", "id": "fc_1", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call", "id": "fc_2", "call_id": "c2", "name": "g", "arguments": "{}"},
        {"type": "reasoning", "id": "rs_4", "summary": [], "encrypted_content": "e4"},
        {"type": "function_call", "id": "fc_3", "call_id": "c3", "name": "h", "arguments": "{}"},
    ]
    reply = responses.parse_response(
        {"object": "response", "id": "resp_x", "status": "completed", "output": output}
    )
    assert reply.message is not None and reply.metadata is not None
    message, kept = reply.message, reply.metadata[responses.METADATA_KEY]
    assert message["content"] == "A B" and len(message["tool_calls"]) == 3
    ids = [i.get("id") for i in responses.input_items([message], {0: kept})]
    assert ids == ["rs_1", "msg_1", "rs_3", "fc_1", "fc_2", "rs_4", "fc_3"]
    edited = {**message, "tool_calls": message["tool_calls"][:2]}  # call c3 edited away
    ids = [i.get("id") for i in responses.input_items([edited], {0: kept})]
    assert ids == ["rs_1", "msg_1", "rs_3", "fc_1", "fc_2"]


def test_usage_with_cache_writes_and_details() -> None:
    reply = responses.parse_response(
        {
            "object": "response",
            "id": "resp_u",
            "status": "completed",
            "model": MODEL,
            "output": [],
            "usage": {
                "input_tokens": 2000,
                "input_tokens_details": {"cached_tokens": 1024, "cache_write_tokens": 512},
                "output_tokens": 300,
                "output_tokens_details": {"reasoning_tokens": 256},
                "total_tokens": 2300,
            },
        }
    )
    u = reply.usage
    assert (u.prompt_tokens, u.cached_tokens, u.cache_write_tokens) == (2000, 1024, 512)
    assert (u.completion_tokens, u.reasoning_tokens, u.estimated) == (300, 256, False)


def test_input_items_appended_as_messages(ledger: AnyLedger, uid: str) -> None:
    """Responses input items a caller appends (typed or not) are stored as the Chat
    Completions messages they stand for, and go out again as the same items."""
    conv = ledger.conversation(uid, model=MODEL)
    image = {"type": "input_image", "image_url": "https://x/y.png", "detail": "low"}
    conv.append({"role": "user", "content": [{"type": "input_text", "text": "see"}, image]})
    stored = conv.messages()[-1]
    assert stored == {
        "role": "user",
        "content": [
            {"type": "text", "text": "see"},
            {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}},
        ],
    }
    sent = conv.responses_request()["input"][-1]
    assert sent == {"role": "user", "content": [{"type": "input_text", "text": "see"}, image]}


# --- the async client ---------------------------------------------------------------------


@pytest.fixture
def aclient(server: FakeOpenAI) -> Iterator[openai.AsyncOpenAI]:
    yield openai.AsyncOpenAI(base_url=server.url, api_key="test", max_retries=0)


def _call_ids(response: Any) -> list[str]:
    return [item.call_id for item in response.output if item.type == "function_call"]


@pytest.mark.async_only
async def test_async_client_tool_loop_and_streams(
    aledger: cl.AsyncLedger, uid: str, server: FakeOpenAI, aclient: openai.AsyncOpenAI
) -> None:
    """``await aclient.responses.create(**kwargs)``, ``stream=True`` (an ``AsyncStream``) and
    ``aclient.responses.stream(**kwargs)`` with the async twin."""
    script = responses_of(server)
    conv = await aledger.conversation(uid, model=MODEL, system="S.")
    await conv.append({"role": "user", "content": "Weather in Oslo?"})
    script.queue(
        call("Oslo"),
        ResponseReply(reasoning="answer", text="5 C.", usage=ResponseUsage(cached_tokens=16)),
    )
    kwargs = await conv.responses_request(tools=TOOLS, include=ENCRYPTED, store=False)
    first = await aclient.responses.create(**kwargs)
    await conv.record(first)
    for call_id in _call_ids(first):
        await conv.append({"type": "function_call_output", "call_id": call_id, "output": "5"})
    kwargs = await conv.responses_request(tools=TOOLS, include=ENCRYPTED, store=False)
    check_pairs(kwargs["input"])
    stream = await aclient.responses.create(**kwargs, stream=True)
    async with conv.stream_response(stream) as events:
        kinds = [event.type async for event in events]
    assert kinds[-1] == "response.completed"
    assert events.record is not None and events.record.message is not None
    assert events.record.message.message == {"role": "assistant", "content": "5 C."}
    assert events.record.usage.cached_tokens == 16

    await conv.append({"role": "user", "content": "Thanks."})
    kwargs = await conv.responses_request(include=ENCRYPTED, store=False)
    assert [i.get("type", i.get("role")) for i in kwargs["input"]][-3:] == [
        "reasoning",
        "message",
        "user",
    ]
    async with aclient.responses.stream(**kwargs) as managed:
        async with conv.stream_response(managed) as events:
            async for _ in events:
                pass
        final = await managed.get_final_response()
    assert events.record is not None and events.record.message is not None
    assert events.record.message.message["content"] == "echo: Thanks."
    again = await conv.record(final)
    assert again.message is not None and again.message.seq == events.record.message.seq
    records = await conv.usage_records()
    assert len(records) == 3 and all(
        r.metadata and r.metadata["api"] == "responses" for r in records
    )
    with pytest.raises(cl.InvalidArgumentError, match="stream_response"):
        await conv.record(await aclient.responses.create(**kwargs, stream=True))
    await aclient.close()
