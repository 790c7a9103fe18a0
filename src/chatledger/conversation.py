"""A conversation: append messages, read them back, account for their tokens.

``Conversation`` and ``AsyncConversation`` are twins: the same arguments, checks and SQL
(``chatledger.store.ops``); only how the statements are executed differs. A conversation object
is a handle (its key and the row as last read); it holds no connection and is cheap to create
per request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, overload

from sqlalchemy import Connection
from sqlalchemy import exc as sa_exc

from chatledger import _turns
from chatledger._core import LedgerConfig, dump_json
from chatledger._turns import Recorded
from chatledger._windowing import WindowJob, call_summarizer, call_summarizer_async
from chatledger.budgets import Budget, Spend
from chatledger.errors import ConversationNotFoundError, InvalidArgumentError, StorageError
from chatledger.messages import ToolCallState
from chatledger.params import validate_params
from chatledger.records import ConversationInfo, StoredMessage, UsageRecord, UsageTotals
from chatledger.store import ops
from chatledger.strategies.base import Strategy
from chatledger.streaming import AsyncStreamRecorder, StreamRecorder
from chatledger.tokens import TokenCounter
from chatledger.window import FoldRequest, Plan, Window, plan_window

if TYPE_CHECKING:
    from chatledger.ledger import AsyncLedger, Ledger

__all__ = ["AsyncConversation", "Conversation"]

_MAX_APPEND_RETRIES = 3


@contextmanager
def db_errors() -> Iterator[None]:
    """Database failures a caller may retry become :class:`StorageError`."""
    try:
        yield
    except (sa_exc.OperationalError, sa_exc.InterfaceError) as exc:
        raise StorageError(f"database error: {exc.orig or exc}") from exc
    except sa_exc.DBAPIError as exc:
        if exc.connection_invalidated:
            raise StorageError(f"database connection lost: {exc.orig or exc}") from exc
        raise


def _check_range(start: int | None, stop: int | None, limit: int | None) -> None:
    for name, v in (("start", start), ("stop", stop), ("limit", limit)):
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
            raise InvalidArgumentError(name, "must be a non-negative integer")


def _check_key(key: str | None) -> None:
    if key is not None and (not isinstance(key, str) or not 1 <= len(key) <= 200):
        raise InvalidArgumentError("idempotency_key", "must be a string of 1-200 characters")


def _metas(
    items: Sequence[object], metadata: Sequence[Mapping[str, Any] | None] | None
) -> Sequence[Mapping[str, Any] | None] | None:
    if metadata is None:
        return None
    if isinstance(metadata, Mapping) or len(metadata) != len(items):
        raise InvalidArgumentError(
            "metadata", f"must hold one entry (or None) per message: {len(items)} here"
        )
    return metadata


def _model_name(model: object) -> str | None:
    return model[:128] if isinstance(model, str) else None


class _Handle:
    """State and pure helpers shared by both twins."""

    _pk: int
    _row: ConversationInfo  # the row as last read
    _state: ops.State  # its running totals, kept current by this handle's own writes
    _updated_at: datetime
    _cached_info: ConversationInfo | None
    _config: LedgerConfig

    def _load(self, loaded: ops.Loaded) -> ConversationInfo:
        info = loaded.info
        self._pk, self._row, self._cached_info = loaded.pk, info, info
        self._updated_at = info.updated_at
        self._state = ops.State(
            info.last_seq,
            info.token_total,
            info.message_count,
            info.last_round_seq,
            info.prefix_seq,
            loaded.tool_state,
        )
        return info

    @property
    def _info(self) -> ConversationInfo:
        info = self._cached_info
        if info is None:
            st = self._state
            info = self._cached_info = replace(
                self._row,
                last_seq=st.last_seq,
                token_total=st.token_total,
                message_count=st.message_count,
                last_round_seq=st.last_round_seq,
                prefix_seq=st.prefix_seq,
                updated_at=self._updated_at,
                pending_tool_calls=tuple(ToolCallState.from_json(st.tool_state).pending),
            )
        return info

    @property
    def _tool_state(self) -> str | None:
        return self._state.tool_state

    @property
    def id(self) -> str:
        return self._info.id

    @property
    def owner(self) -> str | None:
        return self._info.owner

    @property
    def model(self) -> str:
        return self._info.model

    @property
    def encoding(self) -> str:
        return self._info.encoding

    @property
    def info(self) -> ConversationInfo:
        """The row as last read or written by this handle (see ``refresh``)."""
        return self._info

    def __repr__(self) -> str:
        return f"<{type(self).__name__} id={self.id!r} owner={self.owner!r} model={self.model!r}>"

    def estimate(self, kwargs: Mapping[str, Any]) -> _turns.Estimate:
        """The most a request (``request()``'s kwargs) can cost: exact prompt tokens, the
        completion tokens it allows, and their price in the ledger's price table. No I/O."""
        return _turns.estimate(self._config, kwargs)

    def _subject(self, guard: Budget) -> str:
        if guard.scope == "owner":
            return f"owner {self.owner!r}"
        return f"conversation {self.id!r}"

    @property
    def counter(self) -> TokenCounter:
        """The token counter for this conversation's model."""
        return self._config.counter(self.model)

    def _seen(self) -> ops.State:
        return self._state

    def _append_args(
        self,
        items: Sequence[object],
        metas: Sequence[Mapping[str, Any] | None] | None,
        status: str | None,
        key: str | None,
        fast: bool = True,
    ) -> tuple[Any, ...]:
        """Check, serialise and count a batch: the arguments of ``ops.append`` after the
        connection, the same for both twins. ``fast`` lets the write trust the handle's state
        (see ``ops.append``)."""
        counter = self._config.counter(self.model)
        batch, depends = self._config.prepare(items, counter, metas, status, self._tool_state)
        against: str | Literal[False] | None = self._tool_state if depends else False
        return self._pk, counter.profile, against, batch, key, self._seen() if fast else None

    def _record_args(
        self,
        reply: Any,
        metadata: Mapping[str, Any] | None,
        key: str | None,
        values: dict[str, Any],
        fast: bool = True,
    ) -> tuple[Any, ...]:
        """The arguments of ``ops.record_reply`` after the connection."""
        if reply.message is None:
            return self._pk, self.counter.profile, False, [], key, values, None
        pk, profile, against, batch, key, seen = self._append_args(
            [reply.message], [metadata], reply.status, key, fast
        )
        return pk, profile, against, batch, key, values, seen

    def _after_write(self, done: ops.Appended) -> list[StoredMessage]:
        stored = done.stored
        if done.state is not None and done.state.last_seq > self._state.last_seq:
            self._state = done.state
            self._updated_at = stored[-1].created_at
            self._cached_info = None
        return stored

    def _update_plan(
        self,
        config: LedgerConfig,
        model: str | None,
        title: str | None,
        metadata: Mapping[str, Any] | None,
    ) -> Callable[[Connection], ops.Loaded]:
        """Check an update's arguments; return the transaction body that applies it."""
        values: dict[str, Any] = {}
        if title is not None:
            if not isinstance(title, str) or len(title) > 1024 or "\x00" in title:
                raise InvalidArgumentError("title", "must be a string of at most 1024 characters")
            values["title"] = title
        if metadata is not None:
            values["meta"] = dump_json(metadata, "metadata")
        current = config.counter(self.model)
        counter = None
        if model is not None and model != self.model:
            counter = config.counter(config.check_model(model))
        pk = self._pk

        def run(conn: Connection) -> ops.Loaded:
            if counter is not None:
                if counter.profile != current.profile:
                    ops.recount(conn, pk, counter)
                values.update(
                    model=counter.model,
                    encoding=counter.encoding_name,
                    token_profile=counter.profile,
                )
            return ops.update_conversation(conn, pk, values)

        return run


class Conversation(_Handle):
    """A stored conversation, used from synchronous code. Get one from :class:`Ledger`."""

    def __init__(self, ledger: Ledger, loaded: ops.Loaded) -> None:
        self._ledger = ledger
        self._config = ledger._config
        self._load(loaded)

    def append(
        self,
        message: object,
        *,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> StoredMessage:
        """Store one message at the end; returns it with its seq and token counts."""
        return self._write([message], [metadata], idempotency_key)[0]

    def extend(
        self,
        messages: Iterable[object],
        *,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
        idempotency_key: str | None = None,
    ) -> list[StoredMessage]:
        """Store several messages atomically: all of them, in order, or none. ``metadata``,
        when given, holds one entry (or None) per message."""
        items = list(messages)
        return self._write(items, _metas(items, metadata), idempotency_key)

    def _write(
        self,
        items: Sequence[object],
        metas: Sequence[Mapping[str, Any] | None] | None,
        key: str | None,
        status: str | None = None,
    ) -> list[StoredMessage]:
        _check_key(key)
        if not items:
            return []
        fast = True
        for _ in range(_MAX_APPEND_RETRIES):
            args = self._append_args(items, metas, status, key, fast)
            try:
                with db_errors(), self._ledger.engine.begin() as conn:
                    done = ops.append(conn, *args)
            except ops.Stale:
                self.refresh()
                continue
            except sa_exc.IntegrityError:
                if not fast:
                    raise
                fast = False  # a reused idempotency key: let the locked path replay it
                continue
            except ConversationNotFoundError:
                raise ConversationNotFoundError(self.id) from None
            return self._after_write(done)
        raise StorageError("the conversation's model kept changing during the write; retry")

    def records(
        self, *, start: int | None = None, stop: int | None = None, limit: int | None = None
    ) -> list[StoredMessage]:
        """Stored messages with ``start <= seq < stop`` (seq counts from 1), oldest first."""
        _check_range(start, stop, limit)
        with db_errors(), self._ledger.engine.connect() as conn:
            return ops.read_records(conn, self._pk, start, stop, limit)

    def messages(
        self, *, start: int | None = None, stop: int | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """The history (or a seq range of it) as API-ready dicts, oldest first."""
        return [r.message for r in self.records(start=start, stop=stop, limit=limit)]

    def last(self, n: int) -> list[StoredMessage]:
        """The newest ``n`` stored messages, oldest first: one indexed query."""
        _check_range(None, None, n)
        with db_errors(), self._ledger.engine.connect() as conn:
            return ops.read_records(conn, self._pk, None, None, n, newest=True)

    def count_tokens(self, tools: Sequence[Mapping[str, Any]] | None = None) -> int:
        """Prompt tokens of a request carrying the whole stored history, from stored totals."""
        with db_errors(), self._ledger.engine.connect() as conn:
            info = self._load(ops.find_conversation(conn, self.id, None))
            system = ops.system_text(conn, self._pk) if tools else None
        return info.token_total + self.counter.priming + self.counter.tools(tools, system=system)

    @overload
    def window(
        self,
        strategy: Strategy | Sequence[Strategy] | None = None,
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: Any = None,
        reserve: int = 0,
        explain: Literal[False] = False,
    ) -> list[dict[str, Any]]: ...
    @overload
    def window(
        self,
        strategy: Strategy | Sequence[Strategy] | None = None,
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: Any = None,
        reserve: int = 0,
        explain: Literal[True],
    ) -> Window: ...

    def window(
        self,
        strategy: Strategy | Sequence[Strategy] | None = None,
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: Any = None,
        reserve: int = 0,
        explain: bool = False,
    ) -> list[dict[str, Any]] | Window:
        """The ``messages`` to send this turn: valid for the API and within the strategy's
        budget, reading only the newest part of the history it needs.

        ``strategy`` is one strategy or a list applied in order; None sends everything.
        ``tools`` (and ``tool_choice``) are counted against the budget, and a token budget
        leaves at least ``reserve`` tokens for the completion. With ``explain=True`` a
        :class:`Window` says what was kept, summarised and dropped, with token counts.
        """
        job = WindowJob.start(strategy, self.counter, tools, tool_choice, reserve)
        engine = self._ledger.engine
        with db_errors(), engine.connect() as conn:
            snap = ops.window_snapshot(conn, self._pk, job.lookback, job.with_summary)
        self._load(snap.loaded)
        view = job.view(snap, self.id)
        rows = snap.rows_read
        steps = plan_window(job.chain, view, snap.summary, self.counter)
        try:
            request = next(steps)
            while True:
                request = steps.send(self._fold(request))
        except StopIteration as done:
            plan: Plan = done.value
        tail = snap.tail(plan.start)
        if tail is None:
            with db_errors(), engine.connect() as conn:
                tail = ops.read_records(
                    conn, self._pk, plan.start, snap.loaded.info.last_seq + 1, None
                )
            rows += len(tail)
        result = job.result(snap, view, plan, tail, rows)
        return result if explain else result.messages

    def _fold(self, req: FoldRequest) -> tuple[int, str] | None:
        """Summarise one fold and store it; None when the summarizer failed."""
        with db_errors(), self._ledger.engine.connect() as conn:
            recs = ops.read_records(conn, self._pk, req.from_seq, req.upto_seq + 1, None)
        text = call_summarizer(req, [r.message for r in recs], self.id)
        if text is None:
            return None
        tokens = self.counter.message(req.strategy.message(text))
        model = getattr(req.strategy.summarizer, "model", None)
        with db_errors(), self._ledger.engine.begin() as conn:
            ops.save_summary(conn, self._pk, req.upto_seq, text, tokens, _model_name(model))
        return req.upto_seq, text

    # --- the chat completion round trip ----------------------------------------------------

    def request(
        self,
        strategy: Strategy | Sequence[Strategy] | None = None,
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        budget: Budget | Sequence[Budget] | None = None,
        **params: Any,
    ) -> dict[str, Any]:
        """The keyword arguments for ``client.chat.completions.create(**kwargs)``.

        ``messages`` is this turn's window, with room left for ``max_tokens`` /
        ``max_completion_tokens``. Every parameter is checked first
        (:class:`InvalidParameterError`), and the ledger's and ``budget``'s ceilings
        (:class:`BudgetExceededError`) before anything is sent.
        """
        return self._request(strategy, tools, budget, params)[0]

    def _request(
        self,
        strategy: Strategy | Sequence[Strategy] | None,
        tools: Sequence[Mapping[str, Any]] | None,
        budget: Budget | Sequence[Budget] | None,
        params: Mapping[str, Any],
    ) -> tuple[dict[str, Any], int]:
        config = self._ledger._config
        checked = _turns.request_params(self.model, tools, params)
        guards = _turns.budgets_for(config, budget)
        room = _turns.completion_room(checked)
        w = self.window(
            strategy,
            tools=tools,
            tool_choice=checked.get("tool_choice"),
            reserve=room,
            explain=True,
        )
        validate_params(checked, messages=w.messages)
        if guards:
            needed = _turns.needed_spend(config, checked["model"], w.prompt_tokens, room)
            with db_errors(), self._ledger.engine.connect() as conn:
                for guard in guards:
                    used = self._used(conn, guard)
                    guard.check(used, needed, subject=self._subject(guard))
        return {**checked, "messages": w.messages}, w.prompt_tokens

    def _used(self, conn: Connection, guard: Budget) -> Spend:
        since = guard.since(ops.utcnow())
        owner = self.owner if guard.scope == "owner" else None
        if guard.scope == "owner" and owner is None:
            raise InvalidArgumentError("budget", "an owner budget needs a conversation owner")
        pk = self._pk if guard.scope == "conversation" else None
        t = ops.usage_totals(conn, pk, owner, since, None)
        return Spend(t.total_tokens, t.cost_micros)

    def record(
        self,
        completion: object,
        *,
        choice: int = 0,
        idempotency_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        prompt_tokens: int | None = None,
    ) -> Recorded:
        """Store a response: choice ``choice``'s message (cut off, filtered or incomplete
        replies are marked in its ``status``) and the usage row with every choice and its
        cost. Recording the same response twice stores it once (its id is the key)."""
        reply = _turns.parse_reply(completion, choice, self.counter, prompt_tokens)
        key = _turns.record_key(reply, idempotency_key)
        _check_key(key)
        config = self._ledger._config
        values = _turns.usage_values(config, reply, self.model)
        fast = True
        for _ in range(_MAX_APPEND_RETRIES):
            args = self._record_args(reply, metadata, key, values, fast)
            try:
                with db_errors(), self._ledger.engine.begin() as conn:
                    done, usage = ops.record_reply(conn, *args)
            except ops.Stale:
                self.refresh()
                continue
            except sa_exc.IntegrityError:
                if not fast:
                    raise
                fast = False  # a reused idempotency key: let the locked path replay it
                continue
            except ConversationNotFoundError:
                raise ConversationNotFoundError(self.id) from None
            message = self._after_write(done)[0] if done is not None else None
            return _turns.Recorded(message, usage)
        raise StorageError("the conversation's model kept changing during the write; retry")

    def stream(
        self, stream: Any, *, choice: int = 0, prompt_tokens: int | None = None
    ) -> StreamRecorder:
        """Wrap a ``stream=True`` response: iterate it to pass the chunks on; the reply is
        recorded when the stream ends, or what arrived (marked incomplete) when it breaks."""

        def finish(completion: dict[str, Any], broken: bool) -> Recorded | None:
            if not completion["choices"] and broken:
                return None
            return self.record(completion, choice=choice, prompt_tokens=prompt_tokens)

        return StreamRecorder(stream, finish)

    def chat(
        self,
        client: Any,
        message: object | None = None,
        *,
        strategy: Strategy | Sequence[Strategy] | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        budget: Budget | Sequence[Budget] | None = None,
        choice: int = 0,
        **params: Any,
    ) -> Any:
        """One turn: append ``message`` (text means a user message), build the request, send it
        with ``client`` (an ``openai.OpenAI``), record the reply and return the response. With
        ``stream=True`` it returns a :class:`StreamRecorder` to iterate."""
        if message is not None:
            self.append(_turns.user_message(message))
        kwargs, prompt = self._request(strategy, tools, budget, params)
        response = client.chat.completions.create(**kwargs)
        if kwargs.get("stream"):
            return self.stream(response, choice=choice, prompt_tokens=prompt)
        self.record(response, choice=choice, prompt_tokens=prompt)
        return response

    def usage(self, *, since: datetime | None = None, until: datetime | None = None) -> UsageTotals:
        """Usage and cost of this conversation, ``since <= t < until``."""
        with db_errors(), self._ledger.engine.connect() as conn:
            return ops.usage_totals(conn, self._pk, None, since, until)

    def usage_records(self, *, limit: int | None = None) -> list[UsageRecord]:
        """The usage ledger rows of this conversation, oldest first (the newest ``limit``)."""
        _check_range(None, None, limit)
        with db_errors(), self._ledger.engine.connect() as conn:
            return ops.usage_records(conn, self._pk, limit)

    def refresh(self) -> ConversationInfo:
        """Read the conversation's row again (another worker may have written since)."""
        with db_errors(), self._ledger.engine.connect() as conn:
            try:
                self._load(ops.find_conversation(conn, self.id, None))
            except ConversationNotFoundError:
                raise ConversationNotFoundError(self.id) from None
        return self._info

    def update(
        self,
        *,
        model: str | None = None,
        title: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> ConversationInfo:
        """Change the title, metadata or model. A model that counts tokens differently has
        every stored message re-counted, once, in the same transaction."""
        run = self._update_plan(self._ledger._config, model, title, metadata)
        with db_errors(), self._ledger.engine.begin() as conn:
            self._load(run(conn))
        return self._info

    def delete(self) -> None:
        """Delete the conversation with its messages, summaries and usage records."""
        self._ledger.delete(self.id)


class AsyncConversation(_Handle):
    """The async twin of :class:`Conversation`. Get one from :class:`AsyncLedger`."""

    def __init__(self, ledger: AsyncLedger, loaded: ops.Loaded) -> None:
        self._ledger = ledger
        self._config = ledger._config
        self._load(loaded)

    async def append(
        self,
        message: object,
        *,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> StoredMessage:
        """Store one message at the end; returns it with its seq and token counts."""
        return (await self._write([message], [metadata], idempotency_key))[0]

    async def extend(
        self,
        messages: Iterable[object],
        *,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
        idempotency_key: str | None = None,
    ) -> list[StoredMessage]:
        """Store several messages atomically (see :meth:`Conversation.extend`)."""
        items = list(messages)
        return await self._write(items, _metas(items, metadata), idempotency_key)

    async def _write(
        self,
        items: Sequence[object],
        metas: Sequence[Mapping[str, Any] | None] | None,
        key: str | None,
        status: str | None = None,
    ) -> list[StoredMessage]:
        _check_key(key)
        if not items:
            return []
        fast = True
        for _ in range(_MAX_APPEND_RETRIES):
            args = self._append_args(items, metas, status, key, fast)
            try:
                with db_errors():
                    async with self._ledger.engine.begin() as conn:
                        done = await conn.run_sync(ops.append, *args)
            except ops.Stale:
                await self.refresh()
                continue
            except sa_exc.IntegrityError:
                if not fast:
                    raise
                fast = False  # a reused idempotency key: let the locked path replay it
                continue
            except ConversationNotFoundError:
                raise ConversationNotFoundError(self.id) from None
            return self._after_write(done)
        raise StorageError("the conversation's model kept changing during the write; retry")

    async def records(
        self, *, start: int | None = None, stop: int | None = None, limit: int | None = None
    ) -> list[StoredMessage]:
        """Stored messages with ``start <= seq < stop`` (seq counts from 1), oldest first."""
        _check_range(start, stop, limit)
        with db_errors():
            async with self._ledger.engine.connect() as conn:
                return await conn.run_sync(ops.read_records, self._pk, start, stop, limit)

    async def messages(
        self, *, start: int | None = None, stop: int | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """The history (or a seq range of it) as API-ready dicts, oldest first."""
        return [r.message for r in await self.records(start=start, stop=stop, limit=limit)]

    async def last(self, n: int) -> list[StoredMessage]:
        """The newest ``n`` stored messages, oldest first: one indexed query."""
        _check_range(None, None, n)
        with db_errors():
            async with self._ledger.engine.connect() as conn:
                return await conn.run_sync(ops.read_records, self._pk, None, None, n, True)

    async def count_tokens(self, tools: Sequence[Mapping[str, Any]] | None = None) -> int:
        """Prompt tokens of a request carrying the whole stored history, from stored totals."""

        def run(conn: Connection) -> tuple[ConversationInfo, str | None]:
            info = self._load(ops.find_conversation(conn, self.id, None))
            return info, ops.system_text(conn, self._pk) if tools else None

        with db_errors():
            async with self._ledger.engine.connect() as conn:
                info, system = await conn.run_sync(run)
        return info.token_total + self.counter.priming + self.counter.tools(tools, system=system)

    @overload
    async def window(
        self,
        strategy: Strategy | Sequence[Strategy] | None = None,
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: Any = None,
        reserve: int = 0,
        explain: Literal[False] = False,
    ) -> list[dict[str, Any]]: ...

    @overload
    async def window(
        self,
        strategy: Strategy | Sequence[Strategy] | None = None,
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: Any = None,
        reserve: int = 0,
        explain: Literal[True],
    ) -> Window: ...

    async def window(
        self,
        strategy: Strategy | Sequence[Strategy] | None = None,
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: Any = None,
        reserve: int = 0,
        explain: bool = False,
    ) -> list[dict[str, Any]] | Window:
        """The ``messages`` to send this turn (see :meth:`Conversation.window`)."""
        job = WindowJob.start(strategy, self.counter, tools, tool_choice, reserve)
        engine = self._ledger.engine
        with db_errors():
            async with engine.connect() as conn:
                snap = await conn.run_sync(
                    ops.window_snapshot, self._pk, job.lookback, job.with_summary
                )
        self._load(snap.loaded)
        view = job.view(snap, self.id)
        steps = plan_window(job.chain, view, snap.summary, self.counter)
        try:
            request = next(steps)
            while True:
                request = steps.send(await self._fold(request))
        except StopIteration as done:
            plan: Plan = done.value
        last = snap.loaded.info.last_seq
        rows = snap.rows_read
        tail = snap.tail(plan.start)
        if tail is None:
            with db_errors():
                async with engine.connect() as conn:
                    tail = await conn.run_sync(
                        ops.read_records, self._pk, plan.start, last + 1, None
                    )
            rows += len(tail)
        result = job.result(snap, view, plan, tail, rows)
        return result if explain else result.messages

    async def _fold(self, req: FoldRequest) -> tuple[int, str] | None:
        """Summarise one fold and store it; None when the summarizer failed."""
        engine = self._ledger.engine
        with db_errors():
            async with engine.connect() as conn:
                recs = await conn.run_sync(
                    ops.read_records, self._pk, req.from_seq, req.upto_seq + 1, None
                )
        text = await call_summarizer_async(req, [r.message for r in recs], self.id)
        if text is None:
            return None
        tokens = self.counter.message(req.strategy.message(text))
        model = _model_name(getattr(req.strategy.summarizer, "model", None))
        with db_errors():
            async with engine.begin() as conn:
                await conn.run_sync(ops.save_summary, self._pk, req.upto_seq, text, tokens, model)
        return req.upto_seq, text

    # --- the chat completion round trip ----------------------------------------------------

    async def request(
        self,
        strategy: Strategy | Sequence[Strategy] | None = None,
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        budget: Budget | Sequence[Budget] | None = None,
        **params: Any,
    ) -> dict[str, Any]:
        """The keyword arguments for ``await client.chat.completions.create(**kwargs)`` (see
        :meth:`Conversation.request`)."""
        return (await self._request(strategy, tools, budget, params))[0]

    async def _request(
        self,
        strategy: Strategy | Sequence[Strategy] | None,
        tools: Sequence[Mapping[str, Any]] | None,
        budget: Budget | Sequence[Budget] | None,
        params: Mapping[str, Any],
    ) -> tuple[dict[str, Any], int]:
        config = self._ledger._config
        checked = _turns.request_params(self.model, tools, params)
        guards = _turns.budgets_for(config, budget)
        room = _turns.completion_room(checked)
        w = await self.window(
            strategy,
            tools=tools,
            tool_choice=checked.get("tool_choice"),
            reserve=room,
            explain=True,
        )
        validate_params(checked, messages=w.messages)
        if guards:
            needed = _turns.needed_spend(config, checked["model"], w.prompt_tokens, room)
            for guard in guards:
                if guard.scope == "owner" and self.owner is None:
                    raise InvalidArgumentError(
                        "budget", "an owner budget needs a conversation owner"
                    )
                since = guard.since(ops.utcnow())
                owner = self.owner if guard.scope == "owner" else None
                pk = self._pk if guard.scope == "conversation" else None
                with db_errors():
                    async with self._ledger.engine.connect() as conn:
                        t = await conn.run_sync(ops.usage_totals, pk, owner, since, None)
                guard.check(
                    Spend(t.total_tokens, t.cost_micros), needed, subject=self._subject(guard)
                )
        return {**checked, "messages": w.messages}, w.prompt_tokens

    async def record(
        self,
        completion: object,
        *,
        choice: int = 0,
        idempotency_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        prompt_tokens: int | None = None,
    ) -> Recorded:
        """Store a response's message and usage (see :meth:`Conversation.record`)."""
        reply = _turns.parse_reply(completion, choice, self.counter, prompt_tokens)
        key = _turns.record_key(reply, idempotency_key)
        _check_key(key)
        config = self._ledger._config
        values = _turns.usage_values(config, reply, self.model)
        fast = True
        for _ in range(_MAX_APPEND_RETRIES):
            args = self._record_args(reply, metadata, key, values, fast)
            try:
                with db_errors():
                    async with self._ledger.engine.begin() as conn:
                        done, usage = await conn.run_sync(ops.record_reply, *args)
            except ops.Stale:
                await self.refresh()
                continue
            except sa_exc.IntegrityError:
                if not fast:
                    raise
                fast = False  # a reused idempotency key: let the locked path replay it
                continue
            except ConversationNotFoundError:
                raise ConversationNotFoundError(self.id) from None
            message = self._after_write(done)[0] if done is not None else None
            return _turns.Recorded(message, usage)
        raise StorageError("the conversation's model kept changing during the write; retry")

    def stream(
        self, stream: Any, *, choice: int = 0, prompt_tokens: int | None = None
    ) -> AsyncStreamRecorder:
        """Wrap an async ``stream=True`` response (see :meth:`Conversation.stream`)."""

        async def finish(completion: dict[str, Any], broken: bool) -> Recorded | None:
            if not completion["choices"] and broken:
                return None
            return await self.record(completion, choice=choice, prompt_tokens=prompt_tokens)

        return AsyncStreamRecorder(stream, finish)

    async def chat(
        self,
        client: Any,
        message: object | None = None,
        *,
        strategy: Strategy | Sequence[Strategy] | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        budget: Budget | Sequence[Budget] | None = None,
        choice: int = 0,
        **params: Any,
    ) -> Any:
        """One turn with an ``openai.AsyncOpenAI`` client (see :meth:`Conversation.chat`)."""
        if message is not None:
            await self.append(_turns.user_message(message))
        kwargs, prompt = await self._request(strategy, tools, budget, params)
        response = await client.chat.completions.create(**kwargs)
        if kwargs.get("stream"):
            return self.stream(response, choice=choice, prompt_tokens=prompt)
        await self.record(response, choice=choice, prompt_tokens=prompt)
        return response

    async def usage(
        self, *, since: datetime | None = None, until: datetime | None = None
    ) -> UsageTotals:
        """Usage and cost of this conversation, ``since <= t < until``."""
        with db_errors():
            async with self._ledger.engine.connect() as conn:
                return await conn.run_sync(ops.usage_totals, self._pk, None, since, until)

    async def usage_records(self, *, limit: int | None = None) -> list[UsageRecord]:
        """The usage ledger rows of this conversation, oldest first (the newest ``limit``)."""
        _check_range(None, None, limit)
        with db_errors():
            async with self._ledger.engine.connect() as conn:
                return await conn.run_sync(ops.usage_records, self._pk, limit)

    async def refresh(self) -> ConversationInfo:
        """Read the conversation's row again (another worker may have written since)."""
        with db_errors():
            async with self._ledger.engine.connect() as conn:
                try:
                    self._load(await conn.run_sync(ops.find_conversation, self.id, None))
                except ConversationNotFoundError:
                    raise ConversationNotFoundError(self.id) from None
        return self._info

    async def update(
        self,
        *,
        model: str | None = None,
        title: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> ConversationInfo:
        """Change the title, metadata or model (see :meth:`Conversation.update`)."""
        run = self._update_plan(self._ledger._config, model, title, metadata)
        with db_errors():
            async with self._ledger.engine.begin() as conn:
                self._load(await conn.run_sync(run))
        return self._info

    async def delete(self) -> None:
        """Delete the conversation with its messages, summaries and usage records."""
        await self._ledger.delete(self.id)
