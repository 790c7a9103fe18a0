"""ChatledgerSession: the OpenAI Agents SDK's session memory in chatledger, driven by the real
``agents.Runner`` against the local fake OpenAI server, on every backend."""

from __future__ import annotations

import asyncio
import copy
import re
import threading
import traceback
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("agents")

from agents import (
    Agent,
    OpenAIChatCompletionsModel,
    RunConfig,
    Runner,
    SQLiteSession,
    function_tool,
)
from agents.memory import Session, SessionSettings
from openai import AsyncOpenAI
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.pool import NullPool

import chatledger as cl
from chatledger.integrations.agents import (
    UNANSWERED,
    ChatledgerSession,
    items_to_messages,
    messages_to_items,
)
from chatledger.messages import to_api_dict
from chatledger.store.engine import resolve_url
from chatledger.strategies import Strategy
from openai_server import FakeOpenAI, Reply

NO_TRACING = RunConfig(tracing_disabled=True)


@function_tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    return f"sunny in {city}"


@asynccontextmanager
async def agent_on(server: FakeOpenAI) -> AsyncIterator[Agent[Any]]:
    async with AsyncOpenAI(base_url=server.url, api_key="test", max_retries=0) as client:
        model = OpenAIChatCompletionsModel(model="gpt-4o", openai_client=client)
        yield Agent(name="assistant", instructions="Be brief.", model=model, tools=[get_weather])


def script(server: FakeOpenAI) -> None:
    server.queue(
        Reply(
            content="Let me check.",
            tool_calls=[{"id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}}],
        ),
        Reply(content="It is sunny in Paris."),
        Reply(content="You asked about Paris."),
    )


async def two_turns(session: Any) -> FakeOpenAI:
    with FakeOpenAI() as server:
        script(server)
        async with agent_on(server) as agent:
            first = await Runner.run(
                agent, "Weather in Paris?", session=session, run_config=NO_TRACING
            )
            assert first.final_output == "It is sunny in Paris."
            second = await Runner.run(
                agent, "What did I ask?", session=session, run_config=NO_TRACING
            )
            assert second.final_output == "You asked about Paris."
        assert server.pending == 0
    return server


TOOL_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}
FIRST_TURN = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "Let me check.", "tool_calls": [TOOL_CALL]},
    {"role": "tool", "tool_call_id": "call_1", "content": "sunny in Paris"},
    {"role": "assistant", "content": "It is sunny in Paris."},
]


def test_implements_the_session_protocol(db_url: str) -> None:
    session = ChatledgerSession(cl.AsyncLedger(db_url), "s")
    assert isinstance(session, Session)
    assert session.session_id == "s"
    with pytest.raises(TypeError, match="AsyncLedger"):
        ChatledgerSession(cl.Ledger(db_url), "s")  # type: ignore[arg-type]


async def test_runner_two_turns_with_a_tool(aledger: cl.AsyncLedger, uid: str) -> None:
    session = ChatledgerSession(aledger, uid, owner="u1")
    server = await two_turns(session)

    # the second turn's request carried the whole first turn, tool call and result included
    assert len(server.requests) == 3
    assert server.requests[2]["messages"] == [
        {"role": "system", "content": "Be brief."},
        *FIRST_TURN,
        {"role": "user", "content": "What did I ask?"},
    ]
    # chatledger stored exactly those messages: valid, counted, ready for conv.window
    conv = await aledger.get(uid, owner="u1")
    stored = await conv.messages()
    assert stored == [
        *FIRST_TURN,
        {"role": "user", "content": "What did I ask?"},
        {"role": "assistant", "content": "You asked about Paris."},
    ]
    cl.validate_messages(stored)
    assert await conv.count_tokens() == cl.count_tokens(stored, model="gpt-4o")

    # get_items gives back what the SDK's own SQLiteSession keeps for the same run
    reference = SQLiteSession(uid)
    await two_turns(reference)
    expected = await reference.get_items()
    reference.close()
    items = await session.get_items()
    assert items == expected
    assert [i.get("type") for i in items] == [
        None,
        "message",
        "function_call",
        "function_call_output",
        "message",
        None,
        "message",
    ]
    for n in range(len(items) + 2):
        assert await session.get_items(limit=n) == (items[-n:] if n else [])


# Every kind of item the SDK may store, in batches as the SDK saves them.
USER_PARTS = {
    "role": "user",
    "content": [
        {"type": "input_text", "text": "Look:"},
        {"type": "input_image", "image_url": "https://example.com/a.png", "detail": "original"},
        {"type": "input_image", "file_id": "file-123", "detail": "auto"},
        {
            "type": "input_file",
            "file_data": "data:application/pdf;base64,JVBERi0=",
            "filename": "a.pdf",
        },
    ],
}
REASONING = {
    "type": "reasoning",
    "id": "rs_1",
    "summary": [{"type": "summary_text", "text": "Hmm"}],
}
OUT_MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "status": "completed",
    "content": [{"type": "output_text", "text": "Two calls.", "annotations": [], "logprobs": []}],
}
CALL_A = {
    "type": "function_call",
    "call_id": "a",
    "name": "get_weather",
    "arguments": '{"city": "Oslo"}',
}
CALL_B = {"type": "function_call", "call_id": "b", "name": "get_weather", "arguments": "{'bad json"}
CUSTOM = {"type": "custom_tool_call", "call_id": "c", "name": "grep", "input": "needle"}
OUT_A = {"type": "function_call_output", "call_id": "a", "output": "4C"}
OUT_B = {
    "type": "function_call_output",
    "call_id": "b",
    "output": [
        {"type": "input_text", "text": "bad"},
        {"type": "input_image", "image_url": "https://x/y.png"},
    ],
}
OUT_C = {"type": "custom_tool_call_output", "call_id": "c", "output": "found"}
STRAY_OUT = {"type": "function_call_output", "call_id": "zzz", "output": "no call"}
WEB = {
    "type": "web_search_call",
    "id": "ws_1",
    "status": "completed",
    "action": {"type": "search", "query": "q"},
}
REFUSAL = {
    "id": "msg_2",
    "type": "message",
    "role": "assistant",
    "status": "completed",
    "content": [{"type": "refusal", "refusal": "I can't."}],
}
LATE_TEXT = {"role": "assistant", "content": "Calling now."}
CALL_D = {"type": "function_call", "call_id": "d", "name": "get_weather", "arguments": ""}
OUT_D = {"type": "function_call_output", "call_id": "d", "output": []}

BATCHES: list[list[dict[str, Any]]] = [
    [{"role": "system", "content": "Session rules."}, USER_PARTS],
    [REASONING, OUT_MESSAGE, CALL_A, CALL_B, CUSTOM],
    [OUT_A, OUT_B, OUT_C, STRAY_OUT],
    [WEB],
    [{"role": "developer", "content": [{"type": "input_text", "text": "Be safe."}]}, REFUSAL],
    [{"role": "user", "content": "Again"}, CALL_D, LATE_TEXT],  # calls listed before the text
    [OUT_D, REASONING],
]

STORED = [
    {"role": "system", "content": "Session rules."},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "Look:"},
            {
                "type": "image_url",
                "image_url": {"url": "https://example.com/a.png", "detail": "high"},
            },
            {"type": "text", "text": "[input_image omitted]"},
            {
                "type": "file",
                "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"},
            },
        ],
    },
    {
        "role": "assistant",
        "content": "Two calls.",
        "tool_calls": [
            {
                "id": "a",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
            },
            {
                "id": "b",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '"{\'bad json"'},
            },
            {"id": "c", "type": "custom", "custom": {"name": "grep", "input": "needle"}},
        ],
    },
    {"role": "tool", "tool_call_id": "a", "content": "4C"},
    {"role": "tool", "tool_call_id": "b", "content": [{"type": "text", "text": "bad"}]},
    {"role": "tool", "tool_call_id": "c", "content": "found"},
    {"role": "assistant", "content": ""},  # carries only the web search call
    {"role": "developer", "content": [{"type": "text", "text": "Be safe."}]},
    {"role": "assistant", "refusal": "I can't."},
    {"role": "user", "content": "Again"},
    {
        "role": "assistant",
        "content": "Calling now.",
        "tool_calls": [
            {"id": "d", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
        ],
    },
    {"role": "tool", "tool_call_id": "d", "content": "[tool output omitted]"},
]


async def test_every_item_kind_round_trips_exactly(aledger: cl.AsyncLedger, uid: str) -> None:
    session = ChatledgerSession(aledger, uid)
    for batch in BATCHES:
        await session.add_items(copy.deepcopy(batch))  # type: ignore[arg-type]
    everything = [item for batch in BATCHES for item in batch]

    conv = await session.conversation()
    stored = await conv.messages()
    assert stored == STORED
    cl.validate_messages(stored)
    # which items each message keeps: orphans ride on the next message, or the batch's last
    kept = [r.metadata["openai_agents"]["items"] for r in await conv.records()]  # type: ignore[index]
    assert kept[2] == [REASONING, OUT_MESSAGE, CALL_A, CALL_B, CUSTOM]
    assert kept[5] == [OUT_C, STRAY_OUT]
    assert kept[6] == [WEB]
    assert kept[-1] == [OUT_D, REASONING]

    assert await session.get_items() == everything
    fresh = ChatledgerSession(aledger, uid)
    for n in range(len(everything) + 2):
        assert await fresh.get_items(n) == (everything[-n:] if n else [])


async def test_unanswered_calls_are_closed_before_a_new_turn(
    aledger: cl.AsyncLedger, uid: str
) -> None:
    session = ChatledgerSession(aledger, uid)
    first = [{"role": "user", "content": "Weather?"}, CALL_A, CALL_D]
    await session.add_items(first)  # type: ignore[arg-type]
    # the run failed inside the tool; the next turn starts anyway
    second = [{"role": "user", "content": "Never mind."}]
    await ChatledgerSession(aledger, uid).add_items(second)  # type: ignore[arg-type]

    conv = await session.conversation()
    stored = await conv.messages()
    assert [m["role"] for m in stored] == ["user", "assistant", "tool", "tool", "user"]
    assert [(m["tool_call_id"], m["content"]) for m in stored[2:4]] == [
        ("a", UNANSWERED),
        ("d", UNANSWERED),
    ]
    cl.validate_messages(stored)
    assert await session.get_items() == [*first, *second]
    assert await session.get_items(1) == second
    assert await session.get_items(2) == [CALL_D, *second]  # reads past the closing results


def test_items_to_messages_answers_pending_calls_of_the_conversation() -> None:
    out = items_to_messages([OUT_A, {"role": "user", "content": "next"}], ["a", "x"])
    assert [m for m, _ in out] == [
        {"role": "tool", "tool_call_id": "a", "content": "4C"},
        {"role": "tool", "tool_call_id": "x", "content": UNANSWERED},
        {"role": "user", "content": "next"},
    ]
    assert [meta["openai_agents"]["items"] for _, meta in out] == [
        [OUT_A],
        [],
        [{"role": "user", "content": "next"}],
    ]


async def test_messages_written_without_the_session(aledger: cl.AsyncLedger, uid: str) -> None:
    conv = await aledger.conversation(uid, system="Stored rules.")
    await conv.extend(
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "https://x/cat.png", "detail": "low"},
                    },
                ],
            },
            {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny in Paris"},
            {"role": "assistant", "content": "A cat, in the sun."},
        ]
    )
    session = ChatledgerSession(aledger, uid)
    assert await session.get_items() == [
        {"role": "system", "content": "Stored rules."},
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "What is this?"},
                {"type": "input_image", "image_url": "https://x/cat.png", "detail": "low"},
            ],
        },
        {
            "type": "function_call",
            "call_id": "call_1",
            "name": "get_weather",
            "arguments": '{"city": "Paris"}',
        },
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny in Paris"},
        {"role": "assistant", "content": "A cat, in the sun."},
    ]

    # the SDK takes them as history: its request carries the stored messages unchanged
    with FakeOpenAI() as server:
        server.queue(Reply(content="Still a cat."))
        async with agent_on(server) as agent:
            await Runner.run(agent, "And now?", session=session, run_config=NO_TRACING)
    stored = await conv.messages()
    # (the SDK sends "content": None with tool calls; chatledger drops None, as the API does)
    assert [to_api_dict(m) for m in server.requests[0]["messages"]] == [
        {"role": "system", "content": "Be brief."},
        *stored[:-1],
    ]
    assert stored[-2:] == [
        {"role": "user", "content": "And now?"},
        {"role": "assistant", "content": "Still a cat."},
    ]


def test_messages_to_items_custom_calls() -> None:
    call = {"id": "c", "type": "custom", "custom": {"name": "grep", "input": "x"}}
    assert messages_to_items(
        [
            ({"role": "assistant", "tool_calls": [call]}, None),
            ({"role": "tool", "tool_call_id": "c", "content": "y"}, {"other": "app data"}),
        ]
    ) == [
        {"type": "custom_tool_call", "call_id": "c", "name": "grep", "input": "x"},
        {"type": "custom_tool_call_output", "call_id": "c", "output": "y"},
    ]


def rounds(n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(n):
        out += [
            {"role": "user", "content": f"question {i} " + "word " * 40},
            {
                "type": "function_call",
                "call_id": f"k{i}",
                "name": "look",
                "arguments": f'{{"i": {i}}}',
            },
            {"type": "function_call_output", "call_id": f"k{i}", "output": "result " * 30},
            {"role": "assistant", "content": f"answer {i} " + "word " * 40},
        ]
    return out


async def test_strategy_window_is_what_the_agent_sees(aledger: cl.AsyncLedger, uid: str) -> None:
    strategy = cl.TokenBudget(500)
    session = ChatledgerSession(aledger, uid, strategy=strategy)
    history = rounds(10)
    await session.add_items(history)  # type: ignore[arg-type]
    conv = await session.conversation()
    window = await conv.window(strategy)
    assert cl.count_tokens(window, model="gpt-4o") <= 500

    items = await session.get_items()
    # 4 messages a round (user, assistant call, tool, assistant answer), 4 items too
    assert len(window) % 4 == 0 and 0 < len(window) < 40
    assert items == history[-len(window) :]
    # an explicit limit still reads the newest items, strategy or not
    assert await session.get_items(limit=3) == history[-3:]
    assert await ChatledgerSession(aledger, uid).get_items() == history

    with FakeOpenAI() as server:
        server.queue(Reply(content="ok"))
        async with agent_on(server) as agent:
            await Runner.run(agent, "next", session=session, run_config=NO_TRACING)
    sent = [to_api_dict(m) for m in server.requests[0]["messages"]]
    assert sent == [
        {"role": "system", "content": "Be brief."},
        *window,
        {"role": "user", "content": "next"},
    ]


async def test_summary_window(aledger: cl.AsyncLedger, uid: str) -> None:
    async def summarizer(previous: str | None, messages: list[dict[str, Any]]) -> str:
        return "Ten questions were asked."

    strategy: list[Strategy] = [
        cl.Summarize(summarizer, trigger=600, keep=300),
        cl.TokenBudget(800),
    ]
    session = ChatledgerSession(aledger, uid, strategy=strategy)
    await session.add_items(rounds(10))  # type: ignore[arg-type]
    items = await session.get_items()
    assert items[0]["role"] == "system"  # type: ignore[typeddict-item]
    assert "Ten questions were asked." in items[0]["content"]  # type: ignore[typeddict-item]
    assert items[-4:] == rounds(10)[-4:]


async def test_session_settings_limit(aledger: cl.AsyncLedger, uid: str) -> None:
    session = ChatledgerSession(aledger, uid, session_settings=SessionSettings(limit=2))
    await session.add_items(rounds(2))  # type: ignore[arg-type]
    assert await session.get_items() == rounds(2)[-2:]
    assert await session.get_items(limit=5) == rounds(2)[-5:]


async def test_pop_and_clear(aledger: cl.AsyncLedger, uid: str) -> None:
    await aledger.create(uid, owner="u1", model="gpt-4", title="Trip", metadata={"k": 1})
    session = ChatledgerSession(aledger, uid, owner="u1")
    assert await session.pop_item() is None
    await session.add_items(rounds(1))  # type: ignore[arg-type]
    assert await session.pop_item() == rounds(1)[-1]
    assert await session.get_items() == rounds(1)[:-1]

    conv = await aledger.get(uid, owner="u1")
    await conv.record(
        {
            "id": f"{uid}-1",
            "model": "gpt-4",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 2},
        }
    )
    other = ChatledgerSession(aledger, uid, owner="u1")
    await other.get_items()  # holds the conversation before it is cleared
    await session.clear_session()
    assert await session.get_items() == []
    assert await session.pop_item() is None
    info = (await aledger.get(uid, owner="u1")).info
    # the same conversation, emptied: identity, metadata and usage kept
    assert (info.model, info.title, info.metadata, info.message_count, info.created_at) == (
        "gpt-4",
        "Trip",
        {"k": 1},
        0,
        conv.info.created_at,
    )
    assert (await conv.usage()).requests == 1
    await other.add_items([{"role": "user", "content": "after"}])
    assert await session.get_items() == [{"role": "user", "content": "after"}]
    await ChatledgerSession(aledger, f"{uid}-new").clear_session()  # not there yet: created
    assert (await aledger.get(f"{uid}-new")).info.message_count == 0


async def test_pop_item_takes_every_item_back_in_order(aledger: cl.AsyncLedger, uid: str) -> None:
    """Every kind of item, popped one at a time: each pop returns the newest item as
    get_items shows it, and leaves a valid stored history; adding the popped items back (as
    the SDK's rewind does after a mismatch) restores the items."""
    session = ChatledgerSession(aledger, uid)
    for batch in BATCHES:
        await session.add_items(copy.deepcopy(batch))  # type: ignore[arg-type]
    everything = [item for batch in BATCHES for item in batch]
    conv = await session.conversation()
    for k in range(1, len(everything) + 1):
        assert await session.pop_item() == everything[-k]
        assert await session.get_items() == everything[:-k]
        stored = await conv.messages()
        if stored:  # any prefix of a valid history is one, open calls allowed
            cl.validate_messages(stored, allow_pending_tool_calls=True)
        assert (await conv.refresh()).message_count == len(stored)
    assert await session.pop_item() is None
    assert await conv.messages() == []

    for batch in BATCHES:
        await session.add_items(copy.deepcopy(batch))  # type: ignore[arg-type]
    popped = [await session.pop_item() for _ in range(9)]
    await session.add_items(list(reversed(popped)))  # type: ignore[arg-type]
    assert await session.get_items() == everything
    cl.validate_messages(await conv.messages())


async def test_pop_item_rewrites_a_message_of_several_items(
    aledger: cl.AsyncLedger, uid: str
) -> None:
    session = ChatledgerSession(aledger, uid)
    question = {"role": "user", "content": "Weather?"}
    await session.add_items([question, REASONING, OUT_MESSAGE, CALL_A, CALL_B])  # type: ignore[list-item]
    conv = await session.conversation()
    whole = await conv.messages()
    assert len(whole) == 2  # the reply's text and both calls are one message

    assert await session.pop_item() == CALL_B
    assert await conv.messages() == [
        question,
        {"role": "assistant", "content": "Two calls.", "tool_calls": [whole[1]["tool_calls"][0]]},
    ]
    assert (await conv.refresh()).pending_tool_calls == ("a",)
    kept = (await conv.records())[-1].metadata
    assert kept == {"openai_agents": {"items": [REASONING, OUT_MESSAGE, CALL_A]}}

    # the popped call added back joins its message again: the same stored history
    await session.add_items([CALL_B])  # type: ignore[list-item]
    assert await conv.messages() == whole
    assert await session.get_items() == [question, REASONING, OUT_MESSAGE, CALL_A, CALL_B]

    # popping a tool output re-opens its call
    await session.add_items([OUT_A, OUT_B])  # type: ignore[list-item]
    assert await session.pop_item() == OUT_B
    assert (await conv.refresh()).pending_tool_calls == ("b",)
    # the reply's items go one by one; its message goes with the last
    assert [await session.pop_item() for _ in range(4)] == [OUT_A, CALL_B, CALL_A, OUT_MESSAGE]
    assert await conv.messages() == [question, {"role": "assistant", "content": ""}]
    assert await session.pop_item() == REASONING
    assert await conv.messages() == [question]


async def test_calls_sent_again_do_not_join(aledger: cl.AsyncLedger, uid: str) -> None:
    session = ChatledgerSession(aledger, uid)
    question = {"role": "user", "content": "Weather?"}
    await session.add_items([question, CALL_A])  # type: ignore[list-item]
    await session.add_items([CALL_A, OUT_A])  # type: ignore[list-item]
    stored = await (await session.conversation()).messages()
    cl.validate_messages(stored)
    assert [m["role"] for m in stored] == ["user", "assistant", "tool", "assistant", "tool"]
    assert stored[2]["content"] == UNANSWERED
    assert await session.get_items() == [question, CALL_A, CALL_A, OUT_A]


async def test_pop_item_past_closed_calls(aledger: cl.AsyncLedger, uid: str) -> None:
    """Calls a new turn closed as unanswered: their closers hold no item; popping the call
    removes them with it."""
    session = ChatledgerSession(aledger, uid)
    await session.add_items([{"role": "user", "content": "Weather?"}, CALL_A])  # type: ignore[list-item]
    await session.add_items([{"role": "user", "content": "Never mind."}])  # type: ignore[list-item]
    conv = await session.conversation()
    assert len(await conv.messages()) == 4  # the closer of call a included
    assert await session.pop_item() == {"role": "user", "content": "Never mind."}
    assert await session.pop_item() == CALL_A
    assert await conv.messages() == [{"role": "user", "content": "Weather?"}]
    assert (await conv.refresh()).pending_tool_calls == ()


async def test_pop_item_of_messages_written_elsewhere(aledger: cl.AsyncLedger, uid: str) -> None:
    conv = await aledger.conversation(uid, system="Rules.")
    await conv.extend(FIRST_TURN)
    session = ChatledgerSession(aledger, uid)
    items = await session.get_items()
    assert [await session.pop_item() for _ in range(3)] == items[:-4:-1]
    # the assistant message held its text and its call: now only the text
    assert await conv.messages() == [
        {"role": "system", "content": "Rules."},
        FIRST_TURN[0],
        {"role": "assistant", "content": "Let me check."},
    ]
    assert await session.get_items() == items[:-3]


async def test_strategy_while_calls_are_open(aledger: cl.AsyncLedger, uid: str) -> None:
    session = ChatledgerSession(aledger, uid, strategy=cl.TokenBudget(500))
    conv = await aledger.conversation(uid, system="Stored rules.")
    await session.add_items(rounds(10))  # type: ignore[arg-type]
    interrupted = [{"role": "user", "content": "Weather?"}, CALL_A]
    await session.add_items(interrupted)  # type: ignore[arg-type]
    assert (await conv.refresh()).pending_tool_calls == ("a",)
    # no window can be built: the prefix and the open round
    assert await session.get_items() == [
        {"role": "system", "content": "Stored rules."},
        *interrupted,
    ]
    await session.add_items([OUT_A])  # type: ignore[list-item]
    items = await session.get_items()
    assert items[-3:] == [*interrupted, OUT_A]
    assert len(items) > 4


# --- many sessions starting on a fresh database at once -------------------------------------


@pytest.fixture
def fresh_url(backend: str, db_url: str, tmp_path: Path) -> Iterator[str]:
    """An empty database of its own: no chatledger tables yet."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    name = f"clagents_{uuid.uuid4().hex[:10]}"
    admin = create_engine(resolve_url(db_url, asynchronous=False), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield make_url(db_url).set(database=name).render_as_string(hide_password=False)
    finally:
        force = " WITH (FORCE)" if backend == "postgresql" else ""
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name}{force}"))
        admin.dispose()


THREADS = 8


@pytest.mark.parametrize(
    "shared",
    [
        pytest.param(False, id="ledger-per-loop"),
        pytest.param(True, id="one-ledger"),
    ],
)
def test_threads_open_sessions_on_a_fresh_database(
    backend: str, fresh_url: str, shared: bool
) -> None:
    """8 threads, each with its own event loop, start together on a database with no tables
    and open sessions: their own, and one they all share. Each thread has a ledger of its own,
    or all share one (``NullPool``: a pooled connection belongs to one loop)."""
    barrier, failures = threading.Barrier(THREADS), []
    one = cl.AsyncLedger(fresh_url, poolclass=NullPool) if shared else None

    async def work(i: int) -> None:
        led = one or cl.AsyncLedger(fresh_url)
        try:
            barrier.wait()
            for j in range(3):
                session = ChatledgerSession(led, f"t{i}-{j}", owner="o")
                await session.add_items([{"role": "user", "content": f"hi {i}-{j}"}])
                assert await session.get_items() == [{"role": "user", "content": f"hi {i}-{j}"}]
            common = ChatledgerSession(led, "common", owner="o")
            await common.add_items([{"role": "user", "content": f"from {i}"}])
        finally:
            if one is None:
                await led.close()

    def thread(i: int) -> None:
        try:
            asyncio.run(asyncio.wait_for(work(i), timeout=15 if shared else 60))
        except BaseException as exc:
            failures.append("".join(traceback.format_exception_only(exc)).strip())

    threads = [threading.Thread(target=thread, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    with cl.Ledger(fresh_url) as check:
        assert len(check.conversations(owner="o", limit=100)) == THREADS * 3 + 1
        common_items = [m["content"] for m in check.get("common", owner="o").messages()]
        assert sorted(common_items) == sorted(f"from {i}" for i in range(THREADS))


def test_docs_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/integrations.md's Agents SDK example runs as printed, offline."""
    doc = Path(__file__).resolve().parents[1] / "docs" / "integrations.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), re.S)
    block = next(b for b in blocks if "import ChatledgerSession" in b)
    monkeypatch.chdir(tmp_path)  # its agents.db
    exec(compile(block, str(doc), "exec"), {})
