"""Budgets under concurrency: a request reserves its maximum in the transaction that checks
the budget, so concurrent requests (threads, tasks, processes) never pass the ceiling; the
reservation is settled on record, released when the client raises, and expires. Also:
``shrink``, and the spend that must count (summarizer calls, deleted conversations)."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import threading
import time
from datetime import timedelta
from typing import Any

import openai
import pytest
from sqlalchemy import func, select

import chatledger as cl
from chatledger.store.schema import reservations
from openai_server import FakeOpenAI, Reply, Usage
from twins import AnyLedger, Opener, Twin

pytestmark = pytest.mark.twins

BUDGET = 20_000
MAX_TOKENS = 500
WORKERS = 8


def completion(
    rid: str, content: str, prompt: int, completion: int, model: str = "gpt-4o"
) -> dict[str, Any]:
    message = {"role": "assistant", "content": content}
    return {
        "id": rid,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion},
    }


class _Completions:
    """Bills every request its full prompt and its whole ``max_tokens`` (the worst case a
    reservation must cover), after a pause that lets concurrent requests overlap."""

    def __init__(self, delay: float, fail: bool) -> None:
        self.delay, self.fail, self.calls = delay, fail, 0

    def _reply(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        if self.fail:
            raise RuntimeError("the API is down")
        cap = kwargs.get("max_completion_tokens") or kwargs.get("max_tokens") or 0
        prompt = cl.count_tokens(kwargs["messages"], kwargs["model"])
        rid = f"r-{time.time_ns()}-{threading.get_ident()}"
        return completion(rid, "ok", prompt, cap, kwargs["model"])


class _SyncCompletions(_Completions):
    def create(self, **kwargs: Any) -> dict[str, Any]:
        time.sleep(self.delay)
        return self._reply(kwargs)


class _AsyncCompletions(_Completions):
    async def create(self, **kwargs: Any) -> dict[str, Any]:
        await asyncio.sleep(self.delay)
        return self._reply(kwargs)


class FakeClient:
    """An OpenAI-shaped client of the twin's flavour."""

    def __init__(self, twin: Twin, delay: float = 0.02, fail: bool = False) -> None:
        kind = _SyncCompletions if twin == "sync" else _AsyncCompletions
        self.completions = kind(delay, fail)
        self.chat = self


def held(ledger: AnyLedger, owner: str) -> int:
    with ledger.engine.connect() as c:
        return int(
            c.execute(
                select(func.count()).select_from(reservations).where(reservations.c.owner == owner)
            ).scalar_one()
        )


def spend_until_refused(led: AnyLedger, twin: Twin, cid: str, owner: str, guard: cl.Budget) -> int:
    """Chat until the budget refuses; returns how many requests were sent."""
    conv = led.conversation(cid, owner=owner, model="gpt-4o")
    client = FakeClient(twin)
    sent = 0
    for i in range(1000):
        try:
            conv.chat(client, f"question {i}", max_tokens=MAX_TOKENS, budget=guard)
            sent += 1
        except cl.BudgetExceededError:
            return sent
        except cl.StorageError:  # a lock wait ran out under load: retry, as a caller would
            time.sleep(0.05)
    raise AssertionError("the budget never refused")


def test_concurrent_threads_never_exceed_an_owner_budget(
    ledger: AnyLedger, twin: Twin, uid: str, backend: str
) -> None:
    owner = f"o-{uid}"
    guard = cl.Budget(tokens=BUDGET, scope="owner")
    errors: list[BaseException] = []
    barrier = threading.Barrier(WORKERS)

    def worker(w: int) -> None:
        try:
            barrier.wait()
            spend_until_refused(ledger, twin, f"{uid}-{w}", owner, guard)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    total = ledger.usage(owner=owner).total_tokens
    print(f"\n[overshoot] threads {backend}-{twin}: used {total} of {BUDGET}: {total - BUDGET:+d}")
    assert BUDGET - 2 * (MAX_TOKENS + 200) < total <= BUDGET  # used up, never passed
    assert held(ledger, owner) == 0  # every reservation settled


def test_concurrent_threads_never_exceed_a_conversation_budget(
    ledger: AnyLedger, twin: Twin, uid: str
) -> None:
    guard = cl.Budget(tokens=BUDGET // 4)
    ledger.conversation(uid, owner=f"o-{uid}", model="gpt-4o")
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            spend_until_refused(ledger, twin, uid, f"o-{uid}", guard)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert ledger.get(uid, owner=f"o-{uid}").usage().total_tokens <= BUDGET // 4


def _process(url: str, twin: Twin, cid: str, owner: str, start: float, out: Any) -> None:
    with Opener(twin) as open_ledger:
        led = open_ledger(url)
        time.sleep(max(0.0, start - time.time()))
        out.put(spend_until_refused(led, twin, cid, owner, cl.Budget(tokens=BUDGET, scope="owner")))


@pytest.mark.slow
def test_concurrent_processes_never_exceed_an_owner_budget(
    open_ledger: Opener, twin: Twin, db_url: str, uid: str, backend: str
) -> None:
    owner = f"p-{uid}"
    with open_ledger(db_url) as led:
        led.conversations(owner=owner)  # the schema exists before the race
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    start = time.time() + 5.0
    procs = [
        ctx.Process(target=_process, args=(db_url, twin, f"{uid}-{w}", owner, start, out))
        for w in range(WORKERS)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
    assert [p.exitcode for p in procs] == [0] * WORKERS
    sent = sum(out.get(timeout=5) for _ in procs)
    with open_ledger(db_url) as led:
        total = led.usage(owner=owner).total_tokens
    print(f"\n[overshoot] processes {backend}-{twin}: {sent} requests, used {total} of {BUDGET}: "
          f"{total - BUDGET:+d}")  # fmt: skip
    assert 0 < total <= BUDGET


def test_record_settles_and_failure_releases(ledger: AnyLedger, twin: Twin, uid: str) -> None:
    owner = f"o-{uid}"
    conv = ledger.conversation(uid, owner=owner, model="gpt-4o", system="s")
    conv.append({"role": "user", "content": "hi"})
    prompt = conv.count_tokens()
    guard = cl.Budget(tokens=prompt + 100, scope="owner")  # room for one request at a time
    kwargs = conv.request(max_tokens=100, budget=guard)
    assert held(ledger, owner) == 1
    assert kwargs["max_tokens"] == 100
    with pytest.raises(cl.BudgetExceededError, match="would use"):
        conv.request(max_tokens=100, budget=guard)  # the first one holds the room
    conv.record({"id": f"x-{uid}", "model": "gpt-4o", "choices": [], "usage": {"prompt_tokens": 1}})
    assert held(ledger, owner) == 0  # settled by the record, in its transaction
    # the client raises: released at once, and the next request has the room again
    with pytest.raises(RuntimeError, match="down"):
        conv.chat(FakeClient(twin, fail=True), max_tokens=90, budget=guard)
    assert held(ledger, owner) == 0
    assert conv.request(max_tokens=90, budget=guard)["max_tokens"] == 90


def test_reservations_expire(open_ledger: Opener, db_url: str, uid: str) -> None:
    led = open_ledger(db_url, reservation_ttl=timedelta(seconds=1))
    conv = led.conversation(uid, owner=f"o-{uid}", model="gpt-4o")
    conv.append({"role": "user", "content": "hi"})
    guard = cl.Budget(tokens=conv.count_tokens() + 100)
    conv.request(max_tokens=100, budget=guard)  # never recorded: a crashed worker
    with pytest.raises(cl.BudgetExceededError):
        conv.request(max_tokens=100, budget=guard)
    time.sleep(1.2)
    assert conv.request(max_tokens=100, budget=guard)["max_tokens"] == 100
    with pytest.raises(cl.InvalidArgumentError, match="reservation_ttl"):
        open_ledger(db_url, reservation_ttl=timedelta(0))


def test_shrink_lowers_max_tokens_to_what_is_left(ledger: AnyLedger, uid: str) -> None:
    conv = ledger.conversation(uid, owner=f"o-{uid}", model="gpt-4o")
    conv.append({"role": "user", "content": "hi"})
    prompt = conv.count_tokens()
    tight = cl.Budget(tokens=prompt + 300)
    with pytest.raises(cl.BudgetExceededError):
        conv.request(max_tokens=1000, budget=tight)
    shrink = cl.Budget(tokens=prompt + 300, shrink=True)
    assert conv.request(max_tokens=1000, budget=shrink)["max_tokens"] == 300
    # the first request holds 300: nothing is left for a second, shrink or not
    with pytest.raises(cl.BudgetExceededError):
        conv.request(max_tokens=1000, budget=shrink)
    other = ledger.conversation(f"{uid}-2", owner=f"o-{uid}", model="gpt-4o")
    other.append({"role": "user", "content": "hi"})
    # n choices: a multiple of n; max_completion_tokens kept as the caller named it
    got = other.request(max_completion_tokens=1000, n=3, budget=shrink)
    assert got["max_completion_tokens"] == 100 and "max_tokens" not in got
    # money: the most completion tokens the dollars left can buy
    money = cl.Budget(usd="0.001", scope="owner", shrink=True)
    third = ledger.conversation(f"{uid}-3", owner=f"o2-{uid}", model="gpt-4o")
    third.append({"role": "user", "content": "hi"})
    capped = third.request(max_tokens=5000, budget=money)["max_tokens"]
    price = ledger.prices.estimate_micros
    assert price("gpt-4o", prompt, capped) <= 1000 < price("gpt-4o", prompt, capped + 1)


def test_summarizer_calls_are_billed_and_count(ledger: AnyLedger, uid: str) -> None:
    with FakeOpenAI() as server:
        server.queue(
            Reply(content="They talked.", usage=Usage(prompt_tokens=4000, completion_tokens=600))
        )
        client = openai.OpenAI(base_url=server.url, api_key="t", max_retries=0)
        summarizer = cl.OpenAISummarizer(client, "gpt-4o-mini")
        conv = ledger.conversation(uid, owner=f"o-{uid}", model="gpt-4o")
        for i in range(12):
            conv.append({"role": "user", "content": f"question {i} " * 30})
            conv.append({"role": "assistant", "content": f"answer {i} " * 30})
        w = conv.window([cl.Summarize(summarizer, trigger=400, keep=200)], explain=True)
        assert w.summary is not None and w.summary.created
    (row,) = conv.usage_records()
    assert (row.model, row.prompt_tokens, row.completion_tokens) == ("gpt-4o-mini", 4000, 600)
    assert row.metadata is not None and row.metadata["kind"] == "summary"
    assert row.cost_micros == ledger.prices.cost_micros(
        "gpt-4o-mini", prompt_tokens=4000, completion_tokens=600
    )
    assert ledger.usage(owner=f"o-{uid}").total_tokens == 4600
    with pytest.raises(cl.BudgetExceededError, match="used 4600"):  # no strategy: no new fold
        conv.request(max_tokens=10, budget=cl.Budget(tokens=4700, scope="owner"))


def test_deleting_a_conversation_keeps_its_owners_spend(ledger: AnyLedger, uid: str) -> None:
    owner = f"o-{uid}"
    conv = ledger.conversation(uid, owner=owner, model="gpt-4o")
    conv.record(completion(f"r-{uid}", "secret", 900, 100))
    guard = cl.Budget(tokens=1050, scope="owner")
    conv.delete()
    assert ledger.usage(owner=owner).total_tokens == 1000
    again = ledger.conversation(uid, owner=owner, model="gpt-4o")
    again.append({"role": "user", "content": "hi"})
    with pytest.raises(cl.BudgetExceededError, match="used 1000"):
        again.request(max_tokens=100, budget=guard)
    assert again.usage().total_tokens == 0  # the new conversation's own spend
    ledger.delete_owner(owner)  # erasure: the only way an owner's spend goes
    assert ledger.usage(owner=owner).requests == 0
    assert held(ledger, owner) == 0


def test_budget_arguments() -> None:
    with pytest.raises(cl.InvalidArgumentError, match="shrink"):
        cl.Budget(tokens=5, shrink="yes")  # type: ignore[arg-type]


def test_reservation_state_is_per_handle(ledger: AnyLedger, uid: str) -> None:
    """A request on one handle is settled by a record on that handle, not on another."""
    conv = ledger.conversation(uid, owner=f"o-{uid}", model="gpt-4o")
    conv.append({"role": "user", "content": "hi"})
    guard = cl.Budget(tokens=10_000, scope="owner")
    conv.request(max_tokens=10, budget=guard)
    other = ledger.get(uid, owner=f"o-{uid}")
    other.record(
        {"id": f"o-{uid}", "model": "gpt-4o", "choices": [], "usage": {"prompt_tokens": 1}}
    )
    assert held(ledger, f"o-{uid}") == 1
    conv.record({"id": f"c-{uid}", "model": "gpt-4o", "choices": [], "usage": {"prompt_tokens": 1}})
    assert held(ledger, f"o-{uid}") == 0
