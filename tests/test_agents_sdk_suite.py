"""The OpenAI Agents SDK's own session scenarios, run against ChatledgerSession.

Rewritten from the SDK's tests (github.com/openai/openai-agents-python, read at the snapshot
fetched for issue 13; openai-agents 0.24 installed), changed only in how the session is built:
``ChatledgerSession`` on an ``AsyncLedger`` (``NullPool``, so that a session may be used from
several event loops, as ``run_sync`` and the thread tests do) on every backend. The model is
the SDK's shipped ``agents.testing.ScriptedModel``.

Ported (SDK test -> test here):

- tests/memory/test_session.py: basic_functionality, with_explicit_instance and
  different_sessions (x run/run_sync/run_streamed) -> test_runner_*; memory_direct,
  memory_pop_item, pop_different_sessions, get_items_with_limit, unicode_content,
  special_characters_and_sql_injection -> test_direct_*; appends_list_input_by_default,
  callback_prepared_input, callback_repeating_history_does_not_grow_session (x3) ->
  test_runner_list_input / test_runner_input_callback*; concurrent_access -> test_threads_*;
  file_lock_is_shared_across_instances (its behaviour: two sessions of one database written
  at once) -> test_two_sessions_at_once; failed_add_items_releases_write_lock ->
  test_failed_add_leaves_the_database_usable; session_add_items_exception_propagates_in_streamed;
  session_settings_default, _constructor, _constructor_normalizes_dictionary,
  _rejects_unknown_dictionary_fields, get_items_uses_session_settings_limit,
  explicit_limit_overrides_session_settings, runner_with_session_settings_override;
  failed_pop_item_releases_write_lock / failed_clear_session_rolls_back (a failure inside the
  write) -> test_failed_pop_rolls_back; get_items_limit_skips_corrupt_newest_rows (limit
  counts items, reading past rows that hold none: here the closers of unanswered calls).
- tests/memory/test_session_limit.py: all five (x3) -> test_limit_*.
- tests/memory/test_session_context_wrapper.py: retry_rewind_restores_partial_pops (without
  the context wrapper, which ChatledgerSession does not take) -> test_rewind_restores_*.
- tests/test_agent_runner.py: conversation_lock_rewind_skips_when_no_snapshot,
  non_streamed_model_retry_does_not_rewind_committed_session_input, rewind_skips_mismatched_
  tail_suffix, rewind_preserves_unrelated_tail_items_when_server_tracker_cleanup_runs,
  rewind_strips_only_retry_owned_tail_items_before_known_server_item,
  rewind_failure_uses_placeholder_free_shared_logger_message (as: a rewind no longer logs
  "Failed to rewind session item"), and the conversation_locked retry that rewinds the saved
  input (the path that used to leave it stored twice) -> test_rewind_*.
- tests/test_agent_runner_streamed.py: streamed_model_retry_does_not_rewind_committed_session_input.
- tests/test_hitl_session_scenario.py: memory_session_hitl_scenario (the rehydrated session is
  a new ChatledgerSession object on the same conversation) -> test_hitl_scenario.
- tests/extensions/memory/test_sqlalchemy_session.py (the SDK's SQL-backed session):
  pop_from_empty_session, add_empty_items_list, concurrent_pop_item_returns_each_row_once,
  add_items_concurrent_first_access_with_create_tables, _first_write_after_tables_exist,
  _across_sessions_with_shared_engine, _across_from_url_sessions (+ _cross_loop),
  _with_shared_session_cross_loop, add_items_waits_for_transient_sqlite_write_lock,
  get_items_same_timestamp_consistent_order, pop_item_same_timestamp_returns_latest,
  session_settings_from_url (dict) -> test_concurrent_* / test_ordering_*.

Not ported, and why:

- SQLiteSession / AsyncSQLiteSession / SQLAlchemySession internals: close() and closed-state
  errors, worker-thread connections, per-file locks, rollback-failure eviction and quarantined
  connections, engine properties and engine registries. ChatledgerSession owns no connection
  and has no close(); the ledger's engine does.
- Corrupt-row tests (pop_item_skips_corrupt_most_recent, returns_none_after_dropping_only_
  corrupt_rows, the limit ones with corrupt JSON): chatledger validates every message and its
  metadata on write, so no such row can be written through the library.
- Post-commit cancellation (post_commit_cancellation_propagates_after_known_outcome): it pauses
  sqlite3's commit() from a custom connection class; there is no such hook in a ledger's async
  engine. test_cancelled_writes_are_all_or_nothing covers what it guards: a cancelled add, pop
  or clear is applied wholly or not at all.
- session_memory_disabled (no session), SessionSettings.resolve (no session), the sanitize
  and wrapper-passing tests of custom sessions, _await_mutation: they test no session backend.
- hitl_scenario for OpenAIConversationsSession (a server-side session).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, cast

import httpx
import pytest

pytest.importorskip("agents")

from agents import (
    Agent,
    ModelRetrySettings,
    ModelSettings,
    RunConfig,
    RunContextWrapper,
    RunHooks,
    Runner,
    SessionSettings,
    TResponseInputItem,
    function_tool,
    retry_policies,
)
from agents.items import ModelResponse
from agents.run_internal.agent_bindings import bind_public_agent
from agents.run_internal.items import fingerprint_input_item
from agents.run_internal.oai_conversation import OpenAIServerConversationTracker
from agents.run_internal.run_loop import get_new_response
from agents.run_internal.session_persistence import rewind_session_items
from agents.run_internal.tool_use_tracker import AgentToolUseTracker
from agents.testing import ModelCall, ModelStep, ScriptedModel, assistant_message, function_call
from openai import APIConnectionError, BadRequestError
from sqlalchemy.pool import NullPool

import chatledger as cl
from chatledger.integrations import agents as integration
from chatledger.integrations.agents import ChatledgerSession

METHODS = ["run", "run_sync", "run_streamed"]
Items = list[TResponseInputItem]


@pytest.fixture
def led(db_url: str) -> cl.AsyncLedger:
    """The ledger sessions are built on (closed by conftest in the test's own loop)."""
    return cl.AsyncLedger(db_url, poolclass=NullPool)


def user(text: str) -> TResponseInputItem:
    return cast(TResponseInputItem, {"role": "user", "content": text})


def said(text: str) -> TResponseInputItem:
    return cast(TResponseInputItem, {"role": "assistant", "content": text})


def contents(items: Any) -> list[Any]:
    return [i.get("content") for i in items]


def reply_text(item: Any) -> Any:
    content = item.get("content")
    return content[0]["text"] if isinstance(content, list) else content


async def run(method: str, agent: Agent[Any], given: Any, **kwargs: Any) -> Any:
    """Runner.run, Runner.run_sync (in a thread with its own event loop), or a consumed
    Runner.run_streamed."""
    if method == "run":
        return await Runner.run(agent, given, **kwargs)
    if method == "run_sync":

        def in_thread() -> Any:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                return Runner.run_sync(agent, given, **kwargs)
            finally:
                loop.close()

        return await asyncio.to_thread(in_thread)
    result = Runner.run_streamed(agent, given, **kwargs)
    async for _ in result.stream_events():
        pass
    return result


def scripted(*texts: str) -> tuple[ScriptedModel, Agent[Any]]:
    model = ScriptedModel()
    for text in texts:
        model.enqueue([assistant_message(text)])
    return model, Agent(name="test", model=model)


# --- the Runner with a session -----------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
async def test_runner_remembers_across_turns(led: cl.AsyncLedger, uid: str, method: str) -> None:
    session = ChatledgerSession(led, uid)
    model, agent = scripted("San Francisco", "California")
    first = await run(method, agent, "What city is the Golden Gate Bridge in?", session=session)
    assert first.final_output == "San Francisco"
    second = await run(method, agent, "What state is it in?", session=session)
    assert second.final_output == "California"
    assert len(model.calls[-1].input) == 3  # the first turn, then the new question
    assert len(await session.get_items()) == 4


@pytest.mark.parametrize("method", METHODS)
async def test_runner_sessions_stay_apart(led: cl.AsyncLedger, uid: str, method: str) -> None:
    one, two = ChatledgerSession(led, f"{uid}-1"), ChatledgerSession(led, f"{uid}-2")
    model, agent = scripted("I like cats", "I like dogs", "Yes, you mentioned cats")
    await run(method, agent, "I like cats", session=one)
    await run(method, agent, "I like dogs", session=two)
    result = await run(method, agent, "What did I say I like?", session=one)
    assert result.final_output == "Yes, you mentioned cats"
    assert "I like dogs" not in str(model.calls[-1].input)
    assert contents(model.calls[-1].input)[0] == "I like cats"


@pytest.mark.parametrize("method", METHODS)
async def test_runner_list_input_is_appended(led: cl.AsyncLedger, uid: str, method: str) -> None:
    session = ChatledgerSession(led, uid)
    earlier = [user("Earlier message"), said("Saved reply")]
    await session.add_items(earlier)
    model, agent = scripted("This should run")
    await run(method, agent, [user("Test message")], session=session)
    assert model.calls[-1].input == [*earlier, user("Test message")]


@pytest.mark.parametrize("method", METHODS)
async def test_runner_input_callback(led: cl.AsyncLedger, uid: str, method: str) -> None:
    session = ChatledgerSession(led, uid)
    earlier = [user("Hello there."), said("Hi, I'm here to assist you.")]
    await session.add_items(earlier)

    def users_only(history: Items, new: Items) -> Items:
        return [i for i in history if i.get("role") == "user"] + new

    model, agent = scripted("I'm gpt-4o")
    config = RunConfig(session_input_callback=users_only)
    await run(method, agent, [user("What your name?")], session=session, run_config=config)
    assert model.calls[-1].input == [earlier[0], user("What your name?")]


@pytest.mark.parametrize("method", METHODS)
async def test_runner_input_callback_repeating_history(
    led: cl.AsyncLedger, uid: str, method: str
) -> None:
    session = ChatledgerSession(led, uid)

    def repeat_first(history: Items, new: Items) -> Items:
        return [*history, history[0], *new] if history else new

    _, agent = scripted("assistant 0", "assistant 1", "assistant 2")
    config = RunConfig(session_input_callback=repeat_first)
    for turn in range(3):
        await run(method, agent, f"user {turn}", session=session, run_config=config)
    stored = await session.get_items()
    assert [i.get("content") for i in stored if i.get("role") == "user"] == [
        "user 0",
        "user 1",
        "user 2",
    ]
    assert len(stored) == 6


async def test_add_items_failure_propagates_in_streamed(led: cl.AsyncLedger, uid: str) -> None:
    session = ChatledgerSession(led, uid)

    async def failing(items: Items) -> None:
        raise RuntimeError("Simulated session.add_items failure")

    session.add_items = failing  # type: ignore[method-assign]
    _, agent = scripted("This should not be reached")
    result = Runner.run_streamed(agent, "Hello", session=session)

    async def consume() -> None:
        async for _ in result.stream_events():
            pass

    with pytest.raises(RuntimeError, match=r"Simulated session\.add_items failure"):
        await asyncio.wait_for(consume(), timeout=5.0)


# --- session_settings and limits ----------------------------------------------------------------


def test_session_settings(led: cl.AsyncLedger) -> None:
    default = ChatledgerSession(led, "s").session_settings
    assert isinstance(default, SessionSettings) and default.limit is None
    given = ChatledgerSession(led, "s", session_settings=SessionSettings(limit=5))
    assert given.session_settings is not None and given.session_settings.limit == 5
    as_dict = ChatledgerSession(led, "s", session_settings={"limit": 0})
    assert isinstance(as_dict.session_settings, SessionSettings)
    assert as_dict.session_settings.limit == 0
    assert as_dict.session_settings.resolve({"limit": 4}).limit == 4
    with pytest.raises(TypeError, match="Unknown session settings: limitt"):
        ChatledgerSession(led, "s", session_settings={"limitt": 1})


@pytest.mark.parametrize("settings", [SessionSettings(limit=3), {"limit": 3}])
async def test_settings_limit_is_the_default(led: cl.AsyncLedger, uid: str, settings: Any) -> None:
    session = ChatledgerSession(led, uid, session_settings=settings)
    await session.add_items([user(f"Message {i}") for i in range(10)])
    assert contents(await session.get_items()) == ["Message 7", "Message 8", "Message 9"]
    assert contents(await session.get_items(limit=2)) == ["Message 8", "Message 9"]


async def test_runner_settings_override(led: cl.AsyncLedger, uid: str) -> None:
    session = ChatledgerSession(led, uid, session_settings=SessionSettings(limit=100))
    await session.add_items([user(f"Turn {i}") for i in range(10)])
    model, agent = scripted("Got it")
    config = RunConfig(session_settings=SessionSettings(limit=2))
    await Runner.run(agent, "New question", session=session, run_config=config)
    assert contents(model.calls[-1].input) == ["Turn 8", "Turn 9", "New question"]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("limit", [2, 0, None, 100])
async def test_limit_of_a_run(
    led: cl.AsyncLedger, uid: str, method: str, limit: int | None
) -> None:
    session = ChatledgerSession(led, uid)
    model, agent = scripted(*(f"Reply {i}" for i in range(1, 5)))
    for i in range(1, 4):
        await run(method, agent, f"Message {i}", session=session)
    assert len(await session.get_items()) == 6
    config = RunConfig(session_settings=SessionSettings(limit=limit))
    await run(method, agent, "Message 4", session=session, run_config=config)
    sent = model.calls[-1].input
    history = {2: 2, 0: 0, None: 6, 100: 6}[limit]
    assert len(sent) == history + 1
    assert sent[-1].get("content") == "Message 4"
    if history:
        assert reply_text(sent[history - 1]) == "Reply 3"
        assert sent[history - 2].get("content") == "Message 3"


@pytest.mark.parametrize("method", METHODS)
async def test_limit_drops_an_output_whose_call_it_cut(
    led: cl.AsyncLedger, uid: str, method: str
) -> None:
    session = ChatledgerSession(led, uid)
    history = cast(
        Items,
        [
            user("What is the weather?"),
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "get_weather",
                "arguments": "{}",
            },
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "It is sunny.", "annotations": []}],
            },
        ],
    )
    await session.add_items(history)
    assert await session.get_items(limit=2) == history[-2:]
    model, agent = scripted("Tomorrow is sunny too.")
    config = RunConfig(session_settings=SessionSettings(limit=2))
    await run(method, agent, "What about tomorrow?", session=session, run_config=config)
    assert model.calls[-1].input == [history[-1], user("What about tomorrow?")]


async def test_limit_counts_items_past_rows_holding_none(led: cl.AsyncLedger, uid: str) -> None:
    session = ChatledgerSession(led, uid)
    call = {"type": "function_call", "call_id": "a", "name": "f", "arguments": "{}"}
    await session.add_items([user("valid 0"), cast(TResponseInputItem, call)])
    await session.add_items([user("valid 2")])  # closes call a: a message with no item
    assert await session.get_items(limit=2) == [call, user("valid 2")]


# --- the session's own operations ---------------------------------------------------------------


async def test_direct_add_get_pop_clear(led: cl.AsyncLedger, uid: str) -> None:
    session = ChatledgerSession(led, uid)
    assert await session.pop_item() is None
    await session.add_items([])
    assert await session.get_items() == []
    items = [user("Hello"), said("Hi there!"), user("How are you?")]
    await session.add_items(items)
    assert await session.get_items() == items
    assert [await session.pop_item() for _ in range(4)] == [*reversed(items), None]
    assert await session.get_items() == []
    await session.add_items(items)
    await session.clear_session()
    assert await session.get_items() == []


async def test_direct_pop_touches_one_session(led: cl.AsyncLedger, uid: str) -> None:
    one, two = ChatledgerSession(led, f"{uid}-1"), ChatledgerSession(led, f"{uid}-2")
    await one.add_items([user("Session 1 message")])
    await two.add_items([user("Session 2 message 1"), user("Session 2 message 2")])
    assert await two.pop_item() == user("Session 2 message 2")
    assert await one.get_items() == [user("Session 1 message")]
    assert await two.get_items() == [user("Session 2 message 1")]


async def test_direct_get_items_with_limit(led: cl.AsyncLedger, uid: str) -> None:
    session = ChatledgerSession(led, uid)
    items = [x for i in range(1, 4) for x in (user(f"Message {i}"), said(f"Response {i}"))]
    await session.add_items(items)
    for limit, want in ((None, items), (2, items[-2:]), (4, items[-4:]), (10, items), (0, [])):
        assert await session.get_items(limit) == want


async def test_direct_unicode_and_sql_looking_text(led: cl.AsyncLedger, uid: str) -> None:
    session = ChatledgerSession(led, uid)
    items = [
        user("こんにちは"),
        said("😊👍"),
        user("Привет"),
        user("O'Reilly"),
        said("DROP TABLE sessions;"),
        user('"SELECT * FROM users WHERE name = "admin";"'),
        said("Robert'); DROP TABLE students;--"),
    ]
    await session.add_items(items)
    assert await session.get_items() == items


async def test_ordering_of_one_batch(led: cl.AsyncLedger, uid: str) -> None:
    """Items written in the same instant come back in the order added; pop takes the last."""
    session = ChatledgerSession(led, uid)
    items = [user(f"m{i}") if i % 2 else said(f"m{i}") for i in range(40)]
    await session.add_items(items)
    assert await session.get_items() == items
    assert await session.get_items(limit=3) == items[-3:]
    assert await session.pop_item() == items[-1]


async def test_failed_add_leaves_the_database_usable(led: cl.AsyncLedger, uid: str) -> None:
    session = ChatledgerSession(led, uid)
    with pytest.raises(cl.ChatLedgerError):
        await session.add_items([cast(TResponseInputItem, {"role": "user", "content": object()})])
    other = ChatledgerSession(led, f"{uid}-other")  # another writer is not blocked
    await asyncio.wait_for(other.add_items([user("probe")]), timeout=5)
    await session.add_items([user("after failure")])
    assert await session.get_items() == [user("after failure")]


async def test_failed_pop_rolls_back(
    led: cl.AsyncLedger, uid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure after the popped message was cut, before the rest is stored again, leaves
    the history as it was: the pop is one transaction."""
    session = ChatledgerSession(led, uid)
    call = {"type": "function_call", "call_id": "a", "name": "f", "arguments": "{}"}
    items = [user("hi"), said("Calling."), cast(TResponseInputItem, call)]
    await session.add_items(items)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(integration.msg_store, "append", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        await session.pop_item()
    monkeypatch.undo()
    assert await session.get_items() == items
    assert await session.pop_item() == call
    await asyncio.wait_for(session.add_items([call]), timeout=5)  # nothing left locked
    assert await session.get_items() == items


async def test_cancelled_writes_are_all_or_nothing(led: cl.AsyncLedger, uid: str) -> None:
    """An add, pop or clear cancelled at any point is applied wholly or not at all, and the
    session goes on working."""
    session = ChatledgerSession(led, uid)
    writes: list[tuple[Any, Any]] = [
        (lambda: session.add_items([user("more")]), lambda b: [*b, user("more")]),
        (session.pop_item, lambda b: b[:-1]),
        (session.clear_session, lambda b: []),
    ]
    for steps in range(0, 40, 4):
        await session.clear_session()
        await session.add_items([user("q"), said("a")])
        for write, effect in writes:
            before = await session.get_items()
            task = asyncio.ensure_future(write())
            for _ in range(steps):
                await asyncio.sleep(0)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            assert await session.get_items() in (before, effect(before))


# --- the Runner's retry and rewind path ---------------------------------------------------------


def locked() -> BadRequestError:
    request = httpx.Request("POST", "https://example.com")
    body = {"error": {"code": "conversation_locked", "message": "locked"}}
    response = httpx.Response(400, request=request, json=body)
    error = BadRequestError("locked", response=response, body=body["error"])
    error.code = "conversation_locked"
    return error


async def new_response(
    model: ScriptedModel, session: ChatledgerSession, given: Items, **kwargs: Any
) -> Any:
    return await get_new_response(
        bindings=bind_public_agent(Agent(name="test", model=model)),
        system_prompt=None,
        input=given,
        output_schema=None,
        all_tools=[],
        handoffs=[],
        hooks=RunHooks(),
        context_wrapper=RunContextWrapper(context={}),
        run_config=RunConfig(),
        tool_use_tracker=AgentToolUseTracker(),
        prompt_config=None,
        session=session,
        **kwargs,
    )


async def test_rewind_on_conversation_locked_retry(
    led: cl.AsyncLedger, uid: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The retried request's saved input is popped once, so it is not stored twice."""
    session = ChatledgerSession(led, uid)
    previous, new = user("previous"), user("new question")
    await session.add_items([previous, new])
    model = ScriptedModel()
    model.extend([locked(), [assistant_message("ok")]])
    tracker = OpenAIServerConversationTracker(conversation_id="conv_1")
    with caplog.at_level(logging.WARNING, logger="openai.agents"):
        result = await new_response(
            model,
            session,
            [previous, new],
            server_conversation_tracker=tracker,
            session_items_to_rewind=[new],
        )
    assert isinstance(result, ModelResponse)
    assert len(model.calls) == 2
    assert "Failed to rewind session item" not in caplog.text
    assert await session.get_items() == [previous]


async def test_rewind_skips_when_no_snapshot(led: cl.AsyncLedger, uid: str) -> None:
    session = ChatledgerSession(led, uid)
    old = cast(TResponseInputItem, {"id": "old", "type": "message", "role": "user", "content": ""})
    await session.add_items([old])
    model = ScriptedModel()
    model.extend([locked(), [assistant_message("ok")]])
    result = await new_response(
        model, session, [old], server_conversation_tracker=None, session_items_to_rewind=[]
    )
    assert isinstance(result, ModelResponse)
    assert await session.get_items() == [old]


async def test_rewind_of_matching_tail(led: cl.AsyncLedger, uid: str) -> None:
    session = ChatledgerSession(led, uid)
    items = [user("hello"), said("hi")]
    await session.add_items([user("keep"), *items])
    await rewind_session_items(session, items)
    assert await session.get_items() == [user("keep")]


async def test_rewind_skips_a_mismatched_tail(led: cl.AsyncLedger, uid: str) -> None:
    session = ChatledgerSession(led, uid)
    target, unrelated = user("target"), user("unrelated tail item")
    await session.add_items([target, unrelated])
    await rewind_session_items(session, [target])
    assert await session.get_items() == [target, unrelated]


def server_tail() -> tuple[TResponseInputItem, OpenAIServerConversationTracker]:
    known = {"id": "msg_server_1", "type": "message", "role": "assistant", "content": "server"}
    tracker = OpenAIServerConversationTracker()
    tracker.server_item_ids.add("msg_server_1")
    return cast(TResponseInputItem, known), tracker


async def test_rewind_keeps_unrelated_tail_items(led: cl.AsyncLedger, uid: str) -> None:
    session = ChatledgerSession(led, uid)
    known, tracker = server_tail()
    await session.add_items([known, user("unrelated tail item"), user("target")])
    await rewind_session_items(session, [user("target")], tracker)
    assert await session.get_items() == [known, user("unrelated tail item")]


async def test_rewind_strips_retry_owned_items(led: cl.AsyncLedger, uid: str) -> None:
    session = ChatledgerSession(led, uid)
    known, tracker = server_tail()
    owned = user("retry-owned local item")
    fingerprint = fingerprint_input_item(owned)
    assert fingerprint is not None
    tracker.sent_item_fingerprints.add(fingerprint)
    await session.add_items([known, owned, user("target")])
    await rewind_session_items(session, [user("target")], tracker)
    assert await session.get_items() == [known]


async def test_rewind_restores_partial_pops(
    led: cl.AsyncLedger, uid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second pop fails: the SDK adds the first one back, and the items are as before
    (here the popped item is one of two held by one assistant message)."""
    session = ChatledgerSession(led, uid)
    calls = [{"type": "function_call", "call_id": c, "name": "f", "arguments": "{}"} for c in "ab"]
    items = cast(Items, [user("keep"), said("Two calls."), *calls])
    await session.add_items(items)
    stored = await (await session.conversation()).messages()
    real, pops = session.pop_item, []

    async def second_fails() -> TResponseInputItem | None:
        pops.append(1)
        if len(pops) == 2:
            raise RuntimeError("pop failed")
        return await real()

    monkeypatch.setattr(session, "pop_item", second_fails)
    await rewind_session_items(session, items[2:])
    assert len(pops) == 2
    assert await session.get_items() == items
    assert await (await session.conversation()).messages() == stored


@pytest.mark.parametrize("streamed", [False, True])
async def test_network_retry_keeps_the_committed_input(
    led: cl.AsyncLedger, uid: str, streamed: bool
) -> None:
    session = ChatledgerSession(led, uid)
    await session.add_items([user("previous")])
    model = ScriptedModel()
    error = APIConnectionError(message="connection error", request=httpx.Request("POST", "x:"))
    model.extend([error, [assistant_message("done")]])
    retry = ModelRetrySettings(max_retries=1, policy=retry_policies.network_error())
    agent = Agent(name="test", model=model, model_settings=ModelSettings(retry=retry))
    result = await run("run_streamed" if streamed else "run", agent, "test", session=session)
    assert result.final_output == "done"
    saved = await session.get_items()
    assert [i.get("role") for i in saved] == ["user", "user", "assistant"]
    assert contents(saved[:2]) == ["previous", "test"]


# --- human in the loop --------------------------------------------------------------------------

REJECTED = "Tool execution was not approved."
runs: dict[str, int] = {}


@function_tool(name_override="approved_echo", needs_approval=True)
def approved_echo(query: str) -> str:
    """Echoes back the provided query after approval."""
    runs["approved_echo"] = runs.get("approved_echo", 0) + 1
    return f"approved:{query}"


@function_tool(name_override="approved_note", needs_approval=True)
def approved_note(query: str) -> str:
    """Records the provided query after approval."""
    runs["approved_note"] = runs.get("approved_note", 0) + 1
    return f"approved_note:{query}"


def hitl_model() -> ScriptedModel:
    count = 0

    def respond(call: ModelCall) -> Any:
        nonlocal count
        given = call.input if isinstance(call.input, list) else []
        if any(i.get("output") == REJECTED for i in given if isinstance(i, dict)):
            return [assistant_message(REJECTED)]
        count += 1
        asked = next(i["content"] for i in reversed(given) if i.get("role") == "user")
        tool = call.model_settings.tool_choice
        return [function_call(str(tool), {"query": asked}, call_id=f"call_{count}")]

    return ScriptedModel([ModelStep.respond(respond) for _ in range(4)])


async def test_hitl_scenario(led: cl.AsyncLedger, uid: str) -> None:
    runs.clear()
    model = hitl_model()
    steps = [
        ("Fetch profile for customer 104.", "approved_echo", True, "approved:"),
        ("Update note for customer 104.", "approved_note", True, "approved_note:"),
        ("Delete note for customer 104.", "approved_echo", False, None),
    ]
    for turn, (message, tool, approve, prefix) in enumerate(steps, start=1):
        session = ChatledgerSession(led, uid)  # rehydrated: a new object, the same history
        agent = Agent(
            name=f"turn {turn}",
            instructions=f"Always call {tool} before responding.",
            model=model,
            tools=[approved_echo, approved_note],
            model_settings=ModelSettings(tool_choice=tool),
            tool_use_behavior="stop_on_first_tool",
        )
        first = await Runner.run(agent, message, session=session)
        assert len(first.interruptions) == 1
        approval = first.interruptions[0]
        state = first.to_state()
        (state.approve if approve else state.reject)(approval)
        resumed = await Runner.run(agent, state, session=session)
        expected = f"{prefix}{message}" if prefix else REJECTED
        assert resumed.interruptions == [] and resumed.final_output == expected

        items = cast(list[dict[str, Any]], await session.get_items())
        assert sum(i.get("role") == "user" for i in items) == turn
        calls = [i for i in items if i.get("type") == "function_call"]
        outputs = [i for i in items if i.get("type") == "function_call_output"]
        assert len(calls) == len(outputs) == turn
        raw = approval.raw_item
        call_id = raw.get("call_id") if isinstance(raw, dict) else getattr(raw, "call_id", None)
        assert (calls[-1]["name"], calls[-1]["call_id"], outputs[-1]["call_id"]) == (
            tool,
            call_id,
            call_id,
        )
        output = outputs[-1]["output"]
        assert (output if isinstance(output, str) else output[0]["text"]) == expected
    assert runs == {"approved_echo": 1, "approved_note": 1}


# --- concurrency --------------------------------------------------------------------------------


async def test_concurrent_pops_take_each_item_once(led: cl.AsyncLedger, uid: str) -> None:
    sessions = [ChatledgerSession(led, uid) for _ in range(4)]
    items = [user(f"m{i}") for i in range(12)]
    await sessions[0].add_items(items)
    popped = await asyncio.gather(*(s.pop_item() for s in sessions for _ in range(4)))
    assert sorted(contents(p for p in popped if p is not None)) == sorted(contents(items))
    assert popped.count(None) == 4
    assert await sessions[0].get_items() == []


@pytest.mark.parametrize("many_sessions", [False, True])
async def test_concurrent_first_writes(led: cl.AsyncLedger, uid: str, many_sessions: bool) -> None:
    """25 first writes at once, to one new session or to two (one ledger, one loop)."""
    sent = [f"msg-{i}" for i in range(25)]
    ids = [f"{uid}-{i % 2 if many_sessions else 0}" for i in range(25)]
    pairs = zip(ids, sent, strict=True)
    await asyncio.gather(*(ChatledgerSession(led, s).add_items([user(m)]) for s, m in pairs))
    got = [*await ChatledgerSession(led, f"{uid}-0").get_items()]
    if many_sessions:
        got += await ChatledgerSession(led, f"{uid}-1").get_items()
    assert sorted(contents(got)) == sorted(sent)


async def test_two_sessions_at_once(led: cl.AsyncLedger, db_url: str, uid: str) -> None:
    other_ledger = cl.AsyncLedger(db_url)
    try:
        one, two = ChatledgerSession(led, f"{uid}-a"), ChatledgerSession(other_ledger, f"{uid}-b")
        await asyncio.gather(one.add_items([user("one")]), two.add_items([user("two")]))
        assert await one.get_items() == [user("one")]
        assert await two.get_items() == [user("two")]
    finally:
        await other_ledger.close()


def in_threads(n: int, body: Any) -> list[str]:
    """Run ``body(i)`` in n threads, each with its own event loop, started together."""
    barrier, failures = threading.Barrier(n), []

    def worker(i: int) -> None:
        try:
            barrier.wait()
            asyncio.run(asyncio.wait_for(body(i), timeout=30))
        except BaseException as exc:
            failures.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return failures


async def test_threads_share_one_session(led: cl.AsyncLedger, uid: str) -> None:
    """One session object (one ledger) written from 5 threads, each with its own loop."""
    session = ChatledgerSession(led, uid)
    await session.get_items()  # the ledger has started: see test_integration_agents for a cold one

    async def add(i: int) -> None:
        await session.add_items([user(f"Message {i}")])

    assert await asyncio.to_thread(in_threads, 5, add) == []
    assert sorted(contents(await session.get_items())) == sorted(f"Message {i}" for i in range(5))


async def test_threads_each_with_a_ledger(db_url: str, uid: str) -> None:
    async def add(i: int) -> None:
        async with cl.AsyncLedger(db_url) as own:
            session = ChatledgerSession(own, f"{uid}-{i}")
            await session.add_items([user(f"m{i}")])
            assert await session.get_items() == [user(f"m{i}")]

    assert await asyncio.to_thread(in_threads, 4, add) == []


async def test_waits_for_a_transient_sqlite_lock(
    led: cl.AsyncLedger, backend: str, uid: str
) -> None:
    if backend != "sqlite":
        pytest.skip("SQLite's database-wide write lock")
    session = ChatledgerSession(led, uid)
    await session.get_items()
    async with led.engine.connect() as conn:
        await conn.exec_driver_sql("BEGIN IMMEDIATE")
        blocked = asyncio.ensure_future(session.add_items([user("after-lock")]))
        await asyncio.sleep(0.1)
        assert not blocked.done()
        await conn.rollback()
    await asyncio.wait_for(blocked, timeout=5)
    assert await session.get_items() == [user("after-lock")]
