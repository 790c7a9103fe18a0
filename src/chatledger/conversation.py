"""A conversation: append messages, read them back, build windows, make and record requests.

``Conversation`` and ``AsyncConversation`` are thin shells: every method hands one operation
of :mod:`chatledger.operations` to its ledger's driver. A conversation object is a handle (its
key and the row as last read); it holds no connection and is cheap to create per request.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, cast, overload

from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessageParam

from chatledger import editing as edits
from chatledger import operations as op
from chatledger import responses_ops as ro
from chatledger import round_trip
from chatledger.budgets import Budget
from chatledger.handle import Handle
from chatledger.responses import ResponseAccumulator
from chatledger.round_trip import Recorded
from chatledger.rows import ConversationInfo, StoredMessage, UsageRecord, UsageTotals
from chatledger.streaming import AsyncStreamRecorder, ChunkT, StreamRecorder
from chatledger.tokens import TokenCounter
from chatledger.window import StrategyArg, Window

if TYPE_CHECKING:
    from chatledger.drivers import AsyncDriver, SyncDriver

__all__ = ["AsyncConversation", "Conversation"]

Tools: TypeAlias = Sequence[Mapping[str, Any]] | None
Meta: TypeAlias = Mapping[str, Any] | None
Metas: TypeAlias = Sequence[Mapping[str, Any] | None] | None
Budgets: TypeAlias = Budget | Sequence[Budget] | None
#: a window's ``messages``: what ``client.chat.completions.create(messages=...)`` takes
Messages: TypeAlias = list[ChatCompletionMessageParam]
#: a ``stream=True`` response: ``openai.Stream`` for Conversation, ``openai.AsyncStream`` for
#: AsyncConversation (one annotation, so that the twins keep one signature)
Chunks: TypeAlias = Iterable[ChunkT] | AsyncIterable[ChunkT]


def _sent(w: Window) -> Messages:
    """The window's messages as the SDK's param type: each was validated against those very
    TypedDicts (``chatledger.messages``) before it was stored."""
    return cast(Messages, w.messages)


class _Shell:
    """What both twins answer without I/O: identity, the row as last seen, estimates."""

    _h: Handle

    @property
    def id(self) -> str:
        return self._h.id

    @property
    def owner(self) -> str | None:
        return self._h.owner

    @property
    def model(self) -> str:
        return self._h.model

    @property
    def encoding(self) -> str:
        return self._h.info.encoding

    @property
    def info(self) -> ConversationInfo:
        """The row as last read or written by this handle (see ``refresh``)."""
        return self._h.info

    @property
    def parent(self) -> str | None:
        """The id of the conversation this one was forked from (None if it was not)."""
        return self._h.info.parent

    @property
    def forked_at(self) -> int | None:
        """The last seq this fork shares with its parent (None if it is not a fork)."""
        return self._h.info.forked_at

    @property
    def counter(self) -> TokenCounter:
        """The token counter for this conversation's model."""
        return self._h.counter

    def estimate(self, kwargs: Mapping[str, Any]) -> round_trip.Estimate:
        """The most a request (``request()``'s kwargs) can cost: exact prompt tokens, the
        completion tokens it allows, and their price in the ledger's price table. No I/O."""
        return round_trip.estimate(self._h.config, kwargs)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} id={self.id!r} owner={self.owner!r} model={self.model!r}>"


# fmt: off
class Conversation(_Shell):
    """A stored conversation, used from synchronous code. Get one from :class:`Ledger`."""

    def __init__(self, driver: SyncDriver, handle: Handle) -> None:
        self._driver, self._run, self._h = driver, driver.run, handle

    def append(self, message: object, *, metadata: Meta = None,
            idempotency_key: str | None = None) -> StoredMessage:
        """Store one message at the end; returns it with its seq and token counts."""
        return self._run(op.append(self._h, [message], [metadata], idempotency_key))[0]

    def extend(self, messages: Iterable[object], *, metadata: Metas = None,
            idempotency_key: str | None = None) -> list[StoredMessage]:
        """Store several messages atomically: all of them, in order, or none. ``metadata``,
        when given, holds one entry (or None) per message."""
        return self._run(op.append(self._h, list(messages), metadata, idempotency_key), "extend")

    def records(self, *, start: int | None = None, stop: int | None = None,
            limit: int | None = None) -> list[StoredMessage]:
        """Stored messages with ``start <= seq < stop`` (seq counts from 1), oldest first."""
        return self._run(op.read(self._h, start, stop, limit))

    def messages(self, *, start: int | None = None, stop: int | None = None,
            limit: int | None = None) -> list[dict[str, Any]]:
        """The history (or a seq range of it) as API-ready dicts, oldest first."""
        return [r.message for r in self._run(op.read(self._h, start, stop, limit))]

    def last(self, n: int) -> list[StoredMessage]:
        """The newest ``n`` stored messages, oldest first: one indexed query."""
        return self._run(op.read(self._h, None, None, n, newest=True))

    def count_tokens(self, tools: Tools = None) -> int:
        """Prompt tokens of a request carrying the whole stored history, from stored totals."""
        return self._run(op.count_tokens(self._h, tools))

    @overload
    def window(self, strategy: StrategyArg = None, *, tools: Tools = None,
            tool_choice: Any = None, reserve: int = 0, explain: Literal[False] = False
        ) -> Messages: ...
    @overload
    def window(self, strategy: StrategyArg = None, *, tools: Tools = None,
            tool_choice: Any = None, reserve: int = 0, explain: Literal[True]) -> Window: ...
    @overload
    def window(self, strategy: StrategyArg = None, *, tools: Tools = None,
            tool_choice: Any = None, reserve: int = 0, explain: bool) -> Messages | Window: ...
    def window(self, strategy: StrategyArg = None, *, tools: Tools = None,
            tool_choice: Any = None, reserve: int = 0, explain: bool = False
            ) -> Messages | Window:
        """The ``messages`` to send this turn: valid for the API and within the strategy's
        budget, reading only the newest part of the history it needs.

        ``strategy`` is one strategy or a list applied in order; None sends everything.
        ``tools`` (and ``tool_choice``) are counted against the budget, and a token budget
        leaves at least ``reserve`` tokens for the completion. With ``explain=True`` a
        :class:`Window` says what was kept, summarised and dropped, with token counts.
        """
        w = self._run(op.window(self._h, strategy, tools, tool_choice, reserve))
        return w if explain else _sent(w)

    def request(self, strategy: StrategyArg = None, *, tools: Tools = None,
            budget: Budgets = None, **params: Any) -> dict[str, Any]:
        """The keyword arguments for ``client.chat.completions.create(**kwargs)``.

        ``messages`` is this turn's window, with room left for ``max_tokens`` /
        ``max_completion_tokens``. Every parameter is checked first
        (:class:`InvalidParameterError`), and the ledger's and ``budget``'s ceilings
        (:class:`BudgetExceededError`) before anything is sent.
        """
        return self._run(op.request(self._h, strategy, tools, budget, params))[0]

    def record(self, completion: object, *, choice: int = 0, idempotency_key: str | None = None,
            metadata: Meta = None, prompt_tokens: int | None = None) -> Recorded:
        """Store a response: choice ``choice``'s message (cut off, filtered or incomplete
        replies are marked in its ``status``) and the usage row with every choice and its
        cost. Recording the same response twice stores it once (its id is the key)."""
        return self._run(
            op.record(self._h, completion, choice, idempotency_key, metadata, prompt_tokens)
        )

    def stream(self, stream: Chunks[ChunkT], *, choice: int = 0,
            prompt_tokens: int | None = None) -> StreamRecorder[ChunkT]:
        """Wrap a ``stream=True`` response: iterate it to pass the chunks on; the reply is
        recorded when the stream ends, or what arrived (marked incomplete) when it breaks."""

        def finish(completion: dict[str, Any], broken: bool) -> Recorded | None:
            if not completion["choices"] and broken:
                return None
            return self.record(completion, choice=choice, prompt_tokens=prompt_tokens)

        return StreamRecorder(cast(Iterable[ChunkT], stream), finish)

    def responses_request(self, strategy: StrategyArg = None, *, tools: Tools = None,
            budget: Budgets = None, instructions: bool = False, **params: Any) -> dict[str, Any]:
        """The keyword arguments for ``client.responses.create(**kwargs)``: the window of
        :meth:`request` as ``input`` items (kept reasoning replayed in place), tools in the
        flat shape, and with ``instructions=True`` the pinned system prompt as
        ``instructions``. :meth:`record` stores the ``Response`` (docs/responses.md)."""
        return self._run(ro.responses_request(self._h, strategy, tools, budget, instructions,
            params))[0]

    def stream_response(self, stream: Chunks[ChunkT], *,
            prompt_tokens: int | None = None) -> StreamRecorder[ChunkT]:
        """Wrap a ``responses.create(stream=True)`` stream: iterate it to pass the events on;
        the response is recorded when it completes, or what arrived when it breaks."""
        acc = ResponseAccumulator()

        def finish(_: dict[str, Any], broken: bool) -> Recorded | None:
            response = acc.response(broken=broken)
            return None if response is None else self.record(response, prompt_tokens=prompt_tokens)

        return StreamRecorder(acc.watch(cast(Iterable[ChunkT], stream)), finish)

    def _answer(self, out: op.ChatOutcome, choice: int
            ) -> ChatCompletion | StreamRecorder[ChatCompletionChunk]:
        if out.stream:
            return self.stream(out.response, choice=choice, prompt_tokens=out.prompt_tokens)
        return cast(ChatCompletion, out.response)

    @overload
    def chat(self, client: Any, message: object | None = None, *, strategy: StrategyArg = None,
            tools: Tools = None, budget: Budgets = None, choice: int = 0,
            stream: Literal[False] | None = None, **params: Any) -> ChatCompletion: ...
    @overload
    def chat(self, client: Any, message: object | None = None, *, strategy: StrategyArg = None,
            tools: Tools = None, budget: Budgets = None, choice: int = 0,
            stream: Literal[True], **params: Any) -> StreamRecorder[ChatCompletionChunk]: ...
    @overload
    def chat(self, client: Any, message: object | None = None, *, strategy: StrategyArg = None,
            tools: Tools = None, budget: Budgets = None, choice: int = 0, stream: bool,
            **params: Any) -> ChatCompletion | StreamRecorder[ChatCompletionChunk]: ...
    def chat(self, client: Any, message: object | None = None, *, strategy: StrategyArg = None,
            tools: Tools = None, budget: Budgets = None, choice: int = 0, **params: Any
            ) -> ChatCompletion | StreamRecorder[ChatCompletionChunk]:
        """One turn: append ``message`` (text means a user message), build the request, send it
        with ``client`` (an ``openai.OpenAI``), record the reply and return the response (the
        SDK's ``ChatCompletion``). With ``stream=True`` it returns a :class:`StreamRecorder` to
        iterate."""
        turn = op.chat(self._h, client, message, strategy, tools, budget, choice, params)
        return self._answer(self._run(turn), choice)

    def usage(self, *, since: datetime | None = None, until: datetime | None = None) -> UsageTotals:
        """Usage and cost of this conversation, ``since <= t < until``."""
        return self._run(op.usage_totals(self._h, since, until))

    def usage_records(self, *, limit: int | None = None) -> list[UsageRecord]:
        """The usage ledger rows of this conversation, oldest first (the newest ``limit``)."""
        return self._run(op.usage_records(self._h, limit))

    def refresh(self) -> ConversationInfo:
        """Read the conversation's row again (another worker may have written since)."""
        return self._run(op.refresh(self._h))

    def update(self, *, model: str | None = None, title: str | None = None,
            metadata: Meta = None, system: str | None = None) -> ConversationInfo:
        """Change the title, metadata, model or system prompt. A model that counts tokens
        differently has every stored message re-counted, once, in the same transaction;
        ``system`` rewrites the first pinned system or developer message, and every later
        window carries it."""
        return self._run(edits.update(self._h, model, title, metadata, system))

    def pop(self) -> StoredMessage | None:
        """Remove and return the newest message (None if there is none)."""
        return self._run(edits.pop(self._h))

    def truncate(self, upto_seq: int) -> list[StoredMessage]:
        """Keep seq ``1..upto_seq`` and remove the rest; returns what was removed."""
        return self._run(edits.truncate(self._h, upto_seq))

    def rewind(self, rounds: int = 1) -> list[StoredMessage]:
        """Remove the newest ``rounds`` rounds (undo a turn); returns what was removed."""
        return self._run(edits.rewind(self._h, rounds))

    def fork(self, new_id: str | None = None, *, at_seq: int | None = None) -> Conversation:
        """A new conversation of the same owner with this history up to ``at_seq`` (all of
        it by default), copied inside the database; its ``parent`` is this one."""
        loaded = self._run(edits.fork(self._h, new_id, at_seq))
        return Conversation(self._driver, Handle(self._h.config, loaded))

    def edit(self, seq: int, message: object, *, branch: bool = False) -> Conversation:
        """Replace the message at ``seq`` and drop what came after it (edit and regenerate);
        with ``branch=True`` on a fork, keeping this one. Returns the edited conversation."""
        target = self.fork(at_seq=seq - 1) if branch else self
        target._run(edits.edit(target._h, seq, message))
        return target

    @overload
    def regenerate(self, client: Any, *, strategy: StrategyArg = None, tools: Tools = None,
            budget: Budgets = None, choice: int = 0, stream: Literal[False] | None = None,
            **params: Any) -> ChatCompletion: ...
    @overload
    def regenerate(self, client: Any, *, strategy: StrategyArg = None, tools: Tools = None,
            budget: Budgets = None, choice: int = 0, stream: Literal[True],
            **params: Any) -> StreamRecorder[ChatCompletionChunk]: ...
    @overload
    def regenerate(self, client: Any, *, strategy: StrategyArg = None, tools: Tools = None,
            budget: Budgets = None, choice: int = 0, stream: bool,
            **params: Any) -> ChatCompletion | StreamRecorder[ChatCompletionChunk]: ...
    def regenerate(self, client: Any, *, strategy: StrategyArg = None, tools: Tools = None,
            budget: Budgets = None, choice: int = 0, **params: Any
            ) -> ChatCompletion | StreamRecorder[ChatCompletionChunk]:
        """Drop the newest reply (with its tool exchange) and ask again, as :meth:`chat`
        does; the usage of both replies stays in the ledger."""
        turn = edits.regenerate(self._h, client, strategy, tools, budget, choice, params)
        return self._answer(self._run(turn), choice)

    def delete(self) -> None:
        """Delete the conversation with its messages and summaries (its usage rows stay)."""
        self._run(op.delete(self._h))


class AsyncConversation(_Shell):
    """The async twin of :class:`Conversation`. Get one from :class:`AsyncLedger`."""

    def __init__(self, driver: AsyncDriver, handle: Handle) -> None:
        self._driver, self._run, self._h = driver, driver.run, handle

    async def append(self, message: object, *, metadata: Meta = None,
            idempotency_key: str | None = None) -> StoredMessage:
        """Async :meth:`Conversation.append`."""
        return (await self._run(op.append(self._h, [message], [metadata], idempotency_key)))[0]

    async def extend(self, messages: Iterable[object], *, metadata: Metas = None,
            idempotency_key: str | None = None) -> list[StoredMessage]:
        """Async :meth:`Conversation.extend`."""
        batch = op.append(self._h, list(messages), metadata, idempotency_key)
        return await self._run(batch, "extend")

    async def records(self, *, start: int | None = None, stop: int | None = None,
            limit: int | None = None) -> list[StoredMessage]:
        """Async :meth:`Conversation.records`."""
        return await self._run(op.read(self._h, start, stop, limit))

    async def messages(self, *, start: int | None = None, stop: int | None = None,
            limit: int | None = None) -> list[dict[str, Any]]:
        """Async :meth:`Conversation.messages`."""
        return [r.message for r in await self._run(op.read(self._h, start, stop, limit))]

    async def last(self, n: int) -> list[StoredMessage]:
        """Async :meth:`Conversation.last`."""
        return await self._run(op.read(self._h, None, None, n, newest=True))

    async def count_tokens(self, tools: Tools = None) -> int:
        """Async :meth:`Conversation.count_tokens`."""
        return await self._run(op.count_tokens(self._h, tools))

    @overload
    async def window(self, strategy: StrategyArg = None, *, tools: Tools = None,
            tool_choice: Any = None, reserve: int = 0, explain: Literal[False] = False
        ) -> Messages: ...
    @overload
    async def window(self, strategy: StrategyArg = None, *, tools: Tools = None,
            tool_choice: Any = None, reserve: int = 0, explain: Literal[True]) -> Window: ...
    @overload
    async def window(self, strategy: StrategyArg = None, *, tools: Tools = None,
            tool_choice: Any = None, reserve: int = 0, explain: bool) -> Messages | Window: ...
    async def window(self, strategy: StrategyArg = None, *, tools: Tools = None,
            tool_choice: Any = None, reserve: int = 0, explain: bool = False
            ) -> Messages | Window:
        """Async :meth:`Conversation.window`."""
        w = await self._run(op.window(self._h, strategy, tools, tool_choice, reserve))
        return w if explain else _sent(w)

    async def request(self, strategy: StrategyArg = None, *, tools: Tools = None,
            budget: Budgets = None, **params: Any) -> dict[str, Any]:
        """Async :meth:`Conversation.request` (for ``await client.chat.completions.create``)."""
        return (await self._run(op.request(self._h, strategy, tools, budget, params)))[0]

    async def record(self, completion: object, *, choice: int = 0,
            idempotency_key: str | None = None, metadata: Meta = None,
            prompt_tokens: int | None = None) -> Recorded:
        """Async :meth:`Conversation.record`."""
        return await self._run(
            op.record(self._h, completion, choice, idempotency_key, metadata, prompt_tokens)
        )

    def stream(self, stream: Chunks[ChunkT], *, choice: int = 0,
            prompt_tokens: int | None = None) -> AsyncStreamRecorder[ChunkT]:
        """Wrap an async ``stream=True`` response (see :meth:`Conversation.stream`)."""

        async def finish(completion: dict[str, Any], broken: bool) -> Recorded | None:
            if not completion["choices"] and broken:
                return None
            return await self.record(completion, choice=choice, prompt_tokens=prompt_tokens)

        return AsyncStreamRecorder(cast(AsyncIterable[ChunkT], stream), finish)

    async def responses_request(self, strategy: StrategyArg = None, *, tools: Tools = None,
            budget: Budgets = None, instructions: bool = False, **params: Any) -> dict[str, Any]:
        """Async :meth:`Conversation.responses_request`."""
        return (await self._run(ro.responses_request(self._h, strategy, tools, budget,
            instructions, params)))[0]

    def stream_response(self, stream: Chunks[ChunkT], *,
            prompt_tokens: int | None = None) -> AsyncStreamRecorder[ChunkT]:
        """Wrap a Responses stream (see :meth:`Conversation.stream_response`)."""
        acc = ResponseAccumulator()

        async def finish(_: dict[str, Any], broken: bool) -> Recorded | None:
            response = acc.response(broken=broken)
            if response is None:
                return None
            return await self.record(response, prompt_tokens=prompt_tokens)

        return AsyncStreamRecorder(acc.awatch(stream), finish)

    def _answer(self, out: op.ChatOutcome, choice: int
            ) -> ChatCompletion | AsyncStreamRecorder[ChatCompletionChunk]:
        if out.stream:
            return self.stream(out.response, choice=choice, prompt_tokens=out.prompt_tokens)
        return cast(ChatCompletion, out.response)

    @overload
    async def chat(self, client: Any, message: object | None = None, *,
            strategy: StrategyArg = None, tools: Tools = None, budget: Budgets = None,
            choice: int = 0, stream: Literal[False] | None = None, **params: Any
            ) -> ChatCompletion: ...
    @overload
    async def chat(self, client: Any, message: object | None = None, *,
            strategy: StrategyArg = None, tools: Tools = None, budget: Budgets = None,
            choice: int = 0, stream: Literal[True], **params: Any
            ) -> AsyncStreamRecorder[ChatCompletionChunk]: ...
    @overload
    async def chat(self, client: Any, message: object | None = None, *,
            strategy: StrategyArg = None, tools: Tools = None, budget: Budgets = None,
            choice: int = 0, stream: bool, **params: Any
            ) -> ChatCompletion | AsyncStreamRecorder[ChatCompletionChunk]: ...
    async def chat(self, client: Any, message: object | None = None, *,
            strategy: StrategyArg = None, tools: Tools = None, budget: Budgets = None,
            choice: int = 0, **params: Any
            ) -> ChatCompletion | AsyncStreamRecorder[ChatCompletionChunk]:
        """Async :meth:`Conversation.chat`, with an ``openai.AsyncOpenAI`` client."""
        turn = op.chat(self._h, client, message, strategy, tools, budget, choice, params)
        return self._answer(await self._run(turn), choice)

    async def usage(self, *, since: datetime | None = None,
            until: datetime | None = None) -> UsageTotals:
        """Async :meth:`Conversation.usage`."""
        return await self._run(op.usage_totals(self._h, since, until))

    async def usage_records(self, *, limit: int | None = None) -> list[UsageRecord]:
        """Async :meth:`Conversation.usage_records`."""
        return await self._run(op.usage_records(self._h, limit))

    async def refresh(self) -> ConversationInfo:
        """Async :meth:`Conversation.refresh`."""
        return await self._run(op.refresh(self._h))

    async def update(self, *, model: str | None = None, title: str | None = None,
            metadata: Meta = None, system: str | None = None) -> ConversationInfo:
        """Async :meth:`Conversation.update`."""
        return await self._run(edits.update(self._h, model, title, metadata, system))

    async def pop(self) -> StoredMessage | None:
        """Async :meth:`Conversation.pop`."""
        return await self._run(edits.pop(self._h))

    async def truncate(self, upto_seq: int) -> list[StoredMessage]:
        """Async :meth:`Conversation.truncate`."""
        return await self._run(edits.truncate(self._h, upto_seq))

    async def rewind(self, rounds: int = 1) -> list[StoredMessage]:
        """Async :meth:`Conversation.rewind`."""
        return await self._run(edits.rewind(self._h, rounds))

    async def fork(self, new_id: str | None = None, *, at_seq: int | None = None
            ) -> AsyncConversation:
        """Async :meth:`Conversation.fork`."""
        loaded = await self._run(edits.fork(self._h, new_id, at_seq))
        return AsyncConversation(self._driver, Handle(self._h.config, loaded))

    async def edit(self, seq: int, message: object, *, branch: bool = False
            ) -> AsyncConversation:
        """Async :meth:`Conversation.edit`."""
        target = await self.fork(at_seq=seq - 1) if branch else self
        await target._run(edits.edit(target._h, seq, message))
        return target

    @overload
    async def regenerate(self, client: Any, *, strategy: StrategyArg = None,
            tools: Tools = None, budget: Budgets = None, choice: int = 0,
            stream: Literal[False] | None = None, **params: Any) -> ChatCompletion: ...
    @overload
    async def regenerate(self, client: Any, *, strategy: StrategyArg = None,
            tools: Tools = None, budget: Budgets = None, choice: int = 0,
            stream: Literal[True], **params: Any) -> AsyncStreamRecorder[ChatCompletionChunk]: ...
    @overload
    async def regenerate(self, client: Any, *, strategy: StrategyArg = None,
            tools: Tools = None, budget: Budgets = None, choice: int = 0, stream: bool,
            **params: Any) -> ChatCompletion | AsyncStreamRecorder[ChatCompletionChunk]: ...
    async def regenerate(self, client: Any, *, strategy: StrategyArg = None,
            tools: Tools = None, budget: Budgets = None, choice: int = 0, **params: Any
            ) -> ChatCompletion | AsyncStreamRecorder[ChatCompletionChunk]:
        """Async :meth:`Conversation.regenerate`, with an ``openai.AsyncOpenAI`` client."""
        turn = edits.regenerate(self._h, client, strategy, tools, budget, choice, params)
        return self._answer(await self._run(turn), choice)

    async def delete(self) -> None:
        """Async :meth:`Conversation.delete`."""
        await self._run(op.delete(self._h))
# fmt: on
