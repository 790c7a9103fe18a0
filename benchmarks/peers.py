"""What users would pick instead of chatledger, each behind one small interface for the harness.

Every peer stores a history, then appends one message at a time and builds an OpenAI-format
``messages`` window within a token budget for gpt-4o, the way its own documentation says to:

- :class:`LangChainPeer`: ``SQLChatMessageHistory`` + ``trim_messages`` (the documented recipe),
  with an exact counter (``chatledger.count_tokens`` on the converted messages).
- :class:`AgentsSDKPeer`: the OpenAI Agents SDK's ``SQLiteSession`` (Responses-style items) +
  the newest-first trimming a caller has to write, counted exactly.
- :class:`LlamaIndexPeer`: LlamaIndex ``Memory`` on its ``SQLAlchemyChatStore``; its window is
  whatever ``get()`` returns (its token limit is applied when messages are put).
- :class:`ChatledgerPeer`: chatledger itself through the same interface.
- :class:`RawCoreInsert` and :func:`raw_tiktoken_encode`: floors, not peers.

Peers are measured as they are: nothing here fixes a peer's window; the harness reports each
window's correctness with ``workload.is_correct_window``.

The interface (:class:`Peer`)::

    peer.setup(target, history)  # store the history in bulk (untimed); leaves an instance open
    peer.window(budget)          # warm: the open instance
    peer.open()                  # cold: a fresh instance on the existing database
    peer.append(message)         # one message, durably
    peer.close()                 # the end: releases everything, drops what it made on a server

``target`` is a SQLite file path, or a SQLAlchemy URL of a server database
(``postgresql://...``) for peers with ``supports_postgres``. Names are unique per ``setup``
(``session_id``, table names), so peers can share one database; on a server, :meth:`close`
drops the peer's tables or rows (a SQLite file is left to the caller, e.g. a temporary folder).

:meth:`open` retires the current instance without closing it (its engine and connections are
released by :meth:`close`), so a timed ``open(); window(b)`` measures a fresh instance's first
use and no teardown. The async peers (Agents SDK, LlamaIndex) keep one event loop per peer
object, made in :meth:`setup` and closed in :meth:`close`, and run the libraries' own async
methods on it with ``run_until_complete``: no timing includes starting a loop.

Nothing here touches the network: tokenizers are chatledger's bundled encodings
(``chatledger.encoding_for_model``; never ``tiktoken.get_encoding``, which downloads), and no
LLM is called.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar, runtime_checkable

import chatledger as cl
from chatledger.tokens import encoding_for_model

MODEL = "gpt-4o"
DEFAULT_BUDGET = 8000

_T = TypeVar("_T")

__all__ = [
    "MODEL",
    "AgentsSDKPeer",
    "ChatledgerPeer",
    "LangChainPeer",
    "LlamaIndexPeer",
    "Peer",
    "RawCoreInsert",
    "all_peers",
    "message_texts",
    "pg_database",
    "raw_tiktoken_encode",
]


@runtime_checkable
class Peer(Protocol):
    name: str
    supports_postgres: bool

    def setup(self, path: str, history: list[dict[str, Any]]) -> None: ...
    def open(self) -> None: ...
    def append(self, message: dict[str, Any]) -> None: ...
    def window(self, budget: int) -> list[dict[str, Any]]: ...
    def close(self) -> None: ...


# --- targets ----------------------------------------------------------------------------------


def _is_server(target: str) -> bool:
    return "://" in target and not target.startswith("sqlite")


def _sync_url(target: str) -> str:
    """A synchronous SQLAlchemy URL: ``sqlite:///path`` for a file, psycopg for PostgreSQL."""
    if not _is_server(target):
        return target if target.startswith("sqlite") else f"sqlite:///{target}"
    from sqlalchemy import make_url

    u = make_url(target)
    if u.drivername == "postgresql":
        u = u.set(drivername="postgresql+psycopg")
    return u.render_as_string(hide_password=False)


def _async_url(target: str) -> str:
    """An async SQLAlchemy URL: aiosqlite for a file, asyncpg for PostgreSQL."""
    if not _is_server(target):
        path = target.removeprefix("sqlite:///")
        return f"sqlite+aiosqlite:///{path}"
    from sqlalchemy import make_url

    u = make_url(target)
    u = u.set(drivername=f"{u.get_backend_name()}+asyncpg")
    return u.render_as_string(hide_password=False)


def _sqlite_path(target: str) -> str:
    return target.removeprefix("sqlite:///")


def _drop_tables(target: str, names: Sequence[str]) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(_sync_url(target))
    try:
        with engine.begin() as conn:
            for name in names:
                conn.execute(text(f'DROP TABLE IF EXISTS "{name}"'))
    finally:
        engine.dispose()


@contextmanager
def pg_database(base_url: str = "postgresql://postgres@127.0.0.1:5432/test") -> Iterator[str]:
    """A PostgreSQL database of its own for one run (as the test suite does), dropped after."""
    from sqlalchemy import create_engine, make_url, text

    name = f"chatledger_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(_sync_url(base_url), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
        yield make_url(base_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def _run_id() -> str:
    return uuid.uuid4().hex[:10]


class _Base:
    """Bookkeeping shared by the peers: the target, retired instances, the drop on close."""

    name = "?"
    supports_postgres = True

    def __init__(self) -> None:
        self._target: str | None = None
        self._id = ""
        self._dropped = False

    def _begin(self, path: str) -> None:
        if _is_server(path) and not self.supports_postgres:
            raise NotImplementedError(f"{self.name} stores in SQLite files only")
        self._target = path
        self._id = _run_id()
        self._dropped = False

    @property
    def target(self) -> str:
        if self._target is None:
            raise RuntimeError(f"{self.name}: setup() first")
        if self._dropped:
            raise RuntimeError(f"{self.name}: closed, and its data was dropped from the server")
        return self._target


class _Loop:
    """One event loop per peer object, kept open between operations."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None

    def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        if self._loop is None or self._loop.is_closed():
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(coro)

    def close(self) -> None:
        loop, self._loop = self._loop, None
        if loop is not None and not loop.is_closed():
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()


# --- LangChain --------------------------------------------------------------------------------


def _to_langchain(m: dict[str, Any]) -> Any:
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

    role, content = m["role"], m.get("content")
    extra: dict[str, Any] = {"name": m["name"]} if m.get("name") else {}
    if role in ("system", "developer"):
        return SystemMessage(content=content, **extra)
    if role == "user":
        return HumanMessage(content=content, **extra)
    if role == "assistant":
        calls = [
            {
                "name": c["function"]["name"],
                "args": json.loads(c["function"]["arguments"]),
                "id": c["id"],
                "type": "tool_call",
            }
            for c in m.get("tool_calls") or ()
        ]
        return AIMessage(content=content or "", tool_calls=calls, **extra)
    if role == "tool":
        return ToolMessage(content=content, tool_call_id=m["tool_call_id"])
    raise ValueError(f"no LangChain message class for role {role!r}")


def _langchain_counter(messages: list[Any]) -> int:
    """The exact counter given to ``trim_messages``: the converted messages, as billed."""
    from langchain_core.messages import convert_to_openai_messages

    return cl.count_tokens(convert_to_openai_messages(messages), MODEL)


class LangChainPeer(_Base):
    """``langchain_community`` ``SQLChatMessageHistory`` and ``langchain_core`` ``trim_messages``.

    Its window loads every stored message (``history.messages``), then ``trim_messages`` with
    ``strategy="last"``, ``include_system=True``, ``start_on="human"``, ``allow_partial=False``
    and an exact list counter, as LangChain's docs recommend; ``trim_messages`` counts the
    system message alone and binary-searches the reversed history, calling the counter on
    long lists. The engine is SQLAlchemy's default for the URL (no WAL on SQLite).
    """

    name = "langchain"
    supports_postgres = True

    def __init__(self) -> None:
        super().__init__()
        self._history: Any = None
        self._retired: list[Any] = []

    @property
    def _table(self) -> str:
        return f"lc_message_store_{self._id}"

    def _new(self) -> Any:
        from langchain_community.chat_message_histories import SQLChatMessageHistory

        return SQLChatMessageHistory(
            session_id=f"bench-{self._id}",
            connection=_sync_url(self.target),
            table_name=self._table,
        )

    def setup(self, path: str, history: list[dict[str, Any]]) -> None:
        self._begin(path)
        self._history = self._new()
        self._history.add_messages([_to_langchain(m) for m in history])

    def open(self) -> None:
        if self._history is not None:
            self._retired.append(self._history)
        self._history = self._new()

    def append(self, message: dict[str, Any]) -> None:
        self._history.add_message(_to_langchain(message))

    def window(self, budget: int) -> list[dict[str, Any]]:
        from langchain_core.messages import convert_to_openai_messages, trim_messages

        kept = trim_messages(
            self._history.messages,
            max_tokens=budget,
            strategy="last",
            token_counter=_langchain_counter,
            include_system=True,
            start_on="human",
            allow_partial=False,
        )
        return convert_to_openai_messages(kept)

    def close(self) -> None:
        instances = [*self._retired, self._history]
        self._retired, self._history = [], None
        for h in instances:
            if h is not None:
                h.session_maker.remove()
                h.engine.dispose()
        if self._target is not None and _is_server(self._target) and not self._dropped:
            _drop_tables(self._target, [self._table])
            self._dropped = True


# --- OpenAI Agents SDK ------------------------------------------------------------------------


def _to_agents_items(m: dict[str, Any]) -> list[dict[str, Any]]:
    """A Chat Completions message as the SDK's session stores it after a run.

    User and system input is an ``EasyInputMessage`` (``{"content", "role"}``, as the runner
    stores a string input); an assistant message is what the SDK's own Chat Completions
    converter makes of a model reply (``Converter.message_to_output_items``: a ``message`` item
    with ``output_text`` and/or one ``function_call`` item per tool call), dumped with
    ``exclude_unset`` as ``RunItem.to_input_item()`` does; a tool result is a
    ``function_call_output`` item, as ``ItemHelpers.tool_call_output_item`` makes it.
    """
    from agents.models.chatcmpl_converter import Converter
    from openai.types.chat import ChatCompletionMessage

    role = m["role"]
    if role in ("system", "developer", "user"):
        content = m["content"]
        if not isinstance(content, str):
            content = [
                {"type": "input_text", "text": p["text"]} if p.get("type") == "text" else p
                for p in content
            ]
        return [{"content": content, "role": role}]
    if role == "assistant":
        reply = ChatCompletionMessage.model_validate(
            {"role": "assistant", "content": m.get("content"), "tool_calls": m.get("tool_calls")}
        )
        return [
            item.model_dump(exclude_unset=True) for item in Converter.message_to_output_items(reply)
        ]
    if role == "tool":
        return [
            {"call_id": m["tool_call_id"], "output": m["content"], "type": "function_call_output"}
        ]
    raise ValueError(f"no Agents SDK item for role {role!r}")


def _from_agents_items(items: list[Any]) -> list[dict[str, Any]]:
    """Session items back to Chat Completions messages, with the SDK's own converter (what its
    Chat Completions model sends)."""
    from agents.models.chatcmpl_converter import Converter

    return [dict(m) for m in Converter.items_to_messages(items)]


def newest_first_window(messages: list[dict[str, Any]], budget: int) -> list[dict[str, Any]]:
    """The trimming a caller of a session that has no window must write.

    Keep the leading system message, then take messages from the newest backwards while the
    exact count still fits, and never start on a tool result (orphan tool messages at the start
    are dropped). Each message is counted once, with chatledger's exact per-message share
    (``TokenCounter.message``, a tool result with the call it answers), whose sum plus the
    reply priming is ``chatledger.count_tokens`` of the window.
    """
    counter = cl.TokenCounter(MODEL)
    head: list[dict[str, Any]] = []
    rest = messages
    if messages and messages[0].get("role") in ("system", "developer"):
        head, rest = messages[:1], messages[1:]
    calls: dict[str, dict[str, Any]] = {}
    for m in rest:
        for c in m.get("tool_calls") or ():
            calls[c["id"]] = m
    total = counter.priming + sum(counter.message(m) for m in head)
    start = len(rest)
    while start > 0:
        m = rest[start - 1]
        answering = calls.get(m["tool_call_id"]) if m.get("role") == "tool" else None
        cost = counter.message(m, answering=answering)
        if total + cost > budget:
            break
        total += cost
        start -= 1
    while start < len(rest) and rest[start].get("role") == "tool":
        start += 1
    return head + rest[start:]


class AgentsSDKPeer(_Base):
    """The OpenAI Agents SDK's ``SQLiteSession`` (``agents.SQLiteSession(session_id, db_path)``).

    Sessions are async (each call runs its sqlite3 work in ``asyncio.to_thread``, with a
    thread-local connection per session); this peer keeps one event loop open for them. The
    session stores Responses-style items; its window is ``get_items()`` (every item), the SDK's
    converter to Chat Completions messages, then :func:`newest_first_window`. The session
    turns on WAL and keeps SQLite's default ``synchronous=FULL``. SQLite files only (the SDK's
    ``SQLAlchemySession`` extension is a different class).
    """

    name = "agents-sdk"
    supports_postgres = False

    def __init__(self) -> None:
        super().__init__()
        self._loop = _Loop()
        self._session: Any = None
        self._retired: list[Any] = []

    def _new(self) -> Any:
        from agents import SQLiteSession

        return SQLiteSession(f"bench-{self._id}", db_path=_sqlite_path(self.target))

    def setup(self, path: str, history: list[dict[str, Any]]) -> None:
        self._begin(path)
        self._session = self._new()
        items = [item for m in history for item in _to_agents_items(m)]
        self._loop.run(self._session.add_items(items))

    def open(self) -> None:
        if self._session is not None:
            self._retired.append(self._session)
        self._session = self._new()

    def append(self, message: dict[str, Any]) -> None:
        self._loop.run(self._session.add_items(_to_agents_items(message)))

    def window(self, budget: int) -> list[dict[str, Any]]:
        items = self._loop.run(self._session.get_items())
        return newest_first_window(_from_agents_items(items), budget)

    def close(self) -> None:
        sessions = [*self._retired, self._session]
        self._retired, self._session = [], None
        for s in sessions:
            if s is not None:
                s.close()
        self._loop.close()


# --- LlamaIndex -------------------------------------------------------------------------------


def _to_llama(m: dict[str, Any]) -> Any:
    """A message as LlamaIndex's OpenAI integration represents it: an assistant's tool calls as
    ``ToolCallBlock``s and ``additional_kwargs["tool_calls"]`` (as ``from_openai_message``
    does), a tool result with ``additional_kwargs["tool_call_id"]``."""
    from llama_index.core.base.llms.types import ChatMessage, TextBlock, ToolCallBlock

    role, content = m["role"], m.get("content")
    if role == "assistant" and m.get("tool_calls"):
        blocks: list[Any] = [TextBlock(text=content)] if content else []
        blocks += [
            ToolCallBlock(
                tool_call_id=c["id"],
                tool_name=c["function"]["name"],
                tool_kwargs=c["function"]["arguments"],
            )
            for c in m["tool_calls"]
        ]
        return ChatMessage(
            role="assistant", blocks=blocks, additional_kwargs={"tool_calls": m["tool_calls"]}
        )
    if role == "tool":
        return ChatMessage(
            role="tool", content=content, additional_kwargs={"tool_call_id": m["tool_call_id"]}
        )
    if not isinstance(content, str):
        raise ValueError("only text content is converted for LlamaIndex")
    return ChatMessage(role=role, content=content)


def _from_llama(msg: Any) -> dict[str, Any]:
    """What ``llama_index.llms.openai.utils.to_openai_message_dict`` makes of a text / tool-call
    message (that package pins ``openai<3``, the Agents SDK ``openai>=3``, so its rules for the
    blocks used here are restated instead of imported)."""
    from llama_index.core.base.llms.types import TextBlock, ToolCallBlock

    role = msg.role.value
    kwargs = msg.additional_kwargs
    text = "".join(b.text for b in msg.blocks if isinstance(b, TextBlock))
    calls = [
        {
            "type": "function",
            "function": {
                "name": b.tool_name,
                "arguments": b.tool_kwargs
                if isinstance(b.tool_kwargs, str)
                else json.dumps(b.tool_kwargs),
            },
            "id": b.tool_call_id,
        }
        for b in msg.blocks
        if isinstance(b, ToolCallBlock)
    ]
    has_calls = bool(calls) or "tool_calls" in kwargs or "function_call" in kwargs
    out: dict[str, Any] = {
        "role": role,
        "content": None if text == "" and role == "assistant" and has_calls else text,
    }
    if calls:
        out["tool_calls"] = calls
    elif "tool_calls" in kwargs or "function_call" in kwargs:
        out.update(kwargs)
    if "tool_call_id" in kwargs:
        out["tool_call_id"] = kwargs["tool_call_id"]
    return out


class LlamaIndexPeer(_Base):
    """LlamaIndex ``Memory.from_defaults(session_id=, token_limit=, tokenizer_fn=, ...)`` on its
    ``SQLAlchemyChatStore`` (aiosqlite for a file; asyncpg for PostgreSQL, which the store
    supports too).

    Its token limit is a property of the memory, applied when messages are put: each ``put``
    archives the oldest messages until the active ones fit ``token_limit *
    chat_history_token_ratio`` (0.7) as counted by ``tokenizer_fn`` on the text alone; ``get()``
    returns the active messages. So the budget is given at construction (``token_limit``), and
    :meth:`window` refuses another one. The system prompt is archived like any old message (the
    known issue); kept as is. ``tokenizer_fn`` is the bundled gpt-4o encoder's ``encode``
    (LlamaIndex's default tokenizer would download its BPE file). The store's engine is
    ``create_async_engine(uri)`` with no options, as the store makes it.
    """

    name = "llamaindex"
    supports_postgres = True
    budget_fixed_at_setup = True
    setup_chunk = 64  # messages per put while storing the history (a put per turn, in bulk)

    def __init__(self, token_limit: int = DEFAULT_BUDGET) -> None:
        super().__init__()
        self.token_limit = token_limit
        self._loop = _Loop()
        self._memory: Any = None
        self._engines: list[Any] = []

    @property
    def _table(self) -> str:
        return f"li_memory_{self._id}"

    def _new(self) -> Any:
        from llama_index.core.memory import Memory
        from sqlalchemy.ext.asyncio import create_async_engine

        engine = create_async_engine(_async_url(self.target))
        self._engines.append(engine)
        return Memory.from_defaults(
            session_id=f"bench-{self._id}",
            token_limit=self.token_limit,
            tokenizer_fn=encoding_for_model(MODEL).encode,
            table_name=self._table,
            async_engine=engine,
        )

    def setup(self, path: str, history: list[dict[str, Any]]) -> None:
        self._begin(path)
        self._memory = self._new()
        msgs = [_to_llama(m) for m in history]
        # put_messages runs the FIFO queue management once per call, and that loop re-counts
        # the whole active queue per flush: one call with the whole history is quadratic.
        for i in range(0, len(msgs), self.setup_chunk):
            self._loop.run(self._memory.aput_messages(msgs[i : i + self.setup_chunk]))

    def open(self) -> None:
        self._memory = self._new()

    def append(self, message: dict[str, Any]) -> None:
        self._loop.run(self._memory.aput(_to_llama(message)))

    def window(self, budget: int) -> list[dict[str, Any]]:
        if budget != self.token_limit:
            raise ValueError(
                f"LlamaIndex applies its token limit when messages are put: this memory was "
                f"made with token_limit={self.token_limit}, not {budget}"
            )
        return [_from_llama(m) for m in self._loop.run(self._memory.aget())]

    def close(self) -> None:
        engines, self._engines, self._memory = self._engines, [], None
        for engine in engines:
            self._loop.run(engine.dispose())
        self._loop.close()
        if self._target is not None and _is_server(self._target) and not self._dropped:
            _drop_tables(self._target, [self._table])
            self._dropped = True


# --- chatledger -------------------------------------------------------------------------------


class ChatledgerPeer(_Base):
    """chatledger through the peers' interface: ``Ledger(url)``, ``conversation(...)``,
    ``extend`` for the history, ``append``, ``window(TokenBudget(budget))``."""

    name = "chatledger"
    supports_postgres = True
    extend_chunk = 2000

    def __init__(self) -> None:
        super().__init__()
        self._ledger: cl.Ledger | None = None
        self._conv: cl.Conversation | None = None
        self._retired: list[cl.Ledger] = []

    @property
    def _cid(self) -> str:
        return f"bench-{self._id}"

    def setup(self, path: str, history: list[dict[str, Any]]) -> None:
        self._begin(path)
        self._ledger = cl.Ledger(_sync_url(self.target))
        self._conv = self._ledger.conversation(self._cid, model=MODEL)
        for i in range(0, len(history), self.extend_chunk):
            self._conv.extend(history[i : i + self.extend_chunk])

    def open(self) -> None:
        if self._ledger is not None:
            self._retired.append(self._ledger)
        self._ledger = cl.Ledger(_sync_url(self.target))
        self._conv = self._ledger.get(self._cid)

    def append(self, message: dict[str, Any]) -> None:
        assert self._conv is not None
        self._conv.append(message)

    def window(self, budget: int) -> list[dict[str, Any]]:
        assert self._conv is not None
        return self._conv.window(cl.TokenBudget(budget))

    def close(self) -> None:
        ledgers = [*self._retired, self._ledger]
        self._retired, self._ledger, self._conv = [], None, None
        server = self._target is not None and _is_server(self._target) and not self._dropped
        for i, ledger in enumerate(ledgers):
            if ledger is None:
                continue
            if server and i == len(ledgers) - 1:
                ledger.delete(self._cid)
                self._dropped = True
            ledger.close()


# --- floors -----------------------------------------------------------------------------------


class RawCoreInsert(_Base):
    """The floor for append: one SQLAlchemy Core ``insert`` and commit in ``engine.begin()`` into
    ``(conversation_id, seq, role, data, created_at)``, no validation, no counting. On SQLite
    the connection gets ``journal_mode=WAL`` and ``synchronous=NORMAL``, like chatledger's."""

    name = "raw-core-insert"
    supports_postgres = True

    def __init__(self) -> None:
        super().__init__()
        self._engine: Any = None
        self._table: Any = None
        self._seq = 0
        self._retired: list[Any] = []

    def _new(self) -> None:
        from sqlalchemy import (
            Column,
            DateTime,
            Integer,
            MetaData,
            String,
            Table,
            Text,
            create_engine,
            event,
        )

        url = _sync_url(self.target)
        engine = create_engine(url)
        if url.startswith("sqlite"):

            @event.listens_for(engine, "connect")
            def _pragmas(dbapi_conn: Any, _record: Any) -> None:
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.close()

        md = MetaData()
        self._table = Table(
            f"raw_messages_{self._id}",
            md,
            Column("conversation_id", String(64), primary_key=True),
            Column("seq", Integer, primary_key=True),
            Column("role", String(16), nullable=False),
            Column("data", Text, nullable=False),
            Column("created_at", DateTime, nullable=False),
        )
        md.create_all(engine)
        if self._engine is not None:
            self._retired.append(self._engine)
        self._engine = engine

    def _row(self, message: dict[str, Any]) -> dict[str, Any]:
        self._seq += 1
        return {
            "conversation_id": f"bench-{self._id}",
            "seq": self._seq,
            "role": message["role"],
            "data": json.dumps(message),
            "created_at": datetime.now(UTC).replace(tzinfo=None),
        }

    def setup(self, path: str, history: list[dict[str, Any]]) -> None:
        from sqlalchemy import insert

        self._begin(path)
        self._seq = 0
        self._new()
        with self._engine.begin() as conn:
            conn.execute(insert(self._table), [self._row(m) for m in history])

    def open(self) -> None:
        from sqlalchemy import func, select

        self._new()
        with self._engine.connect() as conn:
            self._seq = conn.execute(select(func.max(self._table.c.seq))).scalar() or 0

    def append(self, message: dict[str, Any]) -> None:
        from sqlalchemy import insert

        with self._engine.begin() as conn:
            conn.execute(insert(self._table), self._row(message))

    def window(self, budget: int) -> list[dict[str, Any]]:
        raise NotImplementedError("the raw insert floor has no window")

    def close(self) -> None:
        engines = [*self._retired, self._engine]
        self._retired, self._engine = [], None
        for e in engines:
            if e is not None:
                e.dispose()
        if self._target is not None and _is_server(self._target) and not self._dropped:
            _drop_tables(self._target, [f"raw_messages_{self._id}"])
            self._dropped = True


def message_texts(messages: Sequence[dict[str, Any]]) -> list[str]:
    """The strings ``count_tokens`` encodes for these messages: roles, names, text content,
    tool call names and arguments, in order (the input for :func:`raw_tiktoken_encode`)."""
    out: list[str] = []
    for m in messages:
        out.append(m["role"])
        if m.get("name"):
            out.append(m["name"])
        content = m.get("content")
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):
            out.extend(p["text"] for p in content if p.get("type") == "text")
        for c in m.get("tool_calls") or ():
            out.append(c["function"]["name"])
            out.append(c["function"]["arguments"])
    return out


_encode_ordinary: Callable[[str], list[int]] | None = None


def raw_tiktoken_encode(texts: Sequence[str]) -> int:
    """The floor for count_tokens: ``encode_ordinary`` of the bundled gpt-4o encoding over each
    string, summed (no per-message rules)."""
    global _encode_ordinary
    if _encode_ordinary is None:
        _encode_ordinary = encoding_for_model(MODEL).encode_ordinary
    enc = _encode_ordinary
    return sum(len(enc(t)) for t in texts)


# --- all of them ------------------------------------------------------------------------------


def all_peers(budget: int = DEFAULT_BUDGET, *, include_chatledger: bool = False) -> list[Any]:
    """Fresh instances of the third-party peers (and chatledger's own, when asked).

    ``budget`` is only needed by LlamaIndex, whose memory applies its token limit when
    messages are put (see :class:`LlamaIndexPeer`).
    """
    peers: list[Any] = [LangChainPeer(), AgentsSDKPeer(), LlamaIndexPeer(token_limit=budget)]
    if include_chatledger:
        peers.append(ChatledgerPeer())
    return peers
