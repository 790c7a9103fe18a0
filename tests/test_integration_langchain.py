"""ChatledgerHistory: LangChain messages stored in chatledger and read back, sync and async,
on every backend, with the real ``langchain_core`` converters and runnables."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langchain_core")

from langchain_core.chat_history import BaseChatMessageHistory, InMemoryChatMessageHistory
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.runnables.history import RunnableWithMessageHistory

import chatledger as cl
from chatledger.integrations.langchain import ChatledgerHistory, from_openai, to_openai
from chatledger.strategies import Strategy


def conversation_messages() -> list[BaseMessage]:
    """One round with parallel tool calls, names, ids, an error result and content parts."""
    return [
        HumanMessage("Weather in Paris and Oslo?", id="h1", name="alice"),
        AIMessage(
            "Checking both.",
            id="a1",
            tool_calls=[
                {"name": "get_weather", "args": {"city": "Paris"}, "id": "call_1"},
                {"name": "get_weather", "args": {"city": "Oslø", "n": [1, 2]}, "id": "call_2"},
            ],
        ),
        ToolMessage("18C, sunny", tool_call_id="call_1", name="get_weather", id="t1"),
        ToolMessage("timeout", tool_call_id="call_2", status="error"),
        AIMessage("Paris is 18C; Oslo did not answer.", id="a2"),
        HumanMessage(
            [
                {"type": "text", "text": "And this?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/sky.png"}},
            ]
        ),
        SystemMessage("Answer in French.", additional_kwargs={"__openai_role__": "developer"}),
        AIMessage("", tool_calls=[{"name": "now", "args": {}, "id": "call_3"}]),
        ToolMessage("12:00", tool_call_id="call_3"),
        AIMessage("Il est midi."),
    ]


# what chatledger stores for them, written out from the Chat Completions format
STORED: list[dict[str, Any]] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "name": "alice", "content": "Weather in Paris and Oslo?"},
    {
        "role": "assistant",
        "content": "Checking both.",
        "tool_calls": [
            {
                "type": "function",
                "id": "call_1",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            },
            {
                "type": "function",
                "id": "call_2",
                "function": {"name": "get_weather", "arguments": '{"city": "Oslø", "n": [1, 2]}'},
            },
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "18C, sunny"},
    {"role": "tool", "tool_call_id": "call_2", "content": "timeout"},
    {"role": "assistant", "content": "Paris is 18C; Oslo did not answer."},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "And this?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/sky.png"}},
        ],
    },
    {"role": "developer", "content": "Answer in French."},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"type": "function", "id": "call_3", "function": {"name": "now", "arguments": "{}"}}
        ],
    },
    {"role": "tool", "tool_call_id": "call_3", "content": "12:00"},
    {"role": "assistant", "content": "Il est midi."},
]


def kept(metadata: dict[str, Any] | None) -> dict[str, Any] | None:
    """The kept fields, checking that they carry the digest of the message they were
    written with."""
    if metadata is None:
        return None
    fields = dict(metadata["langchain"])
    assert re.fullmatch("[0-9a-f]{16}", fields.pop("digest"))
    return {**metadata, "langchain": fields}


def test_is_a_chat_message_history(ledger: cl.Ledger, uid: str) -> None:
    assert isinstance(ChatledgerHistory(ledger, uid), BaseChatMessageHistory)
    with pytest.raises(cl.InvalidArgumentError, match="Ledger or AsyncLedger"):
        ChatledgerHistory("sqlite://", uid)  # type: ignore[arg-type]


def test_round_trip(ledger: cl.Ledger, uid: str) -> None:
    history = ChatledgerHistory(ledger, uid, owner="u1", model="gpt-4o", system="Be brief.")
    sent = conversation_messages()
    history.add_messages(sent)

    conv = ledger.get(uid, owner="u1")
    assert conv.messages() == STORED
    cl.validate_messages(conv.messages())
    assert [kept(r.metadata) for r in conv.records()] == [
        None,
        {"langchain": {"id": "h1"}},
        {"langchain": {"id": "a1"}},
        {"langchain": {"id": "t1", "name": "get_weather"}},
        {"langchain": {"status": "error"}},
        {"langchain": {"id": "a2"}},
        None,
        None,
        None,
        None,
        None,
    ]

    got = ChatledgerHistory(ledger, uid, owner="u1").messages
    assert got == [SystemMessage("Be brief."), *sent]
    tool_ai = got[2]
    assert isinstance(tool_ai, AIMessage)
    assert [(c["id"], c["args"]) for c in tool_ai.tool_calls] == [
        ("call_1", {"city": "Paris"}),
        ("call_2", {"city": "Oslø", "n": [1, 2]}),
    ]
    error = got[4]
    assert isinstance(error, ToolMessage)
    assert (error.tool_call_id, error.status) == ("call_2", "error")
    assert got[7].additional_kwargs == {"__openai_role__": "developer"}


def langchain_only_fields() -> list[BaseMessage]:
    """Messages whose fields the Chat Completions format cannot carry."""
    usage: UsageMetadata = {
        "input_tokens": 12,
        "output_tokens": 3,
        "total_tokens": 15,
        "input_token_details": {"cache_read": 4},
    }
    return [
        SystemMessage([{"type": "text", "text": "Be brief."}], id="s1"),
        HumanMessage(
            [{"type": "text", "text": "Weather"}, {"type": "text", "text": "in Oslo?"}],
            additional_kwargs={"client": {"ip": "10.0.0.1"}},
            response_metadata={"source": "web"},
        ),
        AIMessage(
            [
                {"type": "reasoning", "reasoning": "Look it up.", "id": "rs_1"},
                {"type": "text", "text": "Checking.", "annotations": []},
            ],
            id="run-1",
            tool_calls=[{"name": "weather", "args": {"city": "Oslo"}, "id": "c1"}],
            additional_kwargs={"refusal": None, "trace": [1, 2]},
            response_metadata={
                "model_name": "gpt-4o-2024-08-06",
                "finish_reason": "tool_calls",
                "system_fingerprint": "fp_1",
                "logprobs": None,
            },
            usage_metadata=usage,
        ),
        ToolMessage(
            [{"type": "text", "text": "4C"}, {"type": "text", "text": "windy"}],
            tool_call_id="c1",
            name="weather",
            artifact={"raw": {"temp": 4.0, "wind": [12, "NW"]}, "cached": False},
            response_metadata={"ms": 31},
        ),
        AIMessage(
            "It is 4C and windy.",
            response_metadata={"finish_reason": "stop"},
            usage_metadata={"input_tokens": 30, "output_tokens": 8, "total_tokens": 38},
        ),
        HumanMessage("Thanks", name="alice", id="h2"),
        AIMessageChunk("You're welcome.", id="run-2"),
    ]


# LangChain's own reference history (deprecated in langchain-core 1.6.4, still shipped)
IN_MEMORY = pytest.mark.filterwarnings("ignore:The class `InMemoryChatMessageHistory`")


@IN_MEMORY
@pytest.mark.parametrize("strategy", [None, cl.TokenBudget(4000)], ids=["all", "window"])
def test_langchain_fields_round_trip_like_in_memory(
    ledger: cl.Ledger, uid: str, strategy: Strategy | None
) -> None:
    """The same messages added to LangChain's own in-memory history and to ChatledgerHistory
    come back equal."""
    reference = InMemoryChatMessageHistory()
    history = ChatledgerHistory(ledger, uid, strategy=strategy)
    first, second = langchain_only_fields()[:4], langchain_only_fields()[4:]
    for batch in (first, second):
        reference.add_messages(batch)
        history.add_messages(batch)
    expected = reference.messages
    assert history.messages == expected
    assert ChatledgerHistory(ledger, uid).messages == expected
    assert [type(m) for m in history.messages] == [type(m) for m in expected]
    # what is sent is still plain Chat Completions
    stored = ledger.get(uid).messages()
    cl.validate_messages(stored)
    assert stored[1] == {"role": "user", "content": "Weather\nin Oslo?"}
    assert stored[3] == {"role": "tool", "tool_call_id": "c1", "content": "4C\nwindy"}


@IN_MEMORY
async def test_langchain_fields_round_trip_async(aledger: cl.AsyncLedger, uid: str) -> None:
    reference = InMemoryChatMessageHistory()
    history = ChatledgerHistory(aledger, uid)
    await reference.aadd_messages(langchain_only_fields())
    await history.aadd_messages(langchain_only_fields())
    assert await history.aget_messages() == await reference.aget_messages()


def test_values_json_cannot_hold_are_left_out(ledger: cl.Ledger, uid: str) -> None:
    history = ChatledgerHistory(ledger, uid)
    calls = [{"name": "f", "args": {}, "id": "c1"}]
    history.add_messages(
        [
            HumanMessage("go"),
            AIMessage("", tool_calls=calls),
            ToolMessage("done", tool_call_id="c1", artifact=object(), id="t1"),
        ]
    )
    tool = history.messages[-1]
    assert isinstance(tool, ToolMessage)
    assert (tool.content, tool.id, tool.artifact) == ("done", "t1", None)


def test_converters_are_langchains_own() -> None:
    msg, meta = to_openai(ToolMessage("ok", tool_call_id="c", name="t"))
    assert (msg, kept(meta)) == (
        {"role": "tool", "tool_call_id": "c", "content": "ok"},
        {"langchain": {"name": "t"}},
    )
    # reasoning blocks cannot be sent back to Chat Completions: the text is sent, and the
    # content kept as it was
    blocks = [{"type": "reasoning", "summary": []}, {"type": "text", "text": "Hi"}]
    msg, meta = to_openai(AIMessage(blocks))
    assert (msg, kept(meta)) == (
        {"role": "assistant", "content": "Hi"},
        {"langchain": {"content": blocks}},
    )
    assert from_openai(msg, meta) == AIMessage(blocks)
    assert from_openai(
        {"role": "assistant", "tool_calls": [STORED[8]["tool_calls"][0]]}, None
    ) == AIMessage("", tool_calls=[{"name": "now", "args": {}, "id": "call_3"}])
    # LangChain v1 standard blocks, and an AIMessage from the Responses API
    image = HumanMessage(
        content_blocks=[{"type": "image", "base64": "iVBORw0KGgo=", "mime_type": "image/png"}]
    )
    assert to_openai(image)[0] == {
        "role": "user",
        "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
        ],
    }
    responses = AIMessage(
        [
            {"type": "text", "text": "ok", "annotations": []},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        ],
        tool_calls=[{"name": "f", "args": {}, "id": "c1"}],
    )
    msg, _ = to_openai(responses)
    assert msg == {
        "role": "assistant",
        "content": "ok",
        "tool_calls": [
            {"type": "function", "id": "c1", "function": {"name": "f", "arguments": "{}"}}
        ],
    }
    cl.validate_messages([msg, {"role": "tool", "tool_call_id": "c1", "content": "done"}])


def test_invalid_batch_stores_nothing(ledger: cl.Ledger, uid: str) -> None:
    history = ChatledgerHistory(ledger, uid)
    with pytest.raises(cl.InvalidMessageError) as info:
        history.add_messages([HumanMessage("hi"), ToolMessage("orphan", tool_call_id="nope")])
    assert info.value.problems[0].index == 1
    assert history.messages == []
    history.add_message(HumanMessage("hi"))  # BaseChatMessageHistory's single-message helper
    history.add_ai_message("hello")
    assert history.messages == [HumanMessage("hi"), AIMessage("hello")]


def rounds(n: int) -> list[BaseMessage]:
    out: list[BaseMessage] = []
    for i in range(n):
        out += [
            HumanMessage(f"question {i} " + "word " * 30, id=f"q{i}"),
            AIMessage(
                "", id=f"c{i}", tool_calls=[{"name": "look", "args": {"i": i}, "id": f"k{i}"}]
            ),
            ToolMessage("result " * 20, tool_call_id=f"k{i}", name="look", id=f"r{i}"),
            AIMessage(f"answer {i} " + "word " * 30, id=f"a{i}"),
        ]
    return out


def test_budgeted_messages_are_the_window(ledger: cl.Ledger, uid: str) -> None:
    strategy = cl.TokenBudget(400)
    ChatledgerHistory(ledger, uid, system="Be brief.").add_messages(rounds(12))
    history = ChatledgerHistory(ledger, uid, strategy=strategy)
    got = history.messages

    conv = ledger.get(uid)
    window = conv.window(strategy)
    assert [to_openai(m)[0] for m in got] == window
    assert cl.count_tokens(window, model="gpt-4o") <= 400
    assert len(got) < conv.info.message_count
    assert got[0] == SystemMessage("Be brief.")
    assert isinstance(got[1], HumanMessage)  # the tail starts with a whole round
    # the newest rounds, with their ids and tool names from the metadata
    assert got[-4:] == rounds(12)[-4:]
    for i, m in enumerate(got):
        if isinstance(m, ToolMessage):
            prev = got[i - 1]
            assert isinstance(prev, AIMessage)
            assert m.tool_call_id in {c["id"] for c in prev.tool_calls}
    # the whole history stays stored
    assert len(ChatledgerHistory(ledger, uid).messages) == 1 + 12 * 4


def test_summary_in_the_window(ledger: cl.Ledger, uid: str) -> None:
    calls: list[int] = []

    def summarizer(previous: str | None, messages: list[dict[str, Any]]) -> str:
        calls.append(len(messages))
        return "The user asked twelve questions."

    strategy: list[Strategy] = [
        cl.Summarize(summarizer, trigger=500, keep=250),
        cl.TokenBudget(600),
    ]
    history = ChatledgerHistory(ledger, uid, system="Be brief.", strategy=strategy)
    history.add_messages(rounds(12))
    got = history.messages
    assert calls
    assert got[0] == SystemMessage("Be brief.")
    assert isinstance(got[1], SystemMessage)
    assert "The user asked twelve questions." in str(got[1].content)
    assert got[-1] == rounds(12)[-1]


def test_clear_keeps_the_conversation(ledger: cl.Ledger, uid: str) -> None:
    ledger.create(
        uid, owner="u1", model="gpt-4", title="Support", metadata={"plan": "pro"}, system="Rules."
    )
    history = ChatledgerHistory(ledger, uid, owner="u1", system="Be brief.")
    history.add_messages([HumanMessage("hi"), AIMessage("hello")])
    conv = ledger.get(uid, owner="u1")
    conv.record(
        {
            "id": f"{uid}-1",
            "model": "gpt-4",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 2},
        }
    )
    other = ChatledgerHistory(ledger, uid, owner="u1")  # no system of its own
    assert len(other.messages) == 4
    history.clear()
    # the same conversation: identity, metadata, usage; the pinned prompt stays for a
    # history that has a system
    assert history.messages == [SystemMessage("Rules.")]
    info = ledger.get(uid, owner="u1").info
    assert (info.owner, info.model, info.title, info.metadata, info.created_at) == (
        "u1",
        "gpt-4",
        "Support",
        {"plan": "pro"},
        conv.info.created_at,
    )
    assert conv.usage().requests == 1
    history.add_messages([HumanMessage("again")])
    assert history.messages == [SystemMessage("Rules."), HumanMessage("again")]
    other.clear()  # a history without a system clears everything
    assert other.messages == []
    assert ledger.get(uid, owner="u1").info.title == "Support"
    other.add_messages([HumanMessage("after")])
    assert history.messages == [HumanMessage("after")]
    ChatledgerHistory(ledger, f"{uid}-new").clear()  # not there yet: created, empty
    assert ledger.get(f"{uid}-new").info.message_count == 0


def test_owner_isolation(ledger: cl.Ledger, uid: str) -> None:
    ChatledgerHistory(ledger, uid, owner="u1").add_messages([HumanMessage("mine")])
    # a conversation is (owner, id): another owner's history of the same id is its own
    theirs = ChatledgerHistory(ledger, uid, owner="u2")
    assert theirs.messages == []
    theirs.add_messages([HumanMessage("theirs")])
    theirs.clear()
    assert ChatledgerHistory(ledger, uid, owner="u1").messages == [HumanMessage("mine")]
    with pytest.raises(cl.ConversationNotFoundError):
        ledger.get(uid, owner="u3")


async def test_async_on_async_ledger(aledger: cl.AsyncLedger, uid: str) -> None:
    history = ChatledgerHistory(aledger, uid, owner="u1", system="Be brief.")
    sent = conversation_messages()
    await history.aadd_messages(sent[:5])
    await history.aadd_messages(sent[5:])
    conv = await aledger.get(uid, owner="u1")
    assert await conv.messages() == STORED
    assert await ChatledgerHistory(aledger, uid, owner="u1").aget_messages() == [
        SystemMessage("Be brief."),
        *sent,
    ]

    budget = ChatledgerHistory(aledger, uid, owner="u1", strategy=cl.LastRounds(1))
    got = await budget.aget_messages()
    assert [to_openai(m)[0] for m in got] == await conv.window(cl.LastRounds(1))
    assert got == [SystemMessage("Be brief."), *sent[5:]]

    for sync_call in (
        lambda: history.messages,
        lambda: history.add_messages([HumanMessage("x")]),
        history.clear,
    ):
        with pytest.raises(cl.InvalidArgumentError, match="AsyncLedger"):
            sync_call()

    await history.aclear()
    assert await history.aget_messages() == [SystemMessage("Be brief.")]
    assert (await aledger.get(uid, owner="u1")).info.message_count == 1


async def test_async_on_sync_ledger_runs_in_a_thread(ledger: cl.Ledger, uid: str) -> None:
    history = ChatledgerHistory(ledger, uid, strategy=cl.LastRounds(1))
    await history.aadd_messages([HumanMessage("one"), AIMessage("1")])
    await history.aadd_messages([HumanMessage("two"), AIMessage("2")])
    assert await history.aget_messages() == [HumanMessage("two"), AIMessage("2")]
    assert len(ChatledgerHistory(ledger, uid).messages) == 4
    await history.aclear()
    assert await history.aget_messages() == []


def chain(ledger: cl.Ledger | cl.AsyncLedger, replies: list[str]) -> RunnableWithMessageHistory:
    model = GenericFakeChatModel(messages=iter([AIMessage(r) for r in replies]))
    return RunnableWithMessageHistory(
        model,
        lambda session_id: ChatledgerHistory(
            ledger, session_id, system="Be brief.", strategy=cl.TokenBudget(2000)
        ),
    )


# RunnableWithMessageHistory (and BaseChatMessageHistory) are deprecated since langchain-core
# 1.6.4 in favour of LangGraph persistence, but still the way a history plugs into a chain
ignore_deprecation = pytest.mark.filterwarnings(
    "ignore:RunnableWithMessageHistory is deprecated:DeprecationWarning"
)


@ignore_deprecation
def test_runnable_with_message_history(ledger: cl.Ledger, uid: str) -> None:
    runnable = chain(ledger, ["Hello!", "You said hi."])
    config: Any = {"configurable": {"session_id": uid}}
    assert runnable.invoke([HumanMessage("hi")], config=config).content == "Hello!"
    assert runnable.invoke([HumanMessage("what did I say?")], config=config).content == (
        "You said hi."
    )
    assert ledger.get(uid).messages() == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "what did I say?"},
        {"role": "assistant", "content": "You said hi."},
    ]


@ignore_deprecation
async def test_runnable_with_message_history_async(aledger: cl.AsyncLedger, uid: str) -> None:
    runnable = chain(aledger, ["Hello!", "You said hi."])
    config: Any = {"configurable": {"session_id": uid}}
    assert (await runnable.ainvoke([HumanMessage("hi")], config=config)).content == "Hello!"
    await runnable.ainvoke([HumanMessage("what did I say?")], config=config)
    conv = await aledger.get(uid)
    assert [m["content"] for m in await conv.messages()] == [
        "Be brief.",
        "hi",
        "Hello!",
        "what did I say?",
        "You said hi.",
    ]


@ignore_deprecation
def test_tool_loop_with_a_budget(ledger: cl.Ledger, uid: str) -> None:
    """Between two invocations of a tool loop the calls are open: the history is then the
    prefix and the current round, and the budgeted window again once they are answered."""
    call = {"name": "get_weather", "args": {"city": "Paris"}, "id": "call_9"}
    replies = [AIMessage("", tool_calls=[call]), AIMessage("Sunny in Paris.")]
    model = GenericFakeChatModel(messages=iter(replies))
    strategy = cl.TokenBudget(400)
    ChatledgerHistory(ledger, uid, system="Be brief.").add_messages(rounds(12))
    runnable = RunnableWithMessageHistory(
        model, lambda session_id: ChatledgerHistory(ledger, session_id, strategy=strategy)
    )
    config: Any = {"configurable": {"session_id": uid}}

    runnable.invoke([HumanMessage("Weather in Paris?")], config=config)
    history = ChatledgerHistory(ledger, uid, strategy=strategy)
    got = history.messages
    assert got[:2] == [SystemMessage("Be brief."), HumanMessage("Weather in Paris?")]
    assert isinstance(got[2], AIMessage) and len(got) == 3
    assert got[2].tool_calls == [{**call, "type": "tool_call"}]
    assert got[2].id is not None and got[2].id.startswith("lc_run")  # the model's run id, kept
    out = runnable.invoke([ToolMessage("sunny", tool_call_id="call_9")], config=config)
    assert out.content == "Sunny in Paris."

    conv = ledger.get(uid)
    assert conv.messages()[-4:] == [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "type": "function",
                    "id": "call_9",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_9", "content": "sunny"},
        {"role": "assistant", "content": "Sunny in Paris."},
    ]
    cl.validate_messages(conv.messages())
    assert [to_openai(m)[0] for m in history.messages] == conv.window(strategy)
    assert len(history.messages) > 5  # older rounds are back in the window


def test_docs_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/integrations.md's LangChain example runs as printed, offline."""
    doc = Path(__file__).resolve().parents[1] / "docs" / "integrations.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), re.S)
    block = next(b for b in blocks if "import ChatledgerHistory" in b)
    monkeypatch.chdir(tmp_path)  # its chat.db
    exec(compile(block, str(doc), "exec"), {})
