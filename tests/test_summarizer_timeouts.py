"""A summarizer's timeout ends the call, on both twins: no thread or task outlives the window
that started it, sync summarizers that ignore their timeout hold a bounded number of threads,
and under AsyncLedger they never starve the event loop's default executor."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest

import chatledger as cl
from chatledger.drivers import SUMMARY_THREADS
from openai_server import FakeOpenAI, Reply
from twins import AnyLedger, BlockingLedger

pytestmark = pytest.mark.twins

HISTORY: list[dict[str, Any]] = []
for i in range(8):
    HISTORY.append({"role": "user", "content": f"Day {i}: plan a visit to city {i}. " * 6})
    HISTORY.append({"role": "assistant", "content": f"Booked city {i}: hotel and museum. " * 5})


def folding(summarizer: Any, timeout: float) -> list[Any]:
    return [
        cl.Summarize(summarizer, trigger=400, keep=200, timeout=timeout),
        cl.TokenBudget(2000),
    ]


def ours() -> set[threading.Thread]:
    """Live threads, less the fake server's request handlers (it answers late on purpose)."""
    return {t for t in threading.enumerate() if "process_request_thread" not in t.name}


def settles(check: Callable[[], bool], within: float = 3.0) -> bool:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


class Stuck:
    """A sync summarizer that ignores its timeout until released; counts calls running."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.running = self.most = 0
        self._lock = threading.Lock()

    def __call__(self, previous: str | None, messages: list[dict[str, Any]]) -> str:
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            self.release.wait(30)
            return "late"
        finally:
            with self._lock:
                self.running -= 1


def test_timed_out_openai_summarizer_leaves_no_thread_or_task(
    ledger: AnyLedger, uid: str, server: FakeOpenAI
) -> None:
    server.queue(Reply(content="in time"), Reply(content="too late", delay=30))
    client = openai.OpenAI(base_url=server.url, api_key="test", max_retries=2)
    summarizer = cl.OpenAISummarizer(client, "m")
    # a first summary in time: the threads a working client keeps (the loop's resolver) exist
    warm = ledger.conversation(f"{uid}-warm", model="gpt-4o")
    warm.extend(HISTORY)
    assert warm.window(folding(summarizer, 5), explain=True).summary is not None
    conv = ledger.conversation(uid, model="gpt-4o")
    conv.extend(HISTORY)

    def tasks() -> int:
        if not isinstance(ledger, BlockingLedger):
            return 0

        async def pending() -> int:
            return len(asyncio.all_tasks() - {asyncio.current_task()})

        return ledger._loop.run(pending())

    threads, before = ours(), tasks()
    started = time.monotonic()
    w = conv.window(folding(summarizer, 0.3), explain=True)
    assert w.summary_failed and time.monotonic() - started < 5
    assert len(server.requests) == 2  # the client's own retries are off within the timeout
    assert settles(lambda: ours() <= threads), ours() - threads
    assert tasks() == before
    client.close()


def test_sync_summarizers_ignoring_their_timeout_hold_bounded_threads(
    ledger: AnyLedger, uid: str
) -> None:
    stuck = Stuck()
    conv = ledger.conversation(uid, model="gpt-4o")
    conv.extend(HISTORY)
    try:
        started = time.monotonic()
        for _ in range(SUMMARY_THREADS + 4):
            assert conv.window(folding(stuck, 0.05), explain=True).summary_failed
        assert time.monotonic() - started < 10
        assert 1 <= stuck.most <= SUMMARY_THREADS
    finally:
        stuck.release.set()
    assert settles(lambda: stuck.running == 0)
    # the pool is free again: a summarizer that answers in time is used
    w = conv.window(folding(lambda p, m: f"{len(m)} folded", 5), explain=True)
    assert w.summary is not None and w.summary.text.endswith("folded")


@pytest.mark.async_only  # the event loop's own default executor
async def test_timed_out_sync_summarizers_do_not_starve_the_default_executor(
    aledger: cl.AsyncLedger, uid: str
) -> None:
    loop = asyncio.get_running_loop()
    executor = ThreadPoolExecutor(max_workers=2)
    loop.set_default_executor(executor)
    stuck = Stuck()
    conv = await aledger.conversation(uid, model="gpt-4o")
    await conv.extend(HISTORY)
    try:
        for _ in range(3):
            assert (await conv.window(folding(stuck, 0.05), explain=True)).summary_failed
        assert await asyncio.wait_for(asyncio.to_thread(lambda: "free"), 2) == "free"
    finally:
        stuck.release.set()


@pytest.mark.async_only  # a sync OpenAISummarizer under AsyncLedger runs in a thread
async def test_sync_openai_summarizer_under_async_ledger_gives_up_at_the_timeout(
    aledger: cl.AsyncLedger, uid: str, server: FakeOpenAI
) -> None:
    server.queue(Reply(content="too late", delay=30))
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=1))
    client = openai.OpenAI(base_url=server.url, api_key="test", max_retries=0)
    conv = await aledger.conversation(uid, model="gpt-4o")
    await conv.extend(HISTORY)
    w = await conv.window(folding(cl.OpenAISummarizer(client, "m"), 0.3), explain=True)
    assert w.summary_failed
    assert await asyncio.wait_for(asyncio.to_thread(lambda: "free"), 2) == "free"
    client.close()
