"""LangChain 1.x agent middleware that keeps the agent's history in chatledger.

:class:`ChatledgerMiddleware` is an ``AgentMiddleware`` for ``create_agent``. One agent serves
every user and thread: each run's conversation is its ``thread_id``, its owner what the
``owner`` callable reads from the run's runtime::

    from chatledger.integrations.langchain_agents import ChatledgerMiddleware

    middleware = ChatledgerMiddleware(
        ledger, cl.TokenBudget(8000), owner=lambda rt: rt.context.user_id, model="gpt-4o"
    )
    agent = create_agent(model, tools, middleware=[middleware], context_schema=Context)
    agent.invoke(
        {"messages": [HumanMessage("Hi")]},
        {"configurable": {"thread_id": "support-42"}},
        context=Context(user_id="user-7"),
    )

Given a conversation instead of a ledger (``ChatledgerMiddleware(conv, strategy)``), every run
of the agent is kept in that one conversation.

Before each model call (``wrap_model_call``) it stores the state's messages that are not stored
yet (the new user input, the tool results of the previous step), then hands the model
chatledger's window of the conversation (``request.override(messages=...)``) instead of the
state's messages; after the call it stores the model's reply. ``after_agent`` stores what a run
ends with that no model call saw (a ``return_direct`` tool's result). The graph state itself is
left as LangChain builds it, but for a stamp on each message (below): only what the model sees
changes. When a run failed inside a tool, its reply with the calls is already stored; the next
run first closes the calls still open with a tool message saying no result was recorded, as
the API requires.

Each message is stored once. What is stored is recognised by the message ``id`` (LangGraph's
``add_messages`` gives every state message one; a reply without one is given one before it
enters the state), kept in the stored message's ``metadata["langchain"]`` as
:mod:`chatledger.integrations.langchain` keeps it, so the same conversation continues across
invocations, with or without a checkpointer, and across processes: when the conversation moved
since the middleware last wrote (a new middleware, another worker serving the same thread), it
reads the ids of the conversation's newest messages, as many as the state holds.

A checkpointer keeps a thread's state by its ``thread_id`` alone, so another owner (or another
conversation) sending the same thread id would get this one's state. So each state message the
middleware stores is stamped, in the state, with its conversation's key (a hash of owner and
id, in ``response_metadata``, which model integrations do not send and chatledger does not
store), and a run whose state holds a message stamped for another conversation raises
``InvalidArgumentError`` before anything is stored or sent; ``before_agent`` first takes the
run's input back out of the state, so that the thread's own conversation never stores it.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, NamedTuple, cast

from chatledger.errors import ChatLedgerError, InvalidArgumentError, MissingDependencyError

try:
    from langchain.agents.middleware import AgentMiddleware, AgentState, ModelRequest
    from langchain.agents.middleware.types import ExtendedModelResponse, ModelResponse
    from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, RemoveMessage
    from langgraph.config import get_config
    from langgraph.runtime import Runtime
    from langgraph.types import Command
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
    Pair,
    awindow_pairs,
    close_unanswered,
    window_pairs,
)
from chatledger.ledger import AsyncLedger, Ledger
from chatledger.params import conversation_cache_key
from chatledger.rows import StoredMessage

__all__ = ["ChatledgerMiddleware"]

ModelResult = ModelResponse[Any] | AIMessage | ExtendedModelResponse[Any]
#: what reads a run's owner or conversation id from its runtime
Resolver = Callable[[Runtime[Any]], object]
#: (owner, conversation id): which conversation a run is kept in
Key = tuple[str | None, str]

#: the ``response_metadata`` key of a state message's stamp: its conversation's key
STAMP_KEY = "chatledger_conversation"

_UNSET: Any = object()
# conversations whose stored ids are remembered (the ids save a read at the start of a run)
_REMEMBERED = 256


class _Known(NamedTuple):
    """Ids of stored messages, complete for every message up to ``seq`` (None: nothing
    known) that a state could still hold."""

    ids: frozenset[str]
    seq: int | None


_NOTHING = _Known(frozenset(), None)


def _stored_id(record: StoredMessage) -> str | None:
    extras = record.metadata.get(META_KEY) if isinstance(record.metadata, Mapping) else None
    value = extras.get("id") if isinstance(extras, Mapping) else None
    return value if isinstance(value, str) else None


def _ids(records: Sequence[StoredMessage]) -> frozenset[str]:
    return frozenset(i for i in map(_stored_id, records) if i is not None)


def _unstored(messages: Sequence[BaseMessage], ids: frozenset[str]) -> list[BaseMessage]:
    """The messages after the newest one known to be stored."""
    start = len(messages)
    while start > 0 and messages[start - 1].id not in ids:
        start -= 1
    return list(messages[start:])


def _thread_id(runtime: Runtime[Any]) -> object:
    """The run's ``thread_id`` (LangGraph keeps the config out of the runtime)."""
    try:
        configurable = get_config().get("configurable") or {}
    except RuntimeError:  # not inside a graph run
        return None
    return configurable.get("thread_id")


def _stamp(key: Key) -> str:
    """The conversation's key: a hash, so that the state holds neither owner nor id."""
    return conversation_cache_key(*key)


def _stamp_of(message: BaseMessage) -> object:
    meta = message.response_metadata
    return meta.get(STAMP_KEY) if isinstance(meta, Mapping) else None


def _stamped(message: BaseMessage, stamp: str, **update: Any) -> BaseMessage:
    return message.model_copy(
        update={**update, "response_metadata": {**message.response_metadata, STAMP_KEY: stamp}}
    )


def _bare(message: BaseMessage) -> BaseMessage:
    """The message as it is stored: without its stamp."""
    meta = message.response_metadata
    if not isinstance(meta, Mapping) or STAMP_KEY not in meta:
        return message
    kept = {k: v for k, v in meta.items() if k != STAMP_KEY}
    return message.model_copy(update={"response_metadata": kept})


def _check_stamps(messages: Sequence[BaseMessage], stamp: str) -> None:
    """Refuse a state that holds messages stored in another conversation: the thread's
    checkpoint is another owner's (or another conversation's), and nothing of it may be
    stored here or shown to this run's model."""
    if any(s is not None and s != stamp for s in map(_stamp_of, messages)):
        raise InvalidArgumentError(
            "thread_id",
            "the agent's state for this run holds messages of another conversation (a thread "
            "id reused across owners or conversations: a checkpointer keeps a thread's state "
            "by its id alone), so nothing is stored or sent: give each owner's conversations "
            "thread ids of their own",
        )


def _taken_back(messages: Sequence[BaseMessage], stamp: str) -> dict[str, Any] | None:
    """When the state holds messages of another conversation, a state update removing the
    unstamped ones at its end (this run's input): else the next run of that conversation
    would store them, and show them to its model."""
    stamps = [_stamp_of(m) for m in messages]
    if all(s is None or s == stamp for s in stamps):
        return None
    last = max(i for i, s in enumerate(stamps) if s is not None)
    removed = [RemoveMessage(id=m.id) for m in messages[last + 1 :] if m.id]
    return {"messages": removed} if removed else None


def _unstamped(messages: Sequence[BaseMessage], stamp: str) -> list[BaseMessage]:
    """Stamped copies of the messages not stamped yet; their ids make ``add_messages``
    replace the state's messages with them."""
    return [_stamped(m, stamp) for m in messages if m.id and _stamp_of(m) != stamp]


def _with_stamps(response: ModelResult, stamped: list[BaseMessage]) -> ModelResult:
    """The response with a state update that puts ``stamped`` in the state."""
    if not stamped:
        return response
    if isinstance(response, AIMessage):
        response = ModelResponse([response], None)
    if not isinstance(response, ExtendedModelResponse):
        return ExtendedModelResponse(response, Command(update={"messages": stamped}))
    command, update = response.command, {"messages": stamped}
    if command is not None:
        if not isinstance(command.update, dict):
            return response  # nothing the factory builds: its layers' commands are apart
        theirs = command.update.get("messages", [])
        theirs = theirs if isinstance(theirs, list) else [theirs]
        update = {**command.update, "messages": [*stamped, *theirs]}
    return ExtendedModelResponse(response.model_response, Command(update=update))


def _with_ids(response: ModelResult, stamp: str) -> ModelResult:
    """The model's reply with an id on every message, so the state and the store agree on
    which message is which (``add_messages`` would give it a different one), and stamped."""

    def named(messages: Sequence[BaseMessage]) -> list[BaseMessage]:
        return [_stamped(m, stamp, id=m.id or str(uuid.uuid4())) for m in messages]

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


def _reread_from(last: int, held: int) -> int:
    """The first seq to re-read: as many of the newest as the state holds."""
    return max(1, last - held + 1)


def _writes(pending: Sequence[str], new: Sequence[BaseMessage]) -> list[Pair]:
    """What storing ``new`` writes: its messages as stored (without their stamps), after
    closers for calls a failed run left open."""
    return close_unanswered(pending, [to_openai(_bare(m)) for m in new])


def _after_write(known: _Known, new: Sequence[BaseMessage], written: int, last_seq: int) -> _Known:
    """What is known once ``new`` was stored as the ``written`` messages ending at
    ``last_seq``: complete up to there only when the write directly followed what was known
    complete (messages another worker wrote in between would be missing)."""
    ids = known.ids | {m.id for m in new if m.id}
    return _Known(ids, last_seq if known.seq == last_seq - written else known.seq)


class ChatledgerMiddleware(AgentMiddleware):
    """Stores a ``create_agent`` run's messages in a chatledger conversation and gives the
    model the conversation's window.

    ``conversation`` is where runs are kept: a :class:`~chatledger.Ledger` or
    :class:`~chatledger.AsyncLedger` keeps each run in its own conversation, so one agent
    serves every user and thread; a :class:`~chatledger.Conversation` or
    :class:`~chatledger.AsyncConversation` keeps every run in that one. Async flavours serve
    async runs only (``ainvoke``/``astream``); the sync ones serve both (the async hooks run
    them in a worker thread).

    With a ledger, a run's conversation is ``(owner, id)``, opened (created on first use, with
    ``model`` and ``system``) by each hook that reads or writes it:

    - ``owner`` is required, so that it is never guessed: a callable of the run's ``Runtime``
      (``lambda rt: rt.context.user_id``), one owner for every run, or None for conversations
      with no owner. A run the callable gives no owner raises ``InvalidArgumentError`` before
      anything is stored or sent.
    - the id is the run's ``thread_id`` (``config={"configurable": {"thread_id": ...}}``), or
      what ``conversation_id`` (a callable of the ``Runtime``) gives. A run without one raises
      ``InvalidArgumentError``.

    ``strategy`` is what the model sees (``cl.TokenBudget(8000)``, ``cl.StablePrefix(...)``,
    a list with ``cl.Summarize`` first); None sends the whole stored history. The agent's
    ``system_prompt`` is sent ahead of the window and is not stored: leave room for it in the
    budget (or give the conversation the system prompt instead, and the agent none).
    """

    def __init__(
        self,
        conversation: Conversation | AsyncConversation | Ledger | AsyncLedger,
        strategy: StrategyArg = None,
        *,
        owner: str | Resolver | None = _UNSET,
        conversation_id: Resolver | None = None,
        model: str | None = None,
        system: str | None = None,
    ) -> None:
        super().__init__()
        self.ledger: Ledger | AsyncLedger | None = None
        self.conversation: Conversation | AsyncConversation | None = None
        if isinstance(conversation, (Ledger, AsyncLedger)):
            _check_ledger_options(owner, conversation_id)
            self.ledger = conversation
        elif isinstance(conversation, (Conversation, AsyncConversation)):
            given = {"owner": owner is not _UNSET, "conversation_id": conversation_id is not None}
            given |= {"model": model is not None, "system": system is not None}
            for name in (n for n, set_ in given.items() if set_):
                raise InvalidArgumentError(
                    name, "applies to a ledger; a conversation has its own (give the ledger)"
                )
            self.conversation = conversation
        else:
            raise InvalidArgumentError(
                "conversation",
                "must be a chatledger Conversation or AsyncConversation, or a Ledger or "
                f"AsyncLedger to keep each thread in its own, got {type(conversation).__name__}",
            )
        self.strategy = strategy
        self.owner: str | Resolver | None = None if owner is _UNSET else owner
        self.conversation_id = conversation_id
        self.model, self.system = model, system
        self._known: OrderedDict[Key, _Known] = OrderedDict()  # per conversation, newest last
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        if self.conversation is not None:
            where = repr(self.conversation.id)
        else:
            where = f"per thread owner={self.owner!r}"
        return f"<ChatledgerMiddleware {where} strategy={self.strategy!r}>"

    # --- which conversation a run is kept in ------------------------------------------------

    def _key(self, runtime: Runtime[Any]) -> Key:
        """The run's (owner, conversation id); raises before anything is stored when either
        cannot be read."""
        if self.conversation is not None:
            return self.conversation.info.owner, self.conversation.id
        cid = _resolve("conversation_id", self.conversation_id or _thread_id, runtime)
        if isinstance(cid, int | uuid.UUID) and not isinstance(cid, bool):
            cid = str(cid)
        if not isinstance(cid, str) or not cid:
            if self.conversation_id is None:
                raise InvalidArgumentError(
                    "thread_id",
                    "this run has none, so it has no conversation: invoke the agent with "
                    "config={'configurable': {'thread_id': <conversation id>}}, or give the "
                    "middleware conversation_id=",
                )
            raise InvalidArgumentError(
                "conversation_id", f"gave {cid!r} for this run, not a conversation id"
            )
        if self.owner is None or isinstance(self.owner, str):
            return self.owner, cid
        owner = _resolve("owner", self.owner, runtime)
        if not isinstance(owner, str) or not owner:
            raise InvalidArgumentError(
                "owner",
                f"the owner callable gave {owner!r} for this run, so nothing is stored: give "
                "the run what it reads (invoke(..., context=...))",
            )
        return owner, cid

    def _open(self, key: Key) -> tuple[Conversation, bool]:
        """The run's conversation, and whether its state was just read."""
        if self.conversation is not None:
            if isinstance(self.conversation, AsyncConversation):
                raise InvalidArgumentError(
                    "conversation",
                    "a sync agent cannot run on an AsyncConversation: run the agent with "
                    "ainvoke/astream, or give the middleware a Conversation",
                )
            return self.conversation, False
        if isinstance(self.ledger, AsyncLedger) or self.ledger is None:
            raise InvalidArgumentError(
                "conversation",
                "a sync agent cannot run on an AsyncLedger: run the agent with ainvoke/astream, "
                "or give the middleware a Ledger",
            )
        owner, cid = key
        return self.ledger.conversation(
            cid, owner=owner, model=self.model, system=self.system
        ), True

    async def _aopen(self, key: Key) -> tuple[Conversation | AsyncConversation, bool]:
        """The async twin of :meth:`_open`."""
        if self.conversation is not None:
            return self.conversation, False
        if not isinstance(self.ledger, AsyncLedger):
            return await asyncio.to_thread(self._open, key)
        owner, cid = key
        opened = await self.ledger.conversation(
            cid, owner=owner, model=self.model, system=self.system
        )
        return opened, True

    # --- which messages are new -------------------------------------------------------------

    def _recall(self, key: Key) -> _Known:
        with self._lock:
            return self._known.get(key, _NOTHING)

    def _keep(self, key: Key, known: _Known) -> None:
        with self._lock:
            self._known[key] = known
            self._known.move_to_end(key)
            while len(self._known) > _REMEMBERED:
                self._known.popitem(last=False)

    def _store(
        self,
        conv: Conversation,
        fresh: bool,
        key: Key,
        messages: Sequence[BaseMessage],
        *,
        check: bool = True,
    ) -> None:
        """Store what follows the newest stored message. With ``check``, when the conversation
        moved since this middleware last wrote (a new middleware, another worker on the same
        thread), first read the ids of as many of its newest messages as the state holds."""
        known = self._recall(key)
        new = _unstored(messages, known.ids)
        if new and check:
            last = conv.info.last_seq if fresh else conv.refresh().last_seq
            if known.seq != last:
                read = conv.records(start=_reread_from(last, len(messages))) if last else []
                known = _Known(known.ids | _ids(read), last)
                self._keep(key, known)
                new = _unstored(messages, known.ids)
        if new:
            pairs = _writes(conv.info.pending_tool_calls, new)
            conv.extend([m for m, _ in pairs], metadata=[meta for _, meta in pairs])
            self._keep(key, _after_write(known, new, len(pairs), conv.info.last_seq))

    async def _astore(
        self,
        conv: Conversation | AsyncConversation,
        fresh: bool,
        key: Key,
        messages: Sequence[BaseMessage],
        *,
        check: bool = True,
    ) -> None:
        """The async twin of :meth:`_store`."""
        if not isinstance(conv, AsyncConversation):
            await asyncio.to_thread(lambda: self._store(conv, fresh, key, messages, check=check))
            return
        known = self._recall(key)
        new = _unstored(messages, known.ids)
        if new and check:
            last = conv.info.last_seq if fresh else (await conv.refresh()).last_seq
            if known.seq != last:
                start = _reread_from(last, len(messages))
                read = await conv.records(start=start) if last else []
                known = _Known(known.ids | _ids(read), last)
                self._keep(key, known)
                new = _unstored(messages, known.ids)
        if new:
            pairs = _writes(conv.info.pending_tool_calls, new)
            await conv.extend([m for m, _ in pairs], metadata=[meta for _, meta in pairs])
            self._keep(key, _after_write(known, new, len(pairs), conv.info.last_seq))

    # --- the window -------------------------------------------------------------------------

    def _window(self, conv: Conversation) -> list[AnyMessage]:
        pairs = window_pairs(conv, self.strategy)
        return [cast(AnyMessage, from_openai(m, meta)) for m, meta in pairs]

    async def _awindow(self, conv: Conversation | AsyncConversation) -> list[AnyMessage]:
        if not isinstance(conv, AsyncConversation):
            return await asyncio.to_thread(self._window, conv)
        pairs = await awindow_pairs(conv, self.strategy)
        return [cast(AnyMessage, from_openai(m, meta)) for m, meta in pairs]

    # --- hooks ------------------------------------------------------------------------------

    def before_agent(self, state: AgentState[Any], runtime: Runtime[Any]) -> dict[str, Any] | None:
        """Take a refused run's input back out of the thread's state (the model call then
        refuses the run): the state's update commits, where an error would not."""
        return _taken_back(state["messages"], _stamp(self._key(runtime)))

    async def abefore_agent(
        self, state: AgentState[Any], runtime: Runtime[Any]
    ) -> dict[str, Any] | None:
        """The async twin of :meth:`before_agent` (it does no I/O)."""
        return self.before_agent(state, runtime)

    def wrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], ModelResponse[Any]],
    ) -> ModelResult:
        """Store what is new in the state, send the window, store the reply; stamp what
        was stored (a state update alongside the reply)."""
        key = self._key(request.runtime)
        stamp, state = _stamp(key), request.state["messages"]
        _check_stamps(state, stamp)
        conv, fresh = self._open(key)
        self._store(conv, fresh, key, state)
        response = _with_ids(handler(request.override(messages=self._window(conv))), stamp)
        self._store(conv, True, key, [*state, *_replies(response)], check=False)
        return _with_stamps(response, _unstamped(state, stamp))

    async def awrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]],
    ) -> ModelResult:
        """The async twin of :meth:`wrap_model_call`."""
        key = self._key(request.runtime)
        stamp, state = _stamp(key), request.state["messages"]
        _check_stamps(state, stamp)
        conv, fresh = await self._aopen(key)
        await self._astore(conv, fresh, key, state)
        window = await self._awindow(conv)
        response = _with_ids(await handler(request.override(messages=window)), stamp)
        await self._astore(conv, True, key, [*state, *_replies(response)], check=False)
        return _with_stamps(response, _unstamped(state, stamp))

    def after_agent(self, state: AgentState[Any], runtime: Runtime[Any]) -> dict[str, Any] | None:
        """Store what the run ended with that no model call saw (a return_direct result),
        and stamp it."""
        key = self._key(runtime)
        stamp, messages = _stamp(key), state["messages"]
        _check_stamps(messages, stamp)
        if _unstored(messages, self._recall(key).ids):
            conv, fresh = self._open(key)
            self._store(conv, fresh, key, messages)
        stamped = _unstamped(messages, stamp)
        return {"messages": stamped} if stamped else None

    async def aafter_agent(
        self, state: AgentState[Any], runtime: Runtime[Any]
    ) -> dict[str, Any] | None:
        """The async twin of :meth:`after_agent`."""
        key = self._key(runtime)
        stamp, messages = _stamp(key), state["messages"]
        _check_stamps(messages, stamp)
        if _unstored(messages, self._recall(key).ids):
            conv, fresh = await self._aopen(key)
            await self._astore(conv, fresh, key, messages)
        stamped = _unstamped(messages, stamp)
        return {"messages": stamped} if stamped else None


def _check_ledger_options(owner: object, conversation_id: object) -> None:
    if owner is _UNSET:
        raise InvalidArgumentError(
            "owner",
            "is required with a ledger, so that it is never guessed: a callable of the run's "
            "runtime (owner=lambda rt: rt.context.user_id), one owner for every run, or None "
            "for conversations with no owner",
        )
    if owner is not None and not isinstance(owner, str) and not callable(owner):
        raise InvalidArgumentError("owner", f"must be a callable, a string or None, got {owner!r}")
    if conversation_id is not None and not callable(conversation_id):
        raise InvalidArgumentError("conversation_id", "must be a callable of the run's runtime")


def _resolve(name: str, resolver: Resolver, runtime: Runtime[Any]) -> object:
    """What ``resolver`` reads from the run; its failure is a chatledger error, raised before
    anything is stored."""
    try:
        return resolver(runtime)
    except ChatLedgerError:
        raise
    except Exception as exc:
        raise InvalidArgumentError(
            name, f"could not be read for this run ({type(exc).__name__}: {exc})"
        ) from exc
