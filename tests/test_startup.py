"""Many processes, threads and event loops starting on one fresh database at once: concurrent
``chatledger db upgrade`` runs and applications with ``create_tables=True`` all succeed, on
every database (the schema lock: an advisory lock on PostgreSQL, GET_LOCK on MariaDB, the
write lock on SQLite)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import chatledger as cl
from chatledger import migrate
from chatledger.store.schema import SCHEMA_VERSION
from test_migrations import drop_database, fresh_database

pytest.importorskip("alembic")

WORKERS = 4


@pytest.fixture
def fresh_url(backend: str, db_url: str, tmp_path: Path) -> Iterator[str]:
    url = fresh_database(backend, db_url, tmp_path)
    yield url
    drop_database(backend, db_url, url)


# each process imports everything first, then waits for the same instant: they really race
_APP = """
import sys, time
import chatledger as cl
start = float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))
with cl.Ledger(sys.argv[1]) as led:
    led.conversation(sys.argv[3]).append({"role": "user", "content": "hi"})
print("ok")
"""
_UPGRADE = """
import sys, time
from chatledger.cli import main
start = float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))
sys.exit(main(["--db", sys.argv[1], "db", "upgrade"]))
"""


def _race(scripts: list[tuple[str, list[str]]]) -> list[subprocess.CompletedProcess[str]]:
    start = str(time.time() + 4.0)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code), args[0], start, *args[1:]],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for code, args in scripts
    ]
    done = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return done


def _all_ok(done: list[subprocess.CompletedProcess[str]]) -> None:
    failed = [(d.returncode, d.stderr[-2000:]) for d in done if d.returncode != 0]
    assert failed == []


@pytest.mark.slow
def test_concurrent_db_upgrades_all_succeed(fresh_url: str) -> None:
    done = _race([(_UPGRADE, [fresh_url])] * WORKERS)
    _all_ok(done)
    assert all(d.stdout.startswith("chatledger schema:") for d in done)
    assert migrate.current(fresh_url) == SCHEMA_VERSION


@pytest.mark.slow
def test_concurrent_app_starts_all_succeed(fresh_url: str) -> None:
    done = _race([(_APP, [fresh_url, f"c{i}"]) for i in range(WORKERS)])
    _all_ok(done)
    with cl.Ledger(fresh_url, create_tables=False) as led:
        assert sorted(c.id for c in led.conversations()) == [f"c{i}" for i in range(WORKERS)]
    assert migrate.current(fresh_url) == SCHEMA_VERSION


@pytest.mark.slow
def test_upgrades_and_app_starts_together(fresh_url: str) -> None:
    scripts = [(_UPGRADE, [fresh_url]), (_APP, [fresh_url, "a0"])] * (WORKERS // 2)
    scripts[-1] = (_APP, [fresh_url, "a1"])
    _all_ok(_race(scripts))
    assert migrate.current(fresh_url) == SCHEMA_VERSION


def test_threads_open_a_fresh_database_at_once(fresh_url: str) -> None:
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def start(i: int) -> None:
        try:
            with cl.Ledger(fresh_url) as led:
                barrier.wait()
                led.conversation(f"t{i}").append({"role": "user", "content": "hi"})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with cl.Ledger(fresh_url) as led:
        assert len(led.conversations()) == 8


def test_event_loops_each_with_a_ledger(fresh_url: str) -> None:
    barrier = threading.Barrier(WORKERS)
    errors: list[BaseException] = []

    async def use(i: int) -> None:
        async with cl.AsyncLedger(fresh_url) as led:
            conv = await led.conversation(f"e{i}")
            await conv.append({"role": "user", "content": "hi"})

    def loop(i: int) -> None:
        barrier.wait()
        try:
            asyncio.run(use(i))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
