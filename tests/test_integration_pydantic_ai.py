"""Pydantic AI: ModelMessages stored in chatledger and read back exactly, and agents (sync and
async, with a tool) whose history lives in a conversation, on every backend, with a
``FunctionModel`` that records what it was sent."""

from __future__ import annotations

import asyncio
import importlib
import sys
import warnings
from typing import Any

import pytest

pytest.importorskip("pydantic_ai")

from pydantic_ai import Agent, ModelRetry
from pydantic_ai.messages import (
    BinaryContent,
    CachePoint,
    CapabilityLoadDeltaPart,
    CompactionPart,
    FilePart,
    ImageUrl,
    ModelMessage,
    ModelMessagesTypeAdapter,
    ModelRequest,
    ModelResponse,
    NativeToolCallPart,
    RetryFeedbackPart,
    RetryInfo,
    RetryPromptPart,
    SystemPromptPart,
    TextContent,
    TextPart,
    ThinkingPart,
    ToolAvailabilityDeltaPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
    VideoUrl,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.test import TestModel
from pydantic_ai.usage import RequestUsage

import chatledger as cl
from chatledger.integrations.pydantic_ai import (
    ChatledgerHistory,
    astore_messages,
    awindow_messages,
    chatledger_history,
    from_openai,
    store_messages,
    to_openai,
    window_messages,
)
from chatledger.integrations.window_pairs import UNANSWERED

PNG = (
    b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00"
)


def every_part() -> list[ModelMessage]:
    """A history holding every part the mapping carries."""
    return [
        ModelRequest(
            parts=[
                SystemPromptPart("Be brief."),
                UserPromptPart("Weather in Paris?"),
            ],
            instructions="Answer in English.",
            run_id="run-1",
        ),
        ModelResponse(
            parts=[
                ThinkingPart("The user wants weather.", signature="sig-1"),
                TextPart("Checking."),
                TextPart("One moment."),
                ToolCallPart("get_weather", {"city": "Paris"}, tool_call_id="c1"),
                ToolCallPart("lookup", '{"q": [1, 2]}', tool_call_id="c2"),
                ToolCallPart("strict", {"n": "x"}, tool_call_id="c3"),
            ],
            usage=RequestUsage(input_tokens=20, output_tokens=9),
            model_name="gpt-4o",
            provider_response_id="resp-1",
            finish_reason="tool_call",
        ),
        ModelRequest(
            parts=[
                ToolReturnPart("get_weather", "sunny", tool_call_id="c1"),
                ToolReturnPart("lookup", {"rows": [1, 2], "ok": True}, tool_call_id="c2"),
                ToolReturnPart(
                    "strict",
                    "n must be an integer",
                    tool_call_id="c3",
                    outcome="retried",
                    retry=RetryInfo(cause="validation_error"),
                ),
                UserPromptPart(
                    [
                        "And these?",
                        TextContent("tagged", metadata={"source": "app"}),
                        ImageUrl("https://example.com/sky.png"),
                        BinaryContent(PNG, media_type="image/png"),
                        BinaryContent(b"RIFF....WAVE", media_type="audio/wav"),
                        BinaryContent(b"%PDF-1.4 ...", media_type="application/pdf"),
                        CachePoint(),
                    ]
                ),
            ]
        ),
        ModelResponse(parts=[TextPart("Sunny; the rest look fine.")]),
        ModelRequest(
            parts=[
                RetryFeedbackPart(
                    "the output must be JSON", retry=RetryInfo(cause="validation_error")
                )
            ]
        ),
        ModelResponse(parts=[ThinkingPart("only thinking")]),
        ModelRequest(  # records of setup changes ride with the prompt's message
            parts=[
                ToolAvailabilityDeltaPart(tools_added=["search"]),
                UserPromptPart("Thanks."),
                CapabilityLoadDeltaPart(loaded=["maps"]),
            ]
        ),
        ModelResponse(parts=[TextPart("You're welcome.")]),
    ]


def json_round_trip(messages: list[ModelMessage]) -> list[ModelMessage]:
    """The messages as Pydantic AI's own storage gives them back (it fills in media types and
    identifiers, and reads image bytes as ``BinaryImage``)."""
    return ModelMessagesTypeAdapter.validate_json(ModelMessagesTypeAdapter.dump_json(messages))


def without_times(messages: list[ModelMessage]) -> Any:
    """The messages as JSON with the timestamps (set when a part is made) left out."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "timestamp"}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(ModelMessagesTypeAdapter.dump_python(messages, mode="json"))


def test_every_part_round_trips_through_the_store(db_url: str, uid: str) -> None:
    history = every_part()
    with cl.Ledger(db_url) as ledger:
        conv = ledger.conversation(uid, model="gpt-4o")
        store_messages(conv, history)
        stored = conv.messages()
        cl.validate_messages(stored)
        assert [m["role"] for m in stored] == [
            "system", "user", "assistant", "tool", "tool", "tool", "user",
            "assistant", "user", "assistant", "user", "assistant",
        ]  # fmt: skip
        assert stored[2]["content"] == "Checking.\n\nOne moment."
        assert stored[4]["content"] == '{"rows":[1,2],"ok":true}'
        assert [p["type"] for p in stored[6]["content"]] == [
            "text", "text", "image_url", "image_url", "input_audio", "file",
        ]  # fmt: skip
        assert stored[6]["content"][3]["image_url"]["url"].startswith("data:image/png;base64,")
        # read back: what Pydantic AI's own JSON round trip gives, request by request
        assert window_messages(conv) == json_round_trip(history)
        pairs = [(r.message, r.metadata) for r in conv.records()]
        assert from_openai(pairs) == json_round_trip(history)


def test_messages_from_elsewhere_are_read_from_their_chat_completions_form(
    db_url: str, uid: str
) -> None:
    with cl.Ledger(db_url) as ledger:
        conv = ledger.conversation(uid, model="gpt-4o", system="Be brief.")
        call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        conv.extend(
            [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello.", "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "c1", "content": "42"},
            ],
            metadata=[{"pydantic_ai": {"message": {"kind": "not a message"}}}, None, None],
        )
        # metadata that does not load is passed over: the message is read as stored
        assert without_times(window_messages(conv)) == without_times(
            [
                ModelRequest(parts=[SystemPromptPart("Be brief.")]),
                ModelRequest(parts=[UserPromptPart("Hi")]),
                ModelResponse(
                    parts=[TextPart("Hello."), ToolCallPart("f", "{}", tool_call_id="c1")]
                ),
                ModelRequest(parts=[ToolReturnPart("f", "42", tool_call_id="c1")]),
            ]
        )
        data = BinaryContent(PNG, media_type="image/png")
        conv.append(
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Look"},
                    {"type": "image_url", "image_url": {"url": data.data_uri}},
                    {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
                ],
            }
        )
        prompt = window_messages(conv)[-1].parts[0]
        assert isinstance(prompt, UserPromptPart) and not isinstance(prompt.content, str)
        assert prompt.content[0] == "Look"
        assert isinstance(prompt.content[1], BinaryContent) and prompt.content[1].data == PNG
        assert isinstance(prompt.content[2], BinaryContent)
        assert prompt.content[2].media_type == "audio/wav" and prompt.content[2].data == b"RIFF"


def test_a_legacy_retry_prompt_is_stored_as_what_it_meant(db_url: str, uid: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the part is deprecated; histories still hold it
        to_tool = RetryPromptPart("bad args", tool_name="f", tool_call_id="c1")
        to_output = RetryPromptPart("not JSON")
    history: list[ModelMessage] = [
        ModelRequest(parts=[UserPromptPart("Go")]),
        ModelResponse(parts=[ToolCallPart("f", {}, tool_call_id="c1")]),
        ModelRequest(parts=[to_tool, to_output]),
    ]
    with cl.Ledger(db_url) as ledger:
        conv = ledger.conversation(uid, model="gpt-4o")
        store_messages(conv, history)
        stored = conv.messages()
        assert stored[2] == {
            "role": "tool",
            "tool_call_id": "c1",
            "content": to_tool.model_response(),
        }
        assert stored[3] == {"role": "user", "content": to_output.model_response()}
        back = window_messages(conv)[2]
        assert isinstance(back, ModelRequest)
        assert isinstance(back.parts[0], ToolReturnPart) and back.parts[0].outcome == "retried"
        assert isinstance(back.parts[1], RetryFeedbackPart)


@pytest.mark.parametrize(
    ("message", "named"),
    [
        (ModelRequest(parts=[UserPromptPart([VideoUrl("https://x.test/a.mp4")])]), "VideoUrl"),
        (ModelResponse(parts=[NativeToolCallPart("web_search", {})]), "NativeToolCallPart"),
        (ModelResponse(parts=[FilePart(BinaryContent(PNG, media_type="image/png"))]), "FilePart"),
        (ModelRequest(parts=[CompactionPart("summary")]), "CompactionPart"),
        (ModelRequest(parts=[ToolAvailabilityDeltaPart(tools_added=["x"])]), "records alone"),
    ],
)
def test_what_cannot_be_carried_is_refused_by_name(
    message: ModelMessage, named: str, tmp_path: Any
) -> None:
    with cl.Ledger(f"sqlite:///{tmp_path / 'chat.db'}") as ledger:
        conv = ledger.conversation("c", model="gpt-4o")
        batch = [ModelRequest(parts=[UserPromptPart("first")]), message]
        with pytest.raises(cl.InvalidArgumentError, match=named) as caught:
            store_messages(conv, batch)
        assert caught.value.field.startswith("messages[1]")
        assert conv.messages() == []  # nothing written
    with pytest.raises(cl.ChatLedgerError):
        to_openai([message])


class Recorder:
    """A FunctionModel body: a tool call for each new prompt, then an answer; keeps what it got."""

    def __init__(self) -> None:
        self.seen: list[list[ModelMessage]] = []

    def __call__(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.seen.append(list(messages))
        last = messages[-1]
        assert isinstance(last, ModelRequest)
        prompt = next((p for p in last.parts if isinstance(p, UserPromptPart)), None)
        if prompt is not None:
            city = str(prompt.content).split()[-1].rstrip("?")
            return ModelResponse(parts=[ToolCallPart("get_weather", {"city": city})])
        result = next(p for p in last.parts if isinstance(p, ToolReturnPart))
        return ModelResponse(parts=[TextPart(f"It is {result.content}. " + "Words. " * 30)])


def weather_agent(recorder: Recorder, history: ChatledgerHistory) -> Agent[None, str]:
    agent = Agent(FunctionModel(recorder), instructions="Be brief.", capabilities=[history])

    @agent.tool_plain
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    return agent


def check_history(stored: list[dict[str, Any]], turns: int) -> None:
    cl.validate_messages(stored)
    assert [m["role"] for m in stored] == ["user", "assistant", "tool", "assistant"] * turns
    assert [m["content"] for m in stored if m["role"] == "user"] == [
        f"Weather in City{n}?" for n in range(turns)
    ]


def test_sync_agent_turns_are_stored_once_and_the_model_sees_the_window(
    db_url: str, uid: str
) -> None:
    with cl.Ledger(db_url) as ledger:
        conv = ledger.conversation(uid, model="gpt-4o")
        recorder = Recorder()
        agent = weather_agent(recorder, chatledger_history(conv, cl.TokenBudget(150)))
        for n in range(3):
            result = agent.run_sync(f"Weather in City{n}?")
            assert result.output.startswith(f"It is sunny in City{n}.")
        check_history(conv.messages(), 3)
        assert len(recorder.seen) == 6
        # the small budget dropped the oldest rounds from what the model saw
        last = recorder.seen[-1]
        assert "City0" not in repr(last) and "City2" in repr(last)
        # a restart: a new agent and capability on the same conversation continues it
        recorder2 = Recorder()
        agent2 = weather_agent(recorder2, chatledger_history(conv))
        agent2.run_sync("Weather in City3?")
        check_history(conv.messages(), 4)
        # without a strategy the model got the whole history, then the new prompt
        first = recorder2.seen[0]
        assert len(first) == 13 and isinstance(first[0], ModelRequest)
        prompt = first[0].parts[0]
        assert isinstance(prompt, UserPromptPart) and prompt.content == "Weather in City0?"


async def test_async_agent_on_an_async_conversation(db_url: str, uid: str) -> None:
    async with cl.AsyncLedger(db_url) as ledger:
        conv = await ledger.conversation(uid, model="gpt-4o")
        recorder = Recorder()
        agent = weather_agent(recorder, chatledger_history(conv, cl.TokenBudget(4000)))
        for n in range(2):
            await agent.run(f"Weather in City{n}?")
        check_history(await conv.messages(), 2)
        assert len(recorder.seen) == 4 and len(recorder.seen[-1]) == 7
        # the plain helpers: a window for message_history, the run's new messages stored
        plain = Agent(FunctionModel(lambda m, i: ModelResponse(parts=[TextPart("Hi.")])))
        result = await plain.run("Hello", message_history=await awindow_messages(conv))
        await astore_messages(conv, result.new_messages())
        stored = await conv.messages()
        cl.validate_messages(stored)
        assert stored[-2:] == [
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi."},
        ]


async def test_async_agent_on_a_sync_conversation(db_url: str, uid: str) -> None:
    with cl.Ledger(db_url) as ledger:
        conv = ledger.conversation(uid, model="gpt-4o")
        agent = weather_agent(Recorder(), chatledger_history(conv))
        await agent.run("Weather in City0?")
        check_history(conv.messages(), 1)


async def test_store_helpers_on_an_async_conversation(db_url: str, uid: str) -> None:
    async with cl.AsyncLedger(db_url) as ledger:
        conv = await ledger.conversation(uid, model="gpt-4o")
        history = every_part()
        await astore_messages(conv, history)
        assert await awindow_messages(conv) == json_round_trip(history)


def test_not_a_conversation_is_refused() -> None:
    with pytest.raises(cl.InvalidArgumentError, match="conversation"):
        chatledger_history("support-42")  # type: ignore[arg-type]


def test_without_pydantic_ai_the_import_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [n for n in sys.modules if n == "pydantic_ai" or n.startswith("pydantic_ai.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "chatledger.integrations.pydantic_ai")
    with pytest.raises(cl.MissingDependencyError) as caught:
        importlib.import_module("chatledger.integrations.pydantic_ai")
    assert caught.value.install == "pip install 'chatledger[pydantic-ai]'"
    assert "pydantic-ai-slim" in str(caught.value)


def test_a_run_that_failed_inside_a_tool_is_closed_by_the_next(db_url: str, uid: str) -> None:
    with cl.Ledger(db_url) as ledger:
        conv = ledger.conversation(uid, model="gpt-4o")
        agent = Agent(FunctionModel(Recorder()), capabilities=[chatledger_history(conv)])

        @agent.tool_plain
        def get_weather(city: str) -> str:
            """Crashes."""
            raise RuntimeError("tool crashed")

        with pytest.raises(RuntimeError, match="tool crashed"):
            agent.run_sync("Weather in Oslo?")
        assert len(conv.info.pending_tool_calls) == 1
        # the failed run's reply and its open call were stored; the next run closes the call
        sorry = FunctionModel(lambda m, i: ModelResponse(parts=[TextPart("Sorry.")]))
        Agent(sorry, capabilities=[chatledger_history(conv)]).run_sync("Well?")
        stored = conv.messages()
        cl.validate_messages(stored)
        assert [m["role"] for m in stored] == ["user", "assistant", "tool", "user", "assistant"]
        assert stored[2]["content"] == UNANSWERED
        back = window_messages(conv)  # the closer reads as the failed call's tool return
        assert isinstance(back[2], ModelRequest)
        assert back[2].parts == [
            ToolReturnPart(
                "get_weather",
                UNANSWERED,
                tool_call_id=stored[2]["tool_call_id"],
                timestamp=back[2].parts[0].timestamp,  # type: ignore[union-attr]
            )
        ]


def roles_and_texts(stored: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    return [(m["role"], m.get("content")) for m in stored]


def test_history_from_an_earlier_run_and_the_system_prompt_are_stored_once(
    db_url: str, uid: str
) -> None:
    seen: list[list[ModelMessage]] = []

    def echo(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        seen.append(list(messages))
        return ModelResponse(parts=[TextPart(f"reply {len(seen)}")])

    with cl.Ledger(db_url) as ledger:
        conv = ledger.conversation(uid, model="gpt-4o")
        agent = Agent(
            FunctionModel(echo), system_prompt="Be brief.", capabilities=[chatledger_history(conv)]
        )
        first = agent.run_sync("one")
        # the usual Pydantic AI habit: hand the last run's messages back as message_history
        second = agent.run_sync("two", message_history=first.all_messages())
        assert [m.parts for m in second.new_messages()] == [
            m.parts for m in second.all_messages()[-2:]
        ]
        # a run without message_history: Pydantic AI puts the system prompt in again
        agent.run_sync("three")
        assert roles_and_texts(conv.messages()) == [
            ("system", "Be brief."),
            ("user", "one"),
            ("assistant", "reply 1"),
            ("user", "two"),
            ("assistant", "reply 2"),
            ("user", "three"),
            ("assistant", "reply 3"),
        ]
        # the model saw the stored system prompt once, at the start, on every run
        for sent in seen:
            prompts = [p for m in sent for p in m.parts if isinstance(p, SystemPromptPart)]
            assert [p.content for p in prompts] == ["Be brief."]
            assert sent[0].parts[0] == prompts[0]
        # a history from elsewhere is stored as new
        elsewhere: list[ModelMessage] = [
            ModelRequest(parts=[UserPromptPart("imported question")]),
            ModelResponse(parts=[TextPart("imported answer")]),
        ]
        agent.run_sync("four", message_history=elsewhere)
        assert roles_and_texts(conv.messages())[7:] == [
            ("user", "imported question"),
            ("assistant", "imported answer"),
            ("user", "four"),
            ("assistant", "reply 4"),
        ]


async def test_async_run_with_an_earlier_runs_history_stores_it_once(db_url: str, uid: str) -> None:
    async with cl.AsyncLedger(db_url) as ledger:
        conv = await ledger.conversation(uid, model="gpt-4o")
        agent = weather_agent(Recorder(), chatledger_history(conv))
        first = await agent.run("Weather in City0?")
        await agent.run("Weather in City1?", message_history=first.all_messages())
        check_history(await conv.messages(), 2)


def test_test_model_tool_calls_retries_and_streaming(db_url: str, uid: str) -> None:
    """TestModel calls every tool; a tool's ModelRetry and an output validator's retry are
    stored as the model got them, and a streamed run stores its reply too."""
    with cl.Ledger(db_url) as ledger:
        conv = ledger.conversation(uid, model="gpt-4o")
        agent = Agent(
            TestModel(custom_output_text="Done."),
            retries=3,
            capabilities=[chatledger_history(conv, cl.TokenBudget(4000))],
        )
        tries: list[str] = []

        @agent.tool_plain
        def lookup(city: str) -> str:
            """Look a city up."""
            tries.append(city)
            if len(tries) == 1:
                raise ModelRetry("try again")
            return f"found {city}"

        checked: list[str] = []

        @agent.output_validator
        def once_more(output: str) -> str:
            checked.append(output)
            if len(checked) == 1:
                raise ModelRetry("once more")
            return output

        result = agent.run_sync("Find a city")
        assert result.output == "Done." and len(tries) == 2 and len(checked) == 2
        stored = conv.messages()
        cl.validate_messages(stored)
        assert [m["role"] for m in stored] == [
            "user", "assistant", "tool", "assistant", "tool", "assistant", "user", "assistant",
        ]  # fmt: skip
        assert "try again" in stored[2]["content"] and stored[4]["content"] == "found a"
        assert "once more" in stored[6]["content"]
        # every call is answered by its own result
        calls = [c["id"] for m in stored for c in m.get("tool_calls", [])]
        assert calls == [m["tool_call_id"] for m in stored if m["role"] == "tool"]
        assert window_messages(conv) == result.all_messages()

        async def streamed() -> str:
            async with agent.run_stream("And now?") as run:
                return await run.get_output()

        assert asyncio.run(streamed()) == "Done."
        stored = conv.messages()
        cl.validate_messages(stored)
        assert stored[8] == {"role": "user", "content": "And now?"}
        assert stored[-1] == {"role": "assistant", "content": "Done."}


def test_a_message_edited_in_chatledger_is_read_as_edited(db_url: str, uid: str) -> None:
    seen: list[list[ModelMessage]] = []

    def echo(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        seen.append(list(messages))
        return ModelResponse(parts=[TextPart("ok")])

    with cl.Ledger(db_url) as ledger:
        conv = ledger.conversation(uid, model="gpt-4o")
        agent = Agent(
            FunctionModel(echo), system_prompt="Old.", capabilities=[chatledger_history(conv)]
        )
        agent.run_sync("one")
        conv.update(system="New.")
        agent.run_sync("two")
        first = seen[-1][0]
        assert isinstance(first, ModelRequest)
        assert [getattr(p, "content", None) for p in first.parts] == ["New.", "one"]
        # the unedited messages still come back from their metadata, usage and all
        reply = seen[-1][1]
        assert isinstance(reply, ModelResponse) and reply.model_name == "function:echo:"
