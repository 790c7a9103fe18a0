"""Many workers, killed connections, lock timeouts and crashes, on every database and both twins.

Every check reads the database itself afterwards: seq gap-free, nothing lost or duplicated,
the stored running totals equal to the sums of the stored rows. Workers are processes, or
threads: on the async twin, threads' calls are concurrent tasks on the twin's one event loop.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, event, func, select, text

import chatledger as cl
from chatledger.store.engine import resolve_url
from chatledger.store.schema import conversations, messages, summaries
from twins import AnyLedger, Opener, Twin, statements_of

pytestmark = pytest.mark.twins

PROCESSES = 8
APPENDS = 500


def check_invariants(url: str, cids: list[str]) -> dict[str, int]:
    """Every stored invariant of these conversations, from the database's own rows."""
    engine = create_engine(resolve_url(url, asynchronous=False))
    counts = {}
    with engine.connect() as conn:
        for cid in cids:
            conv = conn.execute(select(conversations).where(conversations.c.id == cid)).one()
            rows = conn.execute(
                select(messages.c.seq, messages.c.tokens, messages.c.cum_tokens, messages.c.data)
                .where(messages.c.conversation_pk == conv.pk)
                .order_by(messages.c.seq)
            ).all()
            assert [r.seq for r in rows] == list(range(1, len(rows) + 1)), "seq has gaps"
            running = 0
            for r in rows:
                running += r.tokens
                assert r.cum_tokens == running, "cumulative tokens inconsistent"
            assert conv.last_seq == len(rows) == conv.message_count
            assert conv.token_total == running
            assert len({r.data for r in rows}) == len(rows), "a message was stored twice"
            upto = conn.execute(
                select(func.count(), func.count(func.distinct(summaries.c.upto_seq))).where(
                    summaries.c.conversation_pk == conv.pk
                )
            ).one()
            assert upto[0] == upto[1], "two summaries cover the same messages"
            counts[cid] = len(rows)
    engine.dispose()
    return counts


def _worker(url: str, shared: str, own: str, n: int, worker: int, twin: Twin) -> None:
    with Opener(twin) as open_ledger:
        led = open_ledger(url)
        mine = led.conversation(own, owner="load")
        common = led.get(shared, owner="load")
        for i in range(n):
            target = common if i % 2 == 0 else mine
            for attempt in range(50):
                try:
                    target.append({"role": "user", "content": f"w{worker} m{i}"})
                    break
                except cl.StorageError:  # a lock wait ran out: retry, as a caller would
                    time.sleep(0.01 * (attempt + 1))
            else:
                raise RuntimeError("append kept failing")


@pytest.mark.slow
def test_eight_processes_append_nothing_lost(
    open_ledger: Opener, twin: Twin, db_url: str, uid: str
) -> None:
    shared = f"shared-{uid}"
    with open_ledger(db_url) as led:
        led.conversation(shared, owner="load")
    ctx = mp.get_context("spawn")
    owns = [f"own-{uid}-{w}" for w in range(PROCESSES)]
    procs = [
        ctx.Process(target=_worker, args=(db_url, shared, owns[w], APPENDS, w, twin))
        for w in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=600)
        assert p.exitcode == 0
    counts = check_invariants(db_url, [shared, *owns])
    assert counts[shared] == PROCESSES * APPENDS // 2
    assert all(counts[o] == APPENDS // 2 for o in owns)
    with open_ledger(db_url) as led:
        got = {m["content"] for m in led.get(shared, owner="load").messages()}
    assert got == {f"w{w} m{i}" for w in range(PROCESSES) for i in range(0, APPENDS, 2)}


def test_threads_and_idempotent_retries(open_ledger: Opener, db_url: str, uid: str) -> None:
    with open_ledger(db_url) as led:
        led.conversation(uid)
        errors: list[BaseException] = []

        def worker(w: int) -> None:
            try:
                conv = led.get(uid)
                for i in range(20):
                    key = f"k-{i % 10}"  # every key is retried by every thread
                    conv.append({"role": "user", "content": f"m{i % 10}"}, idempotency_key=key)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert check_invariants(db_url, [uid])[uid] == 10


def test_eight_workers_append_concurrently(ledger: AnyLedger, db_url: str, uid: str) -> None:
    ledger.conversation(uid)
    errors: list[BaseException] = []

    def worker(w: int) -> None:
        try:
            conv = ledger.get(uid)
            for i in range(25):
                conv.append({"role": "user", "content": f"w{w} {i}"})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert check_invariants(db_url, [uid])[uid] == 200


# --- faults -----------------------------------------------------------------------------------


def _kill(backend: str, url: str, conn_id: Any) -> None:
    admin = create_engine(resolve_url(url, asynchronous=False), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        if backend == "postgresql":
            c.execute(text("SELECT pg_terminate_backend(:p)"), {"p": conn_id})
        else:
            c.execute(text(f"KILL {int(conn_id)}"))
    admin.dispose()


def _backend_id(conn: Any, backend: str) -> Any:
    q = "SELECT pg_backend_pid()" if backend == "postgresql" else "SELECT CONNECTION_ID()"
    return conn.exec_driver_sql(q).scalar()


@pytest.fixture(params=["postgresql", "mariadb"])
def server(request: pytest.FixtureRequest, tmp_path: Any) -> tuple[str, str]:
    """A database server (SQLite has no connection to kill: see the lock and crash tests)."""
    from conftest import backend_url

    return str(request.param), backend_url(str(request.param), tmp_path)


def test_connection_killed_mid_transaction(
    open_ledger: Opener, server: tuple[str, str], uid: str
) -> None:
    backend, db_url = server
    with open_ledger(db_url) as led:
        engine = statements_of(led)
        conv = led.conversation(uid, system="sys")
        conv.append({"role": "user", "content": "before"})
        armed = {"on": True}

        def killer(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            # the insert of the message (on PostgreSQL inside the append's one statement)
            if armed["on"] and "INSERT INTO CHATLEDGER_MESSAGES" in statement.upper():
                armed["on"] = False
                pid = conn.info.get("cl_pid")
                _kill(backend, db_url, pid)

        @event.listens_for(engine, "begin")
        def remember(conn: Any) -> None:
            conn.info["cl_pid"] = _backend_id(conn, backend)

        event.listen(engine, "after_cursor_execute", killer)
        with pytest.raises(cl.StorageError):
            conv.append({"role": "user", "content": "lost in the fault"})
        event.remove(engine, "after_cursor_execute", killer)
        event.remove(engine, "begin", remember)
        # no partial turn: the conversation is as it was, and the next call just works
        assert [m["content"] for m in conv.messages()] == ["sys", "before"]
        conv.append({"role": "user", "content": "after"})
        assert [m["content"] for m in led.get(uid).messages()] == ["sys", "before", "after"]
    check_invariants(db_url, [uid])


def test_all_connections_killed_between_calls(
    open_ledger: Opener, server: tuple[str, str], uid: str
) -> None:
    backend, db_url = server
    with open_ledger(db_url) as led:
        conv = led.conversation(uid)
        conv.append({"role": "user", "content": "one"})
        admin = create_engine(resolve_url(db_url, asynchronous=False), isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            if backend == "postgresql":
                c.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                )
            else:
                me = c.execute(text("SELECT CONNECTION_ID()")).scalar()
                for (pid,) in c.execute(
                    text("SELECT ID FROM information_schema.PROCESSLIST WHERE DB = DATABASE()")
                ).all():
                    if pid != me:
                        c.execute(text(f"KILL {int(pid)}"))
        admin.dispose()
        # the pool notices the dead connections (pre-ping) and the next call works
        conv.append({"role": "user", "content": "two"})
        assert [m["content"] for m in conv.messages()] == ["one", "two"]


@pytest.mark.skipif(
    os.environ.get("CHATLEDGER_TEST_RESTART") != "1",
    reason="restarts the PostgreSQL server: set CHATLEDGER_TEST_RESTART=1 (CI does)",
)
def test_postgresql_restart(open_ledger: Opener, tmp_path: Any, uid: str) -> None:
    from conftest import backend_url

    db_url = backend_url("postgresql", tmp_path)
    with open_ledger(db_url) as led:
        conv = led.conversation(uid)
        conv.append({"role": "user", "content": "before restart"})
        version = subprocess.run(["ls", "/etc/postgresql"], capture_output=True, text=True).stdout
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version.strip(), "main", "restart"],
            check=True,
            timeout=120,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                conv.append({"role": "user", "content": "after restart"})
                break
            except cl.StorageError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        assert [m["content"] for m in conv.messages()] == ["before restart", "after restart"]


@pytest.fixture
def held_lock(backend: str, db_url: str, uid: str) -> Iterator[Any]:
    """Another worker holds the conversation's lock until the test lets go."""
    with cl.Ledger(db_url) as led:
        led.conversation(uid)
    if backend == "sqlite":
        path = db_url.removeprefix("sqlite:///")
        raw = sqlite3.connect(path, isolation_level=None)
        raw.execute("BEGIN IMMEDIATE")
        yield raw
        raw.execute("ROLLBACK")
        raw.close()
        return
    engine = create_engine(resolve_url(db_url, asynchronous=False))
    conn = engine.connect()
    tx = conn.begin()
    conn.execute(
        select(conversations.c.pk).where(conversations.c.id == uid).with_for_update()
    ).all()
    yield conn
    tx.rollback()
    conn.close()
    engine.dispose()


def test_lock_timeout_is_a_storage_error(
    open_ledger: Opener, held_lock: Any, db_url: str, uid: str
) -> None:
    with open_ledger(db_url, lock_timeout=1.0) as led:
        conv = led.get(uid)
        started = time.monotonic()
        with pytest.raises(cl.StorageError):
            conv.append({"role": "user", "content": "waits, then gives up"})
        assert time.monotonic() - started < 15
    assert check_invariants(db_url, [uid])[uid] == 0


CRASHING_WORKER = {
    "sync": """
import os, sys
import chatledger as cl
c = cl.Ledger(sys.argv[1]).conversation(sys.argv[2], system="sys")
c.append({"role": "user", "content": "first"})
c.append({"role": "assistant", "content": "reply"})
c.append({"role": "user", "content": "second, never answered"})
os._exit(9)
""",
    "async": """
import asyncio, os, sys
import chatledger as cl
async def main():
    c = await cl.AsyncLedger(sys.argv[1]).conversation(sys.argv[2], system="sys")
    await c.append({"role": "user", "content": "first"})
    await c.append({"role": "assistant", "content": "reply"})
    await c.append({"role": "user", "content": "second, never answered"})
    os._exit(9)
asyncio.run(main())
""",
}


def test_crash_between_user_message_and_reply(
    open_ledger: Opener, twin: Twin, db_url: str, uid: str
) -> None:
    """A worker stores the user message and dies before the reply: the next worker's window is
    valid and ends with that user message."""
    code = CRASHING_WORKER[twin]
    done = subprocess.run([sys.executable, "-c", code, db_url, uid], timeout=120)
    assert done.returncode == 9
    with open_ledger(db_url) as led:
        conv = led.get(uid)
        w = conv.window(cl.TokenBudget(1000))
        cl.validate_messages(w)
        assert w[-1] == {"role": "user", "content": "second, never answered"}
        conv.append({"role": "assistant", "content": "answered by the next worker"})
    check_invariants(db_url, [uid])


def test_concurrent_summaries_never_overlap(open_ledger: Opener, db_url: str, uid: str) -> None:
    """Workers building windows at once may each fold rounds; stored summaries never cover the
    same messages twice, and every window stays valid."""
    with open_ledger(db_url) as led:
        conv = led.conversation(uid, model="gpt-4o", system="sys")
        for i in range(30):
            conv.append({"role": "user", "content": f"question {i} " * 15})
            conv.append({"role": "assistant", "content": f"answer {i} " * 25})
        errors: list[BaseException] = []

        def worker() -> None:
            try:
                handle = led.get(uid)
                strategy = [
                    cl.Summarize(lambda p, m: f"{len(m)} folded", trigger=400, keep=200),
                    cl.TokenBudget(1000),
                ]
                for _ in range(3):
                    cl.validate_messages(handle.window(strategy))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
    check_invariants(db_url, [uid])
