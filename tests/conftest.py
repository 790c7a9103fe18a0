"""Test fixtures: real databases (SQLite, PostgreSQL, MariaDB), sync and async.

PostgreSQL and MariaDB are reached over TCP on this machine; their URLs can be overridden with
CHATLEDGER_TEST_POSTGRESQL_URL and CHATLEDGER_TEST_MARIADB_URL. Under ``CI=true`` a server
that cannot be reached fails the run instead of skipping its tests.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

import chatledger as cl
from chatledger.store.engine import resolve_url
from chatledger.store.schema import metadata

SERVER_URLS = {
    "postgresql": os.environ.get(
        "CHATLEDGER_TEST_POSTGRESQL_URL", "postgresql://postgres@127.0.0.1:5432/test"
    ),
    "mariadb": os.environ.get("CHATLEDGER_TEST_MARIADB_URL", "mysql://root@127.0.0.1:3306/test"),
}
BACKENDS = ["sqlite", "postgresql", "mariadb"]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

_reachable: dict[str, str | None] = {}


def _probe(backend: str) -> str | None:
    """None when the server answers (its chatledger tables dropped once), else why not."""
    if backend in _reachable:
        return _reachable[backend]
    try:
        engine = create_engine(resolve_url(SERVER_URLS[backend], asynchronous=False))
        with engine.begin() as conn:
            conn.execute(text("SELECT 1"))
            # a fresh schema for this run: earlier runs may have left an older one behind
            metadata.drop_all(conn)
        engine.dispose()
        _reachable[backend] = None
    except Exception as exc:
        _reachable[backend] = f"{backend} unreachable at {SERVER_URLS[backend]}: {exc}"
    return _reachable[backend]


def backend_url(backend: str, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'chat.db'}"
    why = _probe(backend)
    if why is not None:
        if IN_CI:
            pytest.fail(why, pytrace=False)
        pytest.skip(why)
    return SERVER_URLS[backend]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_url(backend: str, tmp_path: Path) -> str:
    return backend_url(backend, tmp_path)


@pytest.fixture
def ledger(db_url: str) -> Iterator[cl.Ledger]:
    with cl.Ledger(db_url) as led:
        yield led


@pytest.fixture
def aledger(db_url: str) -> cl.AsyncLedger:
    # closed by pytest_pyfunc_call inside the test's own event loop
    return cl.AsyncLedger(db_url)


@pytest.fixture
def sync_engine(ledger: cl.Ledger) -> Engine:
    return ledger.engine


@pytest.fixture(scope="session")
def shared_ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], cl.Ledger]]:
    """One ledger per backend for the whole run, for property tests' many examples."""
    ledgers: dict[str, cl.Ledger] = {}
    tmp = tmp_path_factory.mktemp("shared")

    def get(backend: str) -> cl.Ledger:
        if backend not in ledgers:
            ledgers[backend] = cl.Ledger(backend_url(backend, tmp))
        return ledgers[backend]

    yield get
    for led in ledgers.values():
        led.close()


@pytest.fixture
def uid() -> str:
    """A fresh id: the server databases are shared by every test of a run."""
    return uuid.uuid4().hex[:12]


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run ``async def`` tests in a fresh event loop; close their async ledgers in it."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    args: dict[str, Any] = {
        name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames
    }

    async def run() -> None:
        try:
            await pyfuncitem.obj(**args)
        finally:
            for value in args.values():
                if isinstance(value, cl.AsyncLedger):
                    await value.close()

    asyncio.run(run())
    return True
