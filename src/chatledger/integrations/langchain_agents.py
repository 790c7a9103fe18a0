"""LangChain 1.x agent middleware that keeps the agent's history in chatledger.

:class:`ChatledgerMiddleware` is an ``AgentMiddleware`` for ``create_agent``::

    from chatledger.integrations.langchain_agents import ChatledgerMiddleware

    conv = ledger.conversation("support-42", owner="user-7")
    middleware = ChatledgerMiddleware(conv, cl.TokenBudget(8000))
    agent = create_agent(model, tools, middleware=[middleware])
    agent.invoke({"messages": [HumanMessage("Hi")]})

Before each model call (``wrap_model_call``) it stores the state's messages that are not stored
yet (the new user input, the tool results of the previous step), then hands the model
chatledger's window of the conversation (``request.override(messages=...)``) instead of the
state's messages; after the call it stores the model's reply. ``after_agent`` stores what a run
ends with that no model call saw (a ``return_direct`` tool's result). The graph state itself is
left as LangChain builds it: only what the model sees changes. When a run failed inside a
tool, its reply with the calls is already stored; the next run first closes the calls still
open with a tool message saying no result was recorded, as the API requires.

Each message is stored once. What is stored is recognised by the message ``id`` (LangGraph's
``add_messages`` gives every state message one; a reply without one is given one before it
enters the state), kept in the stored message's ``metadata["langchain"]`` as
:mod:`chatledger.integrations.langchain` keeps it, so the same conversation continues across
invocations, with or without a checkpointer, and across processes: when the conversation moved
since the middleware last wrote (a new middleware, another worker serving the same thread), it
reads the ids of the conversation's newest messages, as many as the state holds.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, cast

from chatledger.errors import InvalidArgumentError, MissingDependencyError

try:
    from langchain.agents.middleware import AgentMiddleware, AgentState, ModelRequest
    from langchain.agents.middleware.types import ExtendedModelResponse, ModelResponse
    from langchain_core.messages import AIMessage, AnyMessage, BaseMessage
    from langgraph.runtime import Runtime
except ImportError as exc:  # the adapter needs the framework it adapts
    raise MissingDependencyError(
        exc.name or "langchain", "chatledger.integrations.langchain_agents"
    ) from None

from chatledger.conversation import AsyncConversation, Conversation
from chatledger.integrations.langchain import (
    META_KEY,
    StrategyArg,
    from_openai,
    to_openai,
)
from chatledger.integrations.window_pairs import (
    awindow_pairs,
    close_unanswered,
    window_pairs,
)
from chatledger.rows import StoredMessage

__all__ = ["ChatledgerMiddleware"]

ModelResult = ModelResponse[Any] | AIMessage | ExtendedModelResponse[Any]


def _stored_id(record: StoredMessage) -> str | None:
    extras = record.metadata.get(META_KEY) if isinstance(record.metadata, Mapping) else None
    value = extras.get("id") if isinstance(extras, Mapping) else None
    return value if isinstance(value, str) else None


def _with_ids(response: ModelResult) -> ModelResult:
    """The model's reply with an id on every message, so the state and the store agree on
    which message is which (``add_messages`` would give it a different one)."""

    def named(messages: Sequence[BaseMessage]) -> list[BaseMessage]:
        return [m if m.id else m.model_copy(update={"id": str(uuid.uuid4())}) for m in messages]

    if isinstance(response, AIMessage):
        return named([response])[0]  # type: ignore[return-value]
    if isinstance(response, ExtendedModelResponse):
        inner = response.model_response
        inner = ModelResponse(named(inner.result), inner.structured_response)
        return ExtendedModelResponse(inner, response.command)
    return ModelResponse(named(response.result), response.structured_response)


def _replies(response: ModelResult) -> list[BaseMessage]:
    if isinstance(response, AIMessage):
        return [response]
    if isinstance(response, ExtendedModelResponse):
        return list(response.model_response.result)
    return list(response.result)


class ChatledgerMiddleware(AgentMiddleware):
    """Stores a ``create_agent`` run's messages in a chatledger conversation and gives the
    model the conversation's window.

    ``conversation`` is a :class:`~chatledger.Conversation` (sync and async agents; the async
    hooks run it in a worker thread) or an :class:`~chatledger.AsyncConversation` (async
    agents only: ``ainvoke``/``astream``). ``strategy`` is what the model sees
    (``cl.TokenBudget(8000)``, ``cl.StablePrefix(...)``, a list with ``cl.Summarize`` first);
    None sends the whole stored history. The agent's ``system_prompt`` is sent ahead of the
    window and is not stored: leave room for it in the budget (or give the conversation the
    system prompt instead, and the agent none).
    """

    def __init__(
        self,
        conversation: Conversation | AsyncConversation,
        strategy: StrategyArg = None,
    ) -> None:
        super().__init__()
        if not isinstance(conversation, (Conversation, AsyncConversation)):
            raise InvalidArgumentError(
                "conversation",
                "must be a chatledger Conversation or AsyncConversation, "
                f"got {type(conversation).__name__}",
            )
        self.conversation = conversation
        self.strategy = strategy
        self._stored: set[str] = set()  # ids of stored messages
        self._seq: int | None = None  # the conversation's last_seq that _stored is complete to

    def __repr__(self) -> str:
        return f"<ChatledgerMiddleware {self.conversation.id!r} strategy={self.strategy!r}>"

    # --- which messages are new -------------------------------------------------------------

    def _unstored(self, messages: Sequence[BaseMessage]) -> list[BaseMessage]:
        """The messages after the newest one known to be stored."""
        start = len(messages)
        while start > 0 and messages[start - 1].id not in self._stored:
            start -= 1
        return list(messages[start:])

    def _remember(self, records: Sequence[StoredMessage], seq: int) -> None:
        self._stored |= {i for i in map(_stored_id, records) if i is not None}
        self._seq = seq

    def _sync_conv(self, hook: str) -> Conversation:
        if isinstance(self.conversation, AsyncConversation):
            raise InvalidArgumentError(
                "conversation",
                f"{hook} cannot run on an AsyncConversation: run the agent with ainvoke/"
                "astream, or give the middleware a Conversation",
            )
        return self.conversation

    def _store(self, messages: Sequence[BaseMessage], *, check: bool = True) -> None:
        """Store what follows the newest stored message. With ``check``, when the conversation
        moved since this middleware last wrote (a new middleware, another worker on the same
        thread), first read the ids of as many of its newest messages as the state holds."""
        conv = self._sync_conv("a sync agent")
        new = self._unstored(messages)
        if new and check and self._seq != (info := conv.refresh()).last_seq:
            first = max(1, info.last_seq - len(messages) + 1)
            self._remember(conv.records(start=first), info.last_seq)
            new = self._unstored(messages)
        if new:
            pairs = close_unanswered(conv.info.pending_tool_calls, [to_openai(m) for m in new])
            conv.extend([m for m, _ in pairs], metadata=[meta for _, meta in pairs])
            self._stored |= {m.id for m in new if m.id}
            self._seq = conv.info.last_seq

    async def _astore(self, messages: Sequence[BaseMessage], *, check: bool = True) -> None:
        """The async twin of :meth:`_store`."""
        conv = self.conversation
        if not isinstance(conv, AsyncConversation):
            await asyncio.to_thread(lambda: self._store(messages, check=check))
            return
        new = self._unstored(messages)
        if new and check and self._seq != (info := await conv.refresh()).last_seq:
            first = max(1, info.last_seq - len(messages) + 1)
            self._remember(await conv.records(start=first), info.last_seq)
            new = self._unstored(messages)
        if new:
            pairs = close_unanswered(conv.info.pending_tool_calls, [to_openai(m) for m in new])
            await conv.extend([m for m, _ in pairs], metadata=[meta for _, meta in pairs])
            self._stored |= {m.id for m in new if m.id}
            self._seq = conv.info.last_seq

    # --- the window -------------------------------------------------------------------------

    def _window(self) -> list[AnyMessage]:
        pairs = window_pairs(self._sync_conv("a sync agent"), self.strategy)
        return [cast(AnyMessage, from_openai(m, meta)) for m, meta in pairs]

    async def _awindow(self) -> list[AnyMessage]:
        conv = self.conversation
        if not isinstance(conv, AsyncConversation):
            return await asyncio.to_thread(self._window)
        pairs = await awindow_pairs(conv, self.strategy)
        return [cast(AnyMessage, from_openai(m, meta)) for m, meta in pairs]

    # --- hooks ------------------------------------------------------------------------------

    def wrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], ModelResponse[Any]],
    ) -> ModelResult:
        """Store what is new in the state, send the window, store the reply."""
        self._store(request.state["messages"])
        response = _with_ids(handler(request.override(messages=self._window())))
        self._store([*request.state["messages"], *_replies(response)], check=False)
        return response

    async def awrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]],
    ) -> ModelResult:
        """The async twin of :meth:`wrap_model_call`."""
        await self._astore(request.state["messages"])
        response = _with_ids(await handler(request.override(messages=await self._awindow())))
        await self._astore([*request.state["messages"], *_replies(response)], check=False)
        return response

    def after_agent(self, state: AgentState[Any], runtime: Runtime[Any]) -> dict[str, Any] | None:
        """Store what the run ended with that no model call saw (a return_direct result)."""
        self._store(state["messages"])
        return None

    async def aafter_agent(
        self, state: AgentState[Any], runtime: Runtime[Any]
    ) -> dict[str, Any] | None:
        """The async twin of :meth:`after_agent`."""
        await self._astore(state["messages"])
        return None
