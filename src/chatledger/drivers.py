"""The two drivers: they perform an operation's effects, blocking or awaited.

This is the only place where the twins differ. A driver sends each effect's result back into
the operation, or throws its exception in (so the operation decides: retry, replay, re-raise),
and turns a database failure that escapes into :class:`StorageError`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine

from chatledger.effects import Effect, Op, Read, Send, Summarize, Write
from chatledger.errors import InvalidArgumentError, StorageError
from chatledger.store.maintenance import ensure_schema
from chatledger.window import FoldRequest

__all__ = ["AsyncDriver", "SyncDriver", "db_errors", "logger"]

T = TypeVar("T")
logger = logging.getLogger("chatledger")


@contextmanager
def db_errors() -> Iterator[None]:
    """Database failures become :class:`StorageError` (retryable ones say so)."""
    try:
        yield
    except (sa_exc.OperationalError, sa_exc.InterfaceError) as exc:
        raise StorageError(f"database error: {exc.orig or exc}") from exc
    except sa_exc.DBAPIError as exc:
        if exc.connection_invalidated:
            raise StorageError(f"database connection lost: {exc.orig or exc}") from exc
        raise StorageError(f"database refused the write: {exc.orig or exc}") from exc
    except sa_exc.NoResultFound as exc:  # pragma: no cover - a store bug, typed all the same
        raise StorageError(f"database state changed during the call: {exc}") from exc


class _Stepper:
    """Advances an operation: sends results in, throws failures in, keeps its outcome."""

    __slots__ = ("done", "effect", "op", "result")

    def __init__(self, op: Op[Any]) -> None:
        self.op, self.done = op, False
        self.result: Any = None
        self.effect: Any = None
        self.send(None)

    def send(self, value: Any) -> None:
        try:
            self.effect = self.op.send(value)
        except StopIteration as stop:
            self.done, self.result = True, stop.value

    def throw(self, error: Exception) -> None:
        try:
            self.effect = self.op.throw(error)
        except StopIteration as stop:
            self.done, self.result = True, stop.value


def _failed(req: FoldRequest, cid: str, why: object) -> None:
    logger.warning(
        "summarizer failed for conversation %r (seq %d-%d): %s; those rounds are dropped this "
        "turn and summarised on a later one",
        cid,
        req.from_seq,
        req.upto_seq,
        why,
    )


def _summary_text(e: Summarize, value: object) -> str | None:
    if isinstance(value, str) and value.strip() and "\x00" not in value:
        return value.strip()
    _failed(e.request, e.conversation_id, "it returned no text")
    return None


def _is_async(fn: Any) -> bool:
    return bool(
        inspect.iscoroutinefunction(fn)
        or inspect.iscoroutinefunction(getattr(fn, "__call__", None))  # noqa: B004
        or getattr(fn, "is_async", False)
    )


class SyncDriver:
    """Performs effects with a blocking engine, in the caller's thread."""

    def __init__(self, engine: Engine, create_tables: bool) -> None:
        self.engine = engine
        self._create = create_tables
        self._ready = False
        self._ready_lock = threading.Lock()

    def ensure_schema(self) -> None:
        if self._ready:
            return
        with self._ready_lock:
            if not self._ready:
                with db_errors(), self.engine.begin() as conn:
                    ensure_schema(conn, create=self._create)
                self._ready = True

    def run(self, op: Op[T]) -> T:
        self.ensure_schema()
        with db_errors():
            step = _Stepper(op)
            while not step.done:
                try:
                    value = self._perform(step.effect)
                except Exception as exc:  # the operation decides: retry, replay or re-raise
                    step.throw(exc)
                else:
                    step.send(value)
        result: T = step.result
        return result

    def _perform(self, effect: Effect) -> Any:
        if isinstance(effect, Read):
            with self.engine.connect() as conn:
                return effect.body(conn)
        if isinstance(effect, Write):
            with self.engine.begin() as conn:
                return effect.body(conn)
        if isinstance(effect, Summarize):
            return self._summarize(effect)
        assert isinstance(effect, Send)
        return effect.client.chat.completions.create(**effect.kwargs)

    @staticmethod
    def _summarize(e: Summarize) -> str | None:
        """Run a sync summarizer within the strategy's timeout; None (and a warning) on
        failure."""
        fn, req = e.request.strategy.summarizer, e.request
        if _is_async(fn):
            raise InvalidArgumentError(
                "summarizer", "is async: use it with AsyncLedger, or give a sync summarizer"
            )
        try:
            if req.strategy.timeout is None:
                value = fn(req.previous, e.messages)
            else:
                pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chatledger-summary")
                try:
                    value = pool.submit(fn, req.previous, e.messages).result(req.strategy.timeout)
                finally:
                    pool.shutdown(wait=False)
        except Exception as exc:
            _failed(req, e.conversation_id, repr(exc))
            return None
        if inspect.isawaitable(value):
            if inspect.iscoroutine(value):
                value.close()
            raise InvalidArgumentError(
                "summarizer", "returned an awaitable: use it with AsyncLedger"
            )
        return _summary_text(e, value)


class AsyncDriver:
    """Performs effects with an async engine: statements through ``run_sync``, summarizers and
    clients awaited."""

    def __init__(self, engine: AsyncEngine, create_tables: bool) -> None:
        self.engine = engine
        self._create = create_tables
        self._ready = False
        # one lock per event loop: an asyncio.Lock cannot be shared across loops
        self._locks: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}

    async def ensure_schema(self) -> None:
        if self._ready:
            return
        loop = asyncio.get_running_loop()
        lock = self._locks.setdefault(loop, asyncio.Lock())
        async with lock:
            if not self._ready:
                with db_errors():
                    async with self.engine.begin() as conn:
                        await conn.run_sync(ensure_schema, create=self._create)
                self._ready = True
                self._locks.clear()

    async def run(self, op: Op[T]) -> T:
        await self.ensure_schema()
        with db_errors():
            step = _Stepper(op)
            while not step.done:
                try:
                    value = await self._perform(step.effect)
                except Exception as exc:
                    step.throw(exc)
                else:
                    step.send(value)
        result: T = step.result
        return result

    async def _perform(self, effect: Effect) -> Any:
        if isinstance(effect, Read):
            async with self.engine.connect() as conn:
                return await conn.run_sync(effect.body)
        if isinstance(effect, Write):
            async with self.engine.begin() as conn:
                return await conn.run_sync(effect.body)
        if isinstance(effect, Summarize):
            return await self._summarize(effect)
        assert isinstance(effect, Send)
        return await effect.client.chat.completions.create(**effect.kwargs)

    @staticmethod
    async def _summarize(e: Summarize) -> str | None:
        """Run a summarizer (async, or sync in a thread) within the timeout; None on failure."""
        fn, req = e.request.strategy.summarizer, e.request
        try:
            if _is_async(fn):
                pending: Awaitable[Any] = fn(req.previous, e.messages)
            else:
                call: Callable[..., Any] = fn
                pending = asyncio.to_thread(call, req.previous, e.messages)
            value = await asyncio.wait_for(pending, req.strategy.timeout)
        except Exception as exc:
            _failed(req, e.conversation_id, repr(exc))
            return None
        return _summary_text(e, value)
