"""Test fixtures: real databases (SQLite, PostgreSQL, MariaDB), sync and async.

PostgreSQL and MariaDB are reached over TCP on this machine; their URLs can be overridden with
CHATLEDGER_TEST_POSTGRESQL_URL and CHATLEDGER_TEST_MARIADB_URL. Under ``CI=true`` a server
that cannot be reached fails the run instead of skipping its tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.engine import Engine

import chatledger as cl
from chatledger.store.engine import resolve_url

SERVER_URLS = {
    "postgresql": os.environ.get(
        "CHATLEDGER_TEST_POSTGRESQL_URL", "postgresql://postgres@127.0.0.1:5432/test"
    ),
    "mariadb": os.environ.get("CHATLEDGER_TEST_MARIADB_URL", "mysql://root@127.0.0.1:3306/test"),
}
BACKENDS = ["sqlite", "postgresql", "mariadb"]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

_reachable: dict[str, str | None] = {}
_run_urls: dict[str, str] = {}
RUN_DB = f"chatledger_t_{uuid.uuid4().hex[:10]}"


def _probe(backend: str) -> str | None:
    """None when the server answers, else why not. Each test run gets a database of its own
    on the server (dropped at the end), so runs side by side never see each other's rows."""
    if backend in _reachable:
        return _reachable[backend]
    try:
        base = resolve_url(SERVER_URLS[backend], asynchronous=False)
        engine = create_engine(base, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {RUN_DB}"))
        engine.dispose()
        _run_urls[backend] = (
            make_url(SERVER_URLS[backend])
            .set(database=RUN_DB)
            .render_as_string(hide_password=False)
        )
        _reachable[backend] = None
    except Exception as exc:
        _reachable[backend] = f"{backend} unreachable at {SERVER_URLS[backend]}: {exc}"
    return _reachable[backend]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    for backend in list(_run_urls):
        engine = create_engine(
            resolve_url(SERVER_URLS[backend], asynchronous=False), isolation_level="AUTOCOMMIT"
        )
        force = " WITH (FORCE)" if backend == "postgresql" else ""
        with contextlib.suppress(Exception), engine.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {RUN_DB}{force}"))
        engine.dispose()


def backend_url(backend: str, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'chat.db'}"
    why = _probe(backend)
    if why is not None:
        if IN_CI:
            pytest.fail(why, pytrace=False)
        pytest.skip(why)
    return _run_urls[backend]


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
