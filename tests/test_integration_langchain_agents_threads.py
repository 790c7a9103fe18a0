"""One ChatledgerMiddleware (one agent) serving many threads and owners: each run kept in the
conversation of its ``thread_id`` and owner, sync and async, interleaved, on every backend,
with a fake chat model whose replies follow what it was sent."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import Field

pytest.importorskip("langchain.agents")

from langchain.agents import create_agent
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver

import chatledger as cl
from chatledger.integrations.langchain_agents import ChatledgerMiddleware


@dataclass
class Context:
    user_id: str | None


class WeatherModel(BaseChatModel):
    """Asks for the weather of the city in the newest question, then answers with the tool's
    result; keeps every list of messages it was sent."""

    seen: list[list[BaseMessage]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "weather-fake"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> WeatherModel:
        return self

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.seen.append(list(messages))
        last = messages[-1]
        if isinstance(last, ToolMessage):
            reply = AIMessage(f"It is {last.content}.")
        else:
            city = str(last.content).split()[-1].rstrip("?")
            call = {"name": "get_weather", "args": {"city": city}, "id": f"{city}-{len(messages)}"}
            reply = AIMessage("", tool_calls=[call])
        return ChatResult(generations=[ChatGeneration(message=reply)])


@tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    return f"sunny in {city}"


def turn(city: str) -> dict[str, Any]:
    return {"messages": [HumanMessage(f"Weather in {city}?")]}


def thread(thread_id: str) -> Any:
    return {"configurable": {"thread_id": thread_id}}


def contents(conv: cl.Conversation) -> list[Any]:
    return [m.get("content") or "" for m in conv.messages()]


def asked(*cities: str) -> list[str]:
    """What a conversation holds after these questions: question, call, result, answer."""
    return [
        x for c in cities for x in (f"Weather in {c}?", "", f"sunny in {c}", f"It is sunny in {c}.")
    ]


def per_user(ledger: cl.Ledger | cl.AsyncLedger, **options: Any) -> ChatledgerMiddleware:
    owner = options.pop("owner", lambda rt: rt.context.user_id)
    return ChatledgerMiddleware(
        ledger, cl.TokenBudget(4000), owner=owner, model="gpt-4o", **options
    )


@pytest.mark.parametrize("saver", [None, InMemorySaver], ids=["stateless", "checkpointer"])
def test_one_agent_keeps_each_thread_in_its_own_conversation(
    db_url: str, uid: str, saver: type[InMemorySaver] | None
) -> None:
    with cl.Ledger(db_url) as ledger:
        model = WeatherModel()
        agent = create_agent(
            model,
            [get_weather],
            middleware=[per_user(ledger)],
            context_schema=Context,
            checkpointer=saver() if saver else None,
        )
        a, b = f"{uid}-a", f"{uid}-b"
        agent.invoke(turn("Oslo"), thread(a), context=Context("alice"))
        agent.invoke(turn("Rome"), thread(b), context=Context("bob"))
        agent.invoke(turn("Paris"), thread(a), context=Context("alice"))

        alice, bob = ledger.get(a, owner="alice"), ledger.get(b, owner="bob")
        assert contents(alice) == asked("Oslo", "Paris")
        assert contents(bob) == asked("Rome")
        cl.validate_messages(alice.messages())
        assert alice.info.model == bob.info.model == "gpt-4o"
        # the model saw its thread's window only: alice's earlier turn, none of bob's
        last = [m.content for m in model.seen[-1]]
        assert last[:4] == asked("Oslo") and "Weather in Rome?" not in last
        assert [m.content for m in model.seen[2]][:1] == ["Weather in Rome?"]
        with pytest.raises(cl.ConversationNotFoundError):
            ledger.get(b, owner="alice")


def test_an_owner_cannot_read_or_append_to_another_owners_thread(db_url: str, uid: str) -> None:
    """Bob running with alice's thread id reaches his own conversation of that id."""
    with cl.Ledger(db_url) as ledger:
        model = WeatherModel()
        agent = create_agent(
            model, [get_weather], middleware=[per_user(ledger)], context_schema=Context
        )
        agent.invoke(turn("Oslo"), thread(uid), context=Context("alice"))
        agent.invoke(turn("Rome"), thread(uid), context=Context("bob"))
        assert contents(ledger.get(uid, owner="alice")) == asked("Oslo")
        assert contents(ledger.get(uid, owner="bob")) == asked("Rome")
        bobs_run = [str(m.content) for seen in model.seen[2:] for m in seen]
        assert not any("Oslo" in c for c in bobs_run)


def test_a_run_without_an_owner_or_a_thread_stores_and_sends_nothing(db_url: str, uid: str) -> None:
    with cl.Ledger(db_url) as ledger:
        model = WeatherModel()
        agent = create_agent(
            model, [get_weather], middleware=[per_user(ledger)], context_schema=Context
        )
        # the callable gives None; it fails reading a context the run was not given
        with pytest.raises(cl.InvalidArgumentError, match="owner callable gave None"):
            agent.invoke(turn("Oslo"), thread(uid), context=Context(None))
        with pytest.raises(cl.InvalidArgumentError, match=r"owner.*AttributeError") as caught:
            agent.invoke(turn("Oslo"), thread(uid))
        assert isinstance(caught.value.__cause__, AttributeError)
        alice = f"alice-{uid}"
        with pytest.raises(cl.InvalidArgumentError, match="thread_id"):
            agent.invoke(turn("Oslo"), context=Context(alice))
        assert model.seen == []
        assert ledger.conversations(owner=alice) == []
        with pytest.raises(cl.ConversationNotFoundError):
            ledger.get(uid)


def test_conversation_ids_and_owners_given_other_ways(db_url: str, uid: str) -> None:
    with cl.Ledger(db_url) as ledger:
        agent = create_agent(
            WeatherModel(),
            [get_weather],
            middleware=[
                per_user(ledger, owner="tenant-1", conversation_id=lambda rt: rt.context.user_id)
            ],
            context_schema=Context,
        )
        agent.invoke(turn("Oslo"), context=Context(uid))
        assert contents(ledger.get(uid, owner="tenant-1")) == asked("Oslo")
        with pytest.raises(cl.InvalidArgumentError, match="conversation_id: gave None"):
            agent.invoke(turn("Oslo"), context=Context(None))
        # owner=None: conversations with no owner, said so
        shared = create_agent(
            WeatherModel(), [get_weather], middleware=[per_user(ledger, owner=None)]
        )
        shared.invoke(turn("Rome"), thread(uid))
        assert contents(ledger.get(uid)) == asked("Rome")


def test_the_constructor_refuses_what_would_guess(ledger: cl.Ledger, uid: str) -> None:
    with pytest.raises(cl.InvalidArgumentError, match="owner: is required with a ledger"):
        ChatledgerMiddleware(ledger)
    with pytest.raises(cl.InvalidArgumentError, match="owner: must be"):
        ChatledgerMiddleware(ledger, owner=7)  # type: ignore[arg-type]
    conv = ledger.conversation(uid)
    with pytest.raises(cl.InvalidArgumentError, match="owner: applies to a ledger"):
        ChatledgerMiddleware(conv, owner="alice")
    with pytest.raises(cl.InvalidArgumentError, match="model: applies to a ledger"):
        ChatledgerMiddleware(conv, model="gpt-4o")
    assert "per thread owner='alice'" in repr(ChatledgerMiddleware(ledger, owner="alice"))


def test_two_threads_interleaved_through_one_agent(db_url: str, uid: str) -> None:
    """Two requests at once, each paused inside its tool until the other got there too, for
    three turns each, with a shared checkpointer."""
    both = threading.Barrier(2, timeout=20)

    @tool("get_weather")
    def meeting(city: str) -> str:
        """The current weather in a city."""
        both.wait()
        return f"sunny in {city}"

    cities = {"alice": ["Oslo", "Paris", "Lima"], "bob": ["Rome", "Kyiv", "Oslo"]}
    with cl.Ledger(db_url) as ledger:
        agent = create_agent(
            WeatherModel(),
            [meeting],
            middleware=[per_user(ledger)],
            context_schema=Context,
            checkpointer=InMemorySaver(),
        )

        def serve(user: str) -> None:
            for city in cities[user]:
                agent.invoke(turn(city), thread(f"{uid}-{user}"), context=Context(user))

        with ThreadPoolExecutor(2) as pool:
            list(pool.map(serve, cities))
        for user, asked_for in cities.items():
            conv = ledger.get(f"{uid}-{user}", owner=user)
            assert contents(conv) == asked(*asked_for)
            cl.validate_messages(conv.messages())


@pytest.mark.parametrize("flavour", ["AsyncLedger", "Ledger"])
async def test_async_runs_interleaved_through_one_agent(
    db_url: str, uid: str, flavour: str
) -> None:
    both = asyncio.Barrier(2)

    @tool("get_weather")
    async def meeting(city: str) -> str:
        """The current weather in a city."""
        async with asyncio.timeout(20):
            await both.wait()
        return f"sunny in {city}"

    ledger: cl.Ledger | cl.AsyncLedger = (
        cl.AsyncLedger(db_url) if flavour == "AsyncLedger" else cl.Ledger(db_url)
    )
    try:
        agent = create_agent(
            WeatherModel(), [meeting], middleware=[per_user(ledger)], context_schema=Context
        )

        async def serve(user: str, cities: list[str]) -> None:
            for city in cities:
                config = thread(f"{uid}-{user}")
                if user == "alice":
                    await agent.ainvoke(turn(city), config, context=Context(user))
                else:
                    async for _ in agent.astream(turn(city), config, context=Context(user)):
                        pass

        await asyncio.gather(serve("alice", ["Oslo", "Paris"]), serve("bob", ["Rome", "Kyiv"]))
        users = ("alice", "bob")
        if isinstance(ledger, cl.AsyncLedger):
            stored = [await (await ledger.get(f"{uid}-{u}", owner=u)).messages() for u in users]
            # a sync run cannot wait for an async ledger
            with pytest.raises(cl.InvalidArgumentError, match="AsyncLedger"):
                agent.invoke(turn("Oslo"), thread(uid), context=Context("alice"))
        else:
            stored = [ledger.get(f"{uid}-{u}", owner=u).messages() for u in users]
        assert [[m.get("content") or "" for m in s] for s in stored] == [
            asked("Oslo", "Paris"),
            asked("Rome", "Kyiv"),
        ]
    finally:
        if isinstance(ledger, cl.AsyncLedger):
            await ledger.close()
        else:
            ledger.close()
