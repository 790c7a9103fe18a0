"""ChatledgerMiddleware: a LangChain 1.x ``create_agent`` run stored in chatledger and given
chatledger's window, sync and async, on every backend, with a fake chat model that records
what it was sent."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator, Sequence
from itertools import islice
from typing import Any

import pytest
from pydantic import Field

pytest.importorskip("langchain.agents")

from langchain.agents import create_agent
from langchain.agents.middleware import HumanInTheLoopMiddleware
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatResult
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

import chatledger as cl
from chatledger.integrations.langchain_agents import ChatledgerMiddleware
from chatledger.integrations.window_pairs import UNANSWERED


@tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    return f"sunny in {city}"


class RecordingModel(GenericFakeChatModel):
    """A fake chat model that takes tools and keeps every list of messages it was sent."""

    seen: list[list[BaseMessage]] = Field(default_factory=list)

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> RecordingModel:
        return self

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.seen.append(list(messages))
        return super()._generate(messages, stop, run_manager, **kwargs)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._generate(messages, stop, None, **kwargs)


def answer(n: int) -> str:
    return f"It is sunny in City{n}. " + "More words here. " * 20


def replies(turns: int) -> Iterator[AIMessage]:
    """Per turn: a tool call, then an answer using its result."""
    for n in range(turns):
        call = {"name": "get_weather", "args": {"city": f"City{n}"}, "id": f"call_{n}"}
        yield AIMessage("", tool_calls=[call])
        yield AIMessage(answer(n))


def model_for(turns: int) -> RecordingModel:
    return RecordingModel(messages=replies(turns))


def expected_history(turns: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for n in range(turns):
        call = {
            "id": f"call_{n}",
            "type": "function",
            "function": {"name": "get_weather", "arguments": f'{{"city": "City{n}"}}'},
        }
        out += [
            {"role": "user", "content": f"Weather in City{n}?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": f"call_{n}", "content": f"sunny in City{n}"},
            {
                "role": "assistant",
                "content": f"It is sunny in City{n}. " + "More words here. " * 20,
            },
        ]
    return out


def check_stored(conv: cl.Conversation, turns: int) -> None:
    stored = conv.messages()
    cl.validate_messages(stored)
    assert [m["role"] for m in stored] == [m["role"] for m in expected_history(turns)]
    for got, want in zip(stored, expected_history(turns), strict=True):
        assert got.get("content") == want["content"] or (
            got.get("content") in ("", None) and want["content"] is None
        )
        assert [c["id"] for c in got.get("tool_calls", [])] == [
            c["id"] for c in want.get("tool_calls", [])
        ]


def test_turns_with_a_tool_are_stored_once_and_the_model_sees_the_window(
    db_url: str, uid: str
) -> None:
    with cl.Ledger(db_url) as ledger:
        conv = ledger.conversation(uid, model="gpt-4o")
        model = model_for(4)
        budget = cl.TokenBudget(200)
        agent = create_agent(model, [get_weather], middleware=[ChatledgerMiddleware(conv, budget)])
        for n in range(3):
            agent.invoke({"messages": [HumanMessage(f"Weather in City{n}?")]})
        check_stored(conv, 3)
        # two model calls a turn; each saw chatledger's window at that moment
        assert len(model.seen) == 6
        last = model.seen[-1]
        stored = [m.get("content") or "" for m in conv.messages()]
        assert [m.content for m in last] == stored[len(stored) - 1 - len(last) : -1]
        assert isinstance(last[0], HumanMessage)
        # the small budget dropped the oldest rounds: City0 is not in what the model saw
        assert "City0" not in str([m.content for m in last])
        assert any("City2" in str(m.content) for m in last)

        # a restart: a new middleware on the same conversation continues it
        model2 = RecordingModel(messages=(m for i, m in enumerate(replies(4)) if i >= 6))
        agent2 = create_agent(model2, [get_weather], middleware=[ChatledgerMiddleware(conv)])
        agent2.invoke({"messages": [HumanMessage("Weather in City3?")]})
        check_stored(conv, 4)
        # without a strategy the model gets the whole stored history
        assert len(model2.seen[0]) == 13
        assert model2.seen[0][0].content == "Weather in City0?"


def test_a_checkpointer_thread_stores_nothing_twice(db_url: str, uid: str) -> None:
    with cl.Ledger(db_url) as ledger:
        conv = ledger.conversation(uid, model="gpt-4o")
        agent = create_agent(
            model_for(3),
            [get_weather],
            middleware=[ChatledgerMiddleware(conv, cl.TokenBudget(4000))],
            checkpointer=InMemorySaver(),
        )
        config: Any = {"configurable": {"thread_id": uid}}
        for n in range(2):
            agent.invoke({"messages": [HumanMessage(f"Weather in City{n}?")]}, config)
        check_stored(conv, 2)
        # a new middleware over the same thread: the state's messages are recognised as stored
        agent2 = create_agent(
            RecordingModel(messages=(m for i, m in enumerate(replies(3)) if i >= 4)),
            [get_weather],
            middleware=[ChatledgerMiddleware(conv)],
            checkpointer=agent.checkpointer,
        )
        agent2.invoke({"messages": [HumanMessage("Weather in City2?")]}, config)
        check_stored(conv, 3)


async def test_async_agent_on_an_async_conversation(db_url: str, uid: str) -> None:
    async with cl.AsyncLedger(db_url) as ledger:
        conv = await ledger.conversation(uid, model="gpt-4o")
        model = model_for(2)
        agent = create_agent(
            model, [get_weather], middleware=[ChatledgerMiddleware(conv, cl.TokenBudget(4000))]
        )
        for n in range(2):
            await agent.ainvoke({"messages": [HumanMessage(f"Weather in City{n}?")]})
        stored = await conv.messages()
        cl.validate_messages(stored)
        assert [m["role"] for m in stored] == [m["role"] for m in expected_history(2)]
        assert len(model.seen) == 4
        assert model.seen[-1][0].content == "Weather in City0?"
        # a sync run cannot wait for an async conversation
        with pytest.raises(cl.InvalidArgumentError, match="AsyncConversation"):
            agent.invoke({"messages": [HumanMessage("Hi")]})


async def test_async_agent_on_a_sync_conversation(db_url: str, uid: str) -> None:
    with cl.Ledger(db_url) as ledger:
        conv = ledger.conversation(uid, model="gpt-4o")
        agent = create_agent(model_for(1), [get_weather], middleware=[ChatledgerMiddleware(conv)])
        await agent.ainvoke({"messages": [HumanMessage("Weather in City0?")]})
        check_stored(conv, 1)


def test_not_a_conversation_is_refused() -> None:
    with pytest.raises(cl.InvalidArgumentError, match="conversation"):
        ChatledgerMiddleware("support-42")  # type: ignore[arg-type]


def test_without_langchain_the_import_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [n for n in sys.modules if n == "langchain" or n.startswith("langchain.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "chatledger.integrations.langchain_agents")
    with pytest.raises(cl.MissingDependencyError) as caught:
        importlib.import_module("chatledger.integrations.langchain_agents")
    assert caught.value.install == "pip install 'chatledger[langchain-agents]'"


def test_a_run_that_failed_inside_a_tool_is_closed_by_the_next(db_url: str, uid: str) -> None:
    calls: list[str] = []

    @tool
    def flaky(city: str) -> str:
        """Fails the first time."""
        calls.append(city)
        if len(calls) == 1:
            raise RuntimeError("tool crashed")
        return f"sunny in {city}"

    with cl.Ledger(db_url) as ledger:
        conv = ledger.conversation(uid, model="gpt-4o")
        call = {"name": "flaky", "args": {"city": "Oslo"}, "id": "c1"}
        model = RecordingModel(
            messages=iter([AIMessage("", tool_calls=[call]), AIMessage("Sorry, try again.")])
        )
        agent = create_agent(model, [flaky], middleware=[ChatledgerMiddleware(conv)])
        with pytest.raises(RuntimeError, match="tool crashed"):
            agent.invoke({"messages": [HumanMessage("Weather in Oslo?")]})
        assert conv.info.pending_tool_calls == ("c1",)
        agent.invoke({"messages": [HumanMessage("Well?")]})
        stored = conv.messages()
        cl.validate_messages(stored)
        assert [m["role"] for m in stored] == ["user", "assistant", "tool", "user", "assistant"]
        assert stored[2] == {"role": "tool", "tool_call_id": "c1", "content": UNANSWERED}


def test_a_human_in_the_loop_interrupt_is_resumed_into_one_history(db_url: str, uid: str) -> None:
    with cl.Ledger(db_url) as ledger:
        conv = ledger.conversation(uid, model="gpt-4o")
        model = model_for(1)
        agent = create_agent(
            model,
            [get_weather],
            middleware=[
                ChatledgerMiddleware(conv),
                HumanInTheLoopMiddleware({"get_weather": True}),
            ],
            checkpointer=InMemorySaver(),
        )
        config: Any = {"configurable": {"thread_id": uid}}
        paused = agent.invoke({"messages": [HumanMessage("Weather in City0?")]}, config)
        assert "__interrupt__" in paused
        assert conv.info.pending_tool_calls == ("call_0",)  # the reply is stored, its call open
        agent.invoke(Command(resume={"decisions": [{"type": "approve"}]}), config)
        check_stored(conv, 1)
        assert [m.content for m in model.seen[-1]][-1] == "sunny in City0"


async def test_async_stream_on_a_thread_with_a_new_middleware(db_url: str, uid: str) -> None:
    async with cl.AsyncLedger(db_url) as ledger:
        conv = await ledger.conversation(uid, model="gpt-4o")
        saver = InMemorySaver()
        config: Any = {"configurable": {"thread_id": uid}}
        models = [RecordingModel(messages=islice(replies(2), 2 * n, None)) for n in range(2)]
        for n, model in enumerate(models):
            # a new agent and middleware each turn, as a web handler builds them
            agent = create_agent(
                model,
                [get_weather],
                middleware=[ChatledgerMiddleware(conv, cl.TokenBudget(4000))],
                checkpointer=saver,
            )
            async for _ in agent.astream(
                {"messages": [HumanMessage(f"Weather in City{n}?")]}, config
            ):
                pass
        stored = await conv.messages()
        cl.validate_messages(stored)
        assert [m["role"] for m in stored] == [m["role"] for m in expected_history(2)]
        assert [m.get("tool_call_id") for m in stored if m["role"] == "tool"] == [
            "call_0",
            "call_1",
        ]
        # the second turn's model saw the first turn through the window
        assert models[1].seen[0][0].content == "Weather in City0?"


def test_two_workers_taking_turns_on_one_thread_store_each_turn_once(db_url: str, uid: str) -> None:
    """Two processes, each with its own agent for the conversation (a shared checkpointer,
    handles of their own), serve the turns of one thread alternately."""
    with cl.Ledger(db_url) as one, cl.Ledger(db_url) as two:
        saver = InMemorySaver()
        script = replies(4)
        agents = [
            create_agent(
                RecordingModel(messages=script),
                [get_weather],
                middleware=[ChatledgerMiddleware(ledger.conversation(uid, model="gpt-4o"))],
                checkpointer=saver,
            )
            for ledger in (one, two)
        ]
        config: Any = {"configurable": {"thread_id": uid}}
        for n in range(4):
            agents[n % 2].invoke({"messages": [HumanMessage(f"Weather in City{n}?")]}, config)
        check_stored(one.conversation(uid), 4)
