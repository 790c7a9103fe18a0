"""A checkpointer keeps a thread's state by its id alone: another owner (or another
conversation) sending that thread id gets the state, and the middleware must refuse it rather
than store it in the sender's conversation or show it to the sender's model."""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("langchain.agents")

from langchain.agents import create_agent
from langgraph.checkpoint.memory import InMemorySaver

import chatledger as cl
from chatledger.integrations.langchain_agents import STAMP_KEY, ChatledgerMiddleware
from chatledger.params import conversation_cache_key
from test_integration_langchain_agents_threads import (
    Context,
    WeatherModel,
    asked,
    contents,
    get_weather,
    per_user,
    thread,
    turn,
)

REFUSED = "holds messages of another conversation"


def shared_agent(ledger: cl.Ledger | cl.AsyncLedger, model: WeatherModel) -> Any:
    return create_agent(
        model,
        [get_weather],
        middleware=[per_user(ledger)],
        context_schema=Context,
        checkpointer=InMemorySaver(),
    )


def state_contents(agent: Any, thread_id: str) -> list[Any]:
    return [m.content for m in agent.get_state(thread(thread_id)).values["messages"]]


@pytest.mark.parametrize("durability", ["async", "exit"])
def test_another_owner_sending_a_checkpointed_thread_id_is_refused(
    db_url: str, uid: str, durability: Any
) -> None:
    with cl.Ledger(db_url) as ledger:
        model = WeatherModel()
        agent = shared_agent(ledger, model)
        agent.invoke(turn("Oslo"), thread(uid), context=Context(f"alice-{uid}"))
        calls = len(model.seen)

        with pytest.raises(cl.InvalidArgumentError, match=REFUSED):
            agent.invoke(
                turn("Rome"), thread(uid), context=Context(f"bob-{uid}"), durability=durability
            )
        assert len(model.seen) == calls  # the model was not called
        assert ledger.conversations(owner=f"bob-{uid}") == []
        assert contents(ledger.get(uid, owner=f"alice-{uid}")) == asked("Oslo")
        # bob's input was taken back out of alice's state
        assert "Weather in Rome?" not in state_contents(agent, uid)

        # alice continues: her stamps match, and nothing of bob's reaches her conversation
        agent.invoke(turn("Paris"), thread(uid), context=Context(f"alice-{uid}"))
        assert contents(ledger.get(uid, owner=f"alice-{uid}")) == asked("Oslo", "Paris")
        assert not any("Rome" in str(m.content) for seen in model.seen for m in seen)
        with pytest.raises(cl.InvalidArgumentError, match=REFUSED):
            agent.invoke(turn("Rome"), thread(uid), context=Context(f"bob-{uid}"))


def test_the_stamp_stays_in_the_state(db_url: str, uid: str) -> None:
    """Every state message carries its conversation's key; neither the model nor the store
    gets it."""
    with cl.Ledger(db_url) as ledger:
        model = WeatherModel()
        agent = shared_agent(ledger, model)
        state = agent.invoke(turn("Oslo"), thread(uid), context=Context(f"alice-{uid}"))
        agent.invoke(turn("Paris"), thread(uid), context=Context(f"alice-{uid}"))

        key = conversation_cache_key(f"alice-{uid}", uid)
        messages = agent.get_state(thread(uid)).values["messages"]
        assert len(messages) == 8
        assert [m.response_metadata.get(STAMP_KEY) for m in messages] == [key] * 8
        assert state["messages"][-1].response_metadata[STAMP_KEY] == key
        assert all(STAMP_KEY not in m.response_metadata for seen in model.seen for m in seen)
        conv = ledger.get(uid, owner=f"alice-{uid}")
        stored = json.dumps([conv.messages(), [r.metadata for r in conv.records()]])
        assert key not in stored and STAMP_KEY not in stored


def test_a_checkpoint_from_before_stamps_continues(db_url: str, uid: str) -> None:
    with cl.Ledger(db_url) as ledger:
        model = WeatherModel()
        agent = shared_agent(ledger, model)
        agent.invoke(turn("Oslo"), thread(uid), context=Context(f"alice-{uid}"))
        # the checkpoint as an earlier chatledger left it: the same messages, unstamped
        messages = agent.get_state(thread(uid)).values["messages"]
        assert all(STAMP_KEY in m.response_metadata for m in messages)
        bare = [
            m.model_copy(
                update={
                    "response_metadata": {
                        k: v for k, v in m.response_metadata.items() if k != STAMP_KEY
                    }
                }
            )
            for m in messages
        ]
        agent.update_state(thread(uid), {"messages": bare})
        assert all(
            STAMP_KEY not in m.response_metadata
            for m in agent.get_state(thread(uid)).values["messages"]
        )

        agent.invoke(turn("Paris"), thread(uid), context=Context(f"alice-{uid}"))
        assert contents(ledger.get(uid, owner=f"alice-{uid}")) == asked("Oslo", "Paris")
        key = conversation_cache_key(f"alice-{uid}", uid)
        after = agent.get_state(thread(uid)).values["messages"]
        assert [m.response_metadata.get(STAMP_KEY) for m in after] == [key] * 8


@pytest.mark.parametrize("flavour", ["AsyncLedger", "Ledger"])
async def test_async_runs_are_refused_too(db_url: str, uid: str, flavour: str) -> None:
    ledger: cl.Ledger | cl.AsyncLedger = (
        cl.AsyncLedger(db_url) if flavour == "AsyncLedger" else cl.Ledger(db_url)
    )
    try:
        model = WeatherModel()
        agent = shared_agent(ledger, model)
        await agent.ainvoke(turn("Oslo"), thread(uid), context=Context(f"alice-{uid}"))
        calls = len(model.seen)
        with pytest.raises(cl.InvalidArgumentError, match=REFUSED):
            await agent.ainvoke(turn("Rome"), thread(uid), context=Context(f"bob-{uid}"))
        assert len(model.seen) == calls
        await agent.ainvoke(turn("Paris"), thread(uid), context=Context(f"alice-{uid}"))
        if isinstance(ledger, cl.AsyncLedger):
            assert await ledger.conversations(owner=f"bob-{uid}") == []
            stored = await (await ledger.get(uid, owner=f"alice-{uid}")).messages()
        else:
            assert ledger.conversations(owner=f"bob-{uid}") == []
            stored = ledger.get(uid, owner=f"alice-{uid}").messages()
        assert [m.get("content") or "" for m in stored] == asked("Oslo", "Paris")
    finally:
        if isinstance(ledger, cl.AsyncLedger):
            await ledger.close()
        else:
            ledger.close()


def test_one_conversation_per_middleware_is_protected_too(ledger: cl.Ledger, uid: str) -> None:
    """Two agents, each kept in its own conversation, sharing one checkpointer."""
    saver, model = InMemorySaver(), WeatherModel()
    first, second = ledger.conversation(f"{uid}-1"), ledger.conversation(f"{uid}-2")
    one, two = (
        create_agent(model, [get_weather], middleware=[ChatledgerMiddleware(c)], checkpointer=saver)
        for c in (first, second)
    )
    one.invoke(turn("Oslo"), thread(uid))
    calls = len(model.seen)
    with pytest.raises(cl.InvalidArgumentError, match=REFUSED):
        two.invoke(turn("Rome"), thread(uid))
    assert len(model.seen) == calls
    assert second.messages() == []
    one.invoke(turn("Paris"), thread(uid))
    assert contents(first) == asked("Oslo", "Paris")
