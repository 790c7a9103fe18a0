"""The two drivers: they perform an operation's effects, blocking or awaited.

This is the only place where the twins differ. A driver sends each effect's result back into
the operation, or throws its exception in (so the operation decides: retry, replay, re-raise),
and turns a database failure that escapes into :class:`StorageError`.

A summarizer's timeout ends its call, not just the wait for it: an ``OpenAISummarizer`` is
given the timeout as its client's own (the request is aborted), an async summarizer runs as a
task that is cancelled. A plain sync callable cannot be stopped from outside in Python: it
runs on a small dedicated pool of daemon threads (never the event loop's default executor),
so calls that outlive their timeout hold at most ``SUMMARY_THREADS`` threads, and later
calls wait their turn within their own timeout.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import inspect
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine

from chatledger.effects import Effect, Op, Read, Send, Summarize, Write
from chatledger.errors import InvalidArgumentError, StorageError
from chatledger.store.maintenance import ensure_schema
from chatledger.summarizers import OpenAISummarizer
from chatledger.telemetry import Telemetry
from chatledger.window import FoldRequest

__all__ = ["SUMMARY_THREADS", "AsyncDriver", "SyncDriver", "db_errors", "logger"]

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
    except sa_exc.SQLAlchemyError as exc:  # a store bug or an unusual driver: typed all the same
        raise StorageError(f"database error: {exc}") from exc
    except (OSError, TimeoutError) as exc:  # async drivers raise their socket errors raw
        raise StorageError(f"cannot reach the database: {exc}") from exc


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


#: threads the sync summarizers of this process run on (see the module doc)
SUMMARY_THREADS = 8


class _SummaryPool:
    """A bounded pool of daemon threads, started as needed: one stuck summarizer can neither
    pile up threads nor keep the process from exiting (a ThreadPoolExecutor joins its workers
    at exit)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._work: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]]]
        self._work = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._unfinished = 0  # queued or running

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        """Run ``fn`` on a pool thread in the caller's context (its contextvars: the current
        span, so a summarizer's own spans nest under ``chatledger.summarize``)."""
        future: Future[T] = Future()
        fn = partial(contextvars.copy_context().run, fn)
        with self._lock:
            self._unfinished += 1
            if self._unfinished > self._threads and self._threads < self._size:
                self._threads += 1
                name = f"chatledger-summarizer-{self._threads}"
                threading.Thread(target=self._serve, name=name, daemon=True).start()
        self._work.put((future, fn))
        return future

    def _serve(self) -> None:
        while True:
            future, fn = self._work.get()
            try:
                if future.set_running_or_notify_cancel():  # False: timed out while queued
                    try:
                        future.set_result(fn())
                    except BaseException as exc:
                        future.set_exception(exc)
            finally:
                with self._lock:
                    self._unfinished -= 1


_POOL = _SummaryPool(SUMMARY_THREADS)


def _client_bounded(fn: Any, timeout: float | None) -> Any:
    """An ``OpenAISummarizer`` whose client gives up at ``timeout`` itself (no retries, which
    would run past it), so a timed-out request is aborted rather than left running; None for
    any other summarizer."""
    with_options = getattr(getattr(fn, "client", None), "with_options", None)
    if timeout is None or not isinstance(fn, OpenAISummarizer) or with_options is None:
        return None
    bounded = copy.copy(fn)
    bounded.client = with_options(timeout=timeout, max_retries=0)
    return bounded


class SyncDriver:
    """Performs effects with a blocking engine, in the caller's thread."""

    def __init__(
        self, engine: Engine, create_tables: bool, telemetry: Telemetry | None = None
    ) -> None:
        self.engine = engine
        self._create = create_tables
        self.telemetry = telemetry if telemetry is not None else Telemetry()
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

    def run(self, op: Op[T], name: str | None = None) -> T:
        """Run ``op`` to its end, in a span named after it (or ``name``) when there are
        spans to emit."""
        self.ensure_schema()
        seen = self.telemetry.operation(op, name)
        if seen is None:
            return self._drive(op)
        with seen:
            result: T = seen.finish(self._drive(op))
        return result

    def _drive(self, op: Op[T]) -> T:
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
            seen = self.telemetry.summarizing(effect)
            if seen is None:
                return self._summarize(effect)
            with seen as outcome:
                return outcome(self._summarize(effect))
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
        timeout = req.strategy.timeout
        bounded = _client_bounded(fn, timeout)
        try:
            if bounded is not None:  # in this thread: the client's timeout ends the call
                value = bounded(req.previous, e.messages)
            elif timeout is None:
                value = fn(req.previous, e.messages)
            else:
                future = _POOL.submit(lambda: fn(req.previous, e.messages))
                try:
                    value = future.result(timeout)
                finally:
                    future.cancel()  # if it is still queued, it never starts
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


async def _awaited(value: Any) -> Any:
    """The result of an async summarizer's call (a coroutine or any awaitable)."""
    return await value


class AsyncDriver:
    """Performs effects with an async engine: statements through ``run_sync``, summarizers and
    clients awaited."""

    def __init__(
        self, engine: AsyncEngine, create_tables: bool, telemetry: Telemetry | None = None
    ) -> None:
        self.engine = engine
        self._create = create_tables
        self.telemetry = telemetry if telemetry is not None else Telemetry()
        self._ready = False
        # one lock per event loop: an asyncio.Lock cannot be shared across loops
        self._locks: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}
        self._first_use = threading.Lock()

    async def ensure_schema(self) -> None:
        if self._ready:
            return
        loop = asyncio.get_running_loop()
        lock = self._locks.setdefault(loop, asyncio.Lock())
        async with lock:
            # the engine's first connect is guarded by an asyncio lock bound to the loop that
            # made it: a loop in another thread waits here instead (once, at startup; the
            # per-loop lock above keeps this loop's other tasks from blocking on it)
            with self._first_use:
                if not self._ready:
                    with db_errors():
                        async with self.engine.begin() as conn:
                            await conn.run_sync(ensure_schema, create=self._create)
                    self._ready = True

    async def run(self, op: Op[T], name: str | None = None) -> T:
        """Async :meth:`SyncDriver.run`."""
        await self.ensure_schema()
        seen = self.telemetry.operation(op, name)
        if seen is None:
            return await self._drive(op)
        with seen:
            result: T = seen.finish(await self._drive(op))
        return result

    async def _drive(self, op: Op[T]) -> T:
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
            seen = self.telemetry.summarizing(effect)
            if seen is None:
                return await self._summarize(effect)
            with seen as outcome:
                return outcome(await self._summarize(effect))
        assert isinstance(effect, Send)
        return await effect.client.chat.completions.create(**effect.kwargs)

    @staticmethod
    async def _summarize(e: Summarize) -> str | None:
        """Run a summarizer within the timeout: an async one as a task, cancelled at the
        timeout; a sync one on the summarizer pool, never the loop's default executor. None
        on failure."""
        req = e.request
        timeout = req.strategy.timeout
        fn = _client_bounded(req.strategy.summarizer, timeout) or req.strategy.summarizer
        try:
            if _is_async(fn):
                value = await asyncio.wait_for(_awaited(fn(req.previous, e.messages)), timeout)
            else:
                future = _POOL.submit(lambda: fn(req.previous, e.messages))
                value = await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except Exception as exc:
            _failed(req, e.conversation_id, repr(exc))
            return None
        return _summary_text(e, value)
