"""Test fixtures: real databases (SQLite, PostgreSQL, MariaDB), sync and async.

PostgreSQL and MariaDB are reached over TCP on this machine; their URLs can be overridden with
CHATLEDGER_TEST_POSTGRESQL_URL and CHATLEDGER_TEST_MARIADB_URL. Under ``CI=true`` a server
that cannot be reached fails the run instead of skipping its tests.

Twins: in a module marked ``pytestmark = pytest.mark.twins`` every test that uses a ledger
(``ledger``, ``open_ledger``, ``shared_ledger``, or ``twin`` itself) runs once per twin, ids
``test_x[sqlite-sync]`` and ``test_x[sqlite-async]``: the async twin through the blocking
facade of ``twins.py``. ``@pytest.mark.sync_only`` / ``@pytest.mark.async_only`` keep a test
that is about one twin (threads, an event loop's own behaviour) to that twin; a test using
``aledger`` (an ``async def`` test) must be ``async_only``. Elsewhere ``twin`` is "sync".
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import openai
import pytest
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.engine import Engine

import chatledger as cl
from chatledger.store.engine import resolve_url
from openai_server import FakeOpenAI
from twins import TWINS, AnyLedger, Opener, Twin

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


def pytest_configure(config: pytest.Config) -> None:
    for line in (
        "twins: run this module's ledger tests once per twin (sync, async)",
        "sync_only: a test of the sync twin alone (in a twins module)",
        "async_only: a test of the async twin alone (in a twins module)",
    ):
        config.addinivalue_line("markers", line)


@pytest.hookimpl(trylast=True)  # after the backend fixture's params: ids read sqlite-sync
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    twins_module = metafunc.definition.get_closest_marker("twins") is not None
    if "twin" not in metafunc.fixturenames or not twins_module:
        return
    sync_only = metafunc.definition.get_closest_marker("sync_only") is not None
    async_only = metafunc.definition.get_closest_marker("async_only") is not None
    name = metafunc.definition.nodeid
    if sync_only and async_only:
        raise pytest.UsageError(f"{name}: sync_only and async_only at once")
    if "aledger" in metafunc.fixturenames and not async_only:
        raise pytest.UsageError(f"{name} uses aledger: mark it async_only")
    twins = ["sync"] if sync_only else ["async"] if async_only else list(TWINS)
    metafunc.parametrize("twin", twins, indirect=True)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_url(backend: str, tmp_path: Path) -> str:
    return backend_url(backend, tmp_path)


@pytest.fixture
def twin(request: pytest.FixtureRequest) -> Twin:
    """The twin under test: "sync" unless the module is marked twins (see the module doc)."""
    return cast(Twin, getattr(request, "param", "sync"))


@pytest.fixture
def open_ledger(twin: Twin) -> Iterator[Opener]:
    """``open_ledger(url, **options)``: a ledger of this test's twin, closed when it ends."""
    with Opener(twin) as opener:
        yield opener


@pytest.fixture
def ledger(open_ledger: Opener, db_url: str) -> AnyLedger:
    """This test's twin on this test's database: ``cl.Ledger``, or the blocking facade over
    ``cl.AsyncLedger``."""
    return open_ledger(db_url)


@pytest.fixture
def aledger(db_url: str, twin: Twin) -> cl.AsyncLedger:
    """An AsyncLedger for ``async def`` tests (``twin`` only puts "async" in their id); closed
    by pytest_pyfunc_call inside the test's own event loop."""
    return cl.AsyncLedger(db_url)


@pytest.fixture
def sync_engine(ledger: AnyLedger) -> Engine:
    return ledger.engine


@pytest.fixture(scope="session")
def shared_ledgers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[str, Twin], AnyLedger]]:
    """One ledger per backend and twin for the whole run, for property tests' many examples."""
    ledgers: dict[tuple[str, Twin], AnyLedger] = {}
    openers = {t: Opener(t) for t in TWINS}

    def get(backend: str, twin: Twin) -> AnyLedger:
        if (backend, twin) not in ledgers:
            tmp = tmp_path_factory.mktemp(f"shared-{twin}")
            ledgers[backend, twin] = openers[twin](backend_url(backend, tmp))
        return ledgers[backend, twin]

    yield get
    for opener in openers.values():
        opener.close()


@pytest.fixture
def shared_ledger(
    shared_ledgers: Callable[[str, Twin], AnyLedger], backend: str, twin: Twin
) -> AnyLedger:
    """This test's backend and twin, on a ledger shared by the whole run."""
    return shared_ledgers(backend, twin)


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    """The local OpenAI-compatible server the real SDK talks to (tests/openai_server.py)."""
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def client(server: FakeOpenAI) -> Iterator[openai.OpenAI]:
    """The real openai SDK, pointed at :func:`server`."""
    with openai.OpenAI(base_url=server.url, api_key="test", max_retries=0) as sdk:
        yield sdk


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
