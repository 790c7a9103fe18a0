"""Both twins behind one sync API, so that every conversation and ledger test runs on each.

``Ledger``/``Conversation`` and ``AsyncLedger``/``AsyncConversation`` promise the same methods
with the same arguments, the async ones awaited. A test is written once against the sync API
and gets a ``twin`` ("sync" or "async"); for "async" it is handed this module's facade:

* :class:`Loop` is one event loop, owned by a test (or by the session, for the property tests'
  shared ledgers), that runs in a thread of its own. ``Loop.run`` hands it an awaitable and
  blocks until it is done. Calls from several test threads become concurrent tasks on that one
  loop, so a test that drives a ledger from threads drives the async twin with tasks.
* :class:`BlockingLedger`, :class:`BlockingConversation` and :class:`BlockingStreamRecorder`
  forward every attribute by name to the async object they wrap, with the caller's arguments.
  A method's awaitable result is awaited on the loop; an ``AsyncConversation`` that comes back
  is wrapped as a ``BlockingConversation`` and an ``AsyncStreamRecorder`` as a
  ``BlockingStreamRecorder`` (``with``/``for`` on it run ``async with``/``async for``). Nothing
  is re-implemented here: a method, argument or behaviour the async twin lacks fails the test.
* Arguments that come in a sync and an async flavour are swapped on the way in: an
  ``openai.OpenAI`` client for an ``openai.AsyncOpenAI`` with the same ``base_url``,
  ``api_key``, ``max_retries`` and ``timeout``; an ``OpenAISummarizer`` on a sync client for one
  on that async client, also inside a ``Summarize`` or a list of strategies. Plain sync
  summarizers pass unchanged: the async twin runs them in a worker thread, as documented.
* ``BlockingLedger.engine`` is a sync engine on the same database, for tests that inspect the
  tables with SQL. Like ``AsyncLedger.engine``, and unlike ``Ledger.engine``, reading it does
  not create the schema. :func:`statements_of` gives the engine whose events see the ledger's
  own statements (``AsyncLedger.engine.sync_engine`` for the async twin).

:class:`Opener` opens ledgers of one twin (``cl.Ledger`` itself for "sync") and closes them,
their loop and the async clients it made when the test ends.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import inspect
import threading
from collections.abc import Awaitable, Iterator
from types import TracebackType
from typing import Any, Generic, Literal, Self, TypeAlias, TypeVar

import openai
from sqlalchemy import URL, Engine, create_engine, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import chatledger as cl
from chatledger.store.engine import resolve_url
from chatledger.store.schema import conversations
from chatledger.streaming import AsyncStreamRecorder

__all__ = [
    "TWINS",
    "AnyConversation",
    "AnyLedger",
    "BlockingConversation",
    "BlockingLedger",
    "BlockingStreamRecorder",
    "Loop",
    "Opener",
    "Twin",
    "statements_of",
    "stored_pk",
]

Twin = Literal["sync", "async"]
TWINS: tuple[Twin, ...] = ("sync", "async")

T = TypeVar("T")
W = TypeVar("W")


async def _wait(awaitable: Awaitable[T]) -> T:
    return await awaitable


class Loop:
    """An event loop in a thread of its own; ``run`` blocks the calling thread until done."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="async-twin-loop", daemon=True
        )
        self._thread.start()
        # sync client -> its async twin (the sync one is kept so that its id stays unique)
        self._clients: dict[int, tuple[openai.OpenAI, openai.AsyncOpenAI]] = {}
        self._closed = False

    def run(self, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable`` on the loop; its result, or its exception raised here."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("a blocking call from inside the twin's event loop would deadlock")
        if self._closed:
            raise RuntimeError("the twin's event loop is closed")
        return asyncio.run_coroutine_threadsafe(_wait(awaitable), self._loop).result()

    # arguments in, results out -----------------------------------------------------------

    def async_client(self, client: openai.OpenAI) -> openai.AsyncOpenAI:
        """The async client with ``client``'s settings (one per sync client)."""
        pair = self._clients.get(id(client))
        if pair is None:
            twin = openai.AsyncOpenAI(
                base_url=client.base_url,
                api_key=client.api_key,
                max_retries=client.max_retries,
                timeout=client.timeout,
            )
            pair = self._clients[id(client)] = (client, twin)
        return pair[1]

    def to_async(self, value: T) -> T:
        """``value``, or its async twin where the async API needs one (see the module doc)."""
        out: object = value
        if isinstance(value, openai.OpenAI):
            out = self.async_client(value)
        elif isinstance(value, cl.OpenAISummarizer) and isinstance(value.client, openai.OpenAI):
            out = cl.OpenAISummarizer(
                self.async_client(value.client),
                value.model,
                prompt=value.prompt,
                max_words=value.max_words,
                max_tokens=value.max_tokens,
                temperature=value.temperature,
                extra=value.extra,
            )
        elif isinstance(value, cl.Summarize):
            summarizer = self.to_async(value.summarizer)
            if summarizer is not value.summarizer:
                strategy = copy.copy(value)
                strategy.summarizer = summarizer
                out = strategy
        elif isinstance(value, list | tuple):
            items = [self.to_async(v) for v in value]
            if any(new is not old for new, old in zip(items, value, strict=True)):
                out = type(value)(items)
        return out  # type: ignore[return-value]

    def to_sync(self, value: object) -> Any:
        """``value``, with the async API's objects wrapped in their blocking facade."""
        if isinstance(value, cl.AsyncConversation):
            return BlockingConversation(value, self)
        if isinstance(value, AsyncStreamRecorder):
            return BlockingStreamRecorder(value, self)
        return value

    def close(self) -> None:
        """Close the async clients made here, then the loop and its thread."""
        if self._closed:
            return
        for _, client in self._clients.values():
            self.run(client.close())
        self._clients.clear()
        self.run(self._loop.shutdown_asyncgens())
        self.run(self._loop.shutdown_default_executor())
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


class _Blocking(Generic[W]):
    """Forwards attribute access to the wrapped async object; methods block on the loop."""

    def __init__(self, wrapped: W, loop: Loop) -> None:
        self._wrapped = wrapped
        self._loop = loop

    @property
    def wrapped(self) -> W:
        """The async object underneath."""
        return self._wrapped

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_wrapped", "_loop"):
            raise AttributeError(name)
        value = getattr(self._wrapped, name)
        if not inspect.ismethod(value):
            return self._loop.to_sync(value)
        loop = self._loop

        @functools.wraps(value)
        def blocking(*args: Any, **kwargs: Any) -> Any:
            args = tuple(loop.to_async(a) for a in args)
            kwargs = {k: loop.to_async(v) for k, v in kwargs.items()}
            result = value(*args, **kwargs)
            if inspect.isawaitable(result):
                result = loop.run(result)
            return loop.to_sync(result)

        return blocking

    def __repr__(self) -> str:
        return f"<blocking {self._wrapped!r}>"


class BlockingConversation(_Blocking[cl.AsyncConversation]):
    """``Conversation``'s API over an ``AsyncConversation``."""


class BlockingStreamRecorder(_Blocking[AsyncStreamRecorder]):
    """``StreamRecorder``'s protocol over an ``AsyncStreamRecorder``: ``with`` runs
    ``async with``, iterating runs ``async for`` one chunk at a time, and stopping early
    (``break``) closes the async iterator at once, as it closes the sync one."""

    def __enter__(self) -> Self:
        self._loop.run(self._wrapped.__aenter__())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._loop.run(self._wrapped.__aexit__(exc_type, exc, tb))

    def __iter__(self) -> Iterator[Any]:
        chunks = aiter(self._wrapped)
        try:
            while True:
                try:
                    chunk = self._loop.run(anext(chunks))
                except StopAsyncIteration:
                    return
                yield chunk
        finally:
            close = getattr(chunks, "aclose", None)
            if close is not None:
                self._loop.run(close())


class BlockingLedger(_Blocking[cl.AsyncLedger]):
    """``Ledger``'s API over an ``AsyncLedger``; ``engine`` is a sync engine on the same
    database for inspection (it does not create the schema, as ``AsyncLedger.engine`` does not)."""

    def __init__(self, wrapped: cl.AsyncLedger, loop: Loop) -> None:
        super().__init__(wrapped, loop)
        self._inspector: Engine | None = None

    @property
    def engine(self) -> Engine:
        if self._inspector is None:
            url = self._wrapped.engine.url
            bare = url.set(drivername=url.get_backend_name())
            self._inspector = create_engine(resolve_url(bare, asynchronous=False))
        return self._inspector

    def close(self) -> None:
        self._loop.run(self._wrapped.close())
        if self._inspector is not None:
            self._inspector.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


AnyLedger: TypeAlias = cl.Ledger | BlockingLedger
AnyConversation: TypeAlias = cl.Conversation | BlockingConversation


def statements_of(ledger: AnyLedger) -> Engine:
    """The engine whose events (``before_cursor_execute``, ``begin``...) see the ledger's own
    statements."""
    if isinstance(ledger, BlockingLedger):
        return ledger.wrapped.engine.sync_engine
    return ledger.engine


def stored_pk(ledger: AnyLedger, conversation_id: str) -> int | None:
    """The conversation's primary key as stored (None once deleted), read with SQL."""
    with ledger.engine.connect() as conn:
        pk = conn.execute(
            select(conversations.c.pk).where(conversations.c.id == conversation_id)
        ).scalar()
    return None if pk is None else int(pk)


class Opener:
    """Opens ledgers of one twin; ``close`` closes them all (the fixtures call it).

    ``opener(url_or_engine, **options)`` takes ``Ledger``'s arguments and returns a
    ``cl.Ledger`` for "sync", a :class:`BlockingLedger` over a ``cl.AsyncLedger`` for "async".
    """

    def __init__(self, twin: Twin) -> None:
        if twin not in TWINS:
            raise ValueError(f"twin must be one of {TWINS}, not {twin!r}")
        self.twin: Twin = twin
        self._loop: Loop | None = None
        self._ledgers: list[AnyLedger] = []
        self._engines: list[Engine | AsyncEngine] = []

    @property
    def loop(self) -> Loop:
        """The async twin's event loop (started on first use)."""
        if self._loop is None:
            self._loop = Loop()
        return self._loop

    def __call__(self, url: str | URL | Engine | AsyncEngine, **options: Any) -> AnyLedger:
        led: AnyLedger
        if self.twin == "sync":
            if isinstance(url, AsyncEngine):
                raise TypeError("the sync twin takes an Engine: see Opener.engine")
            led = cl.Ledger(url, **options)
        else:
            if isinstance(url, Engine):
                raise TypeError("the async twin takes an AsyncEngine: see Opener.engine")
            led = BlockingLedger(cl.AsyncLedger(url, **options), self.loop)
        self._ledgers.append(led)
        return led

    def engine(self, url: str) -> Engine | AsyncEngine:
        """A caller-owned engine of this twin's kind on ``url``; disposed by ``close``."""
        engine: Engine | AsyncEngine
        if self.twin == "sync":
            engine = create_engine(resolve_url(url, asynchronous=False))
        else:
            engine = create_async_engine(resolve_url(url, asynchronous=True))
        self._engines.append(engine)
        return engine

    def close(self) -> None:
        """Close every ledger opened here, dispose the engines, stop the loop."""
        for led in self._ledgers:
            led.close()
        self._ledgers.clear()
        for engine in self._engines:
            if isinstance(engine, AsyncEngine):
                self.loop.run(engine.dispose())
            else:
                engine.dispose()
        self._engines.clear()
        if self._loop is not None:
            self._loop.close()
            self._loop = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
