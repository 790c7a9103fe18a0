"""Ledger lifecycle: URLs and engines, schema checks, errors from a database that is not there;
for both twins, and that the twins offer one API."""

from __future__ import annotations

import inspect
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import chatledger as cl
from chatledger.store.engine import resolve_url
from chatledger.streaming import AsyncStreamRecorder, StreamRecorder
from twins import AnyLedger, BlockingConversation, BlockingLedger, Opener, Twin

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.twins

TWIN_CLASSES = [
    (cl.Ledger, cl.AsyncLedger),
    (cl.Conversation, cl.AsyncConversation),
    (StreamRecorder, AsyncStreamRecorder),
]


@pytest.mark.parametrize(("sync", "async_"), TWIN_CLASSES, ids=lambda c: c.__name__)
def test_twins_offer_one_api(sync: type, async_: type) -> None:
    """The same public names, and the same parameters for every method (a parameter the sync
    twin has and the async one lacks would only fail the tests that happen to pass it)."""
    public = {n for n in dir(sync) if not n.startswith("_")}
    assert public == {n for n in dir(async_) if not n.startswith("_")}
    for name in sorted(public):
        s, a = getattr(sync, name), getattr(async_, name)
        if callable(s):
            assert list(inspect.signature(s).parameters.values()) == list(
                inspect.signature(a).parameters.values()
            ), name


def test_each_twin_is_tested_through_its_own_api(ledger: AnyLedger, twin: Twin, uid: str) -> None:
    """The sync twin is the library's own object; the async one only wrapped (see twins.py)."""
    conv = ledger.conversation(uid)
    if twin == "sync":
        assert type(ledger) is cl.Ledger and type(conv) is cl.Conversation
    else:
        assert isinstance(ledger, BlockingLedger) and type(ledger.wrapped) is cl.AsyncLedger
        assert isinstance(conv, BlockingConversation)
        assert type(conv.wrapped) is cl.AsyncConversation


def test_resolve_url_picks_installed_drivers() -> None:
    assert resolve_url("postgresql://u@h/db", asynchronous=False).drivername == "postgresql+psycopg"
    assert resolve_url("postgresql://u@h/db", asynchronous=True).drivername == "postgresql+asyncpg"
    assert resolve_url("mysql://u@h/db", asynchronous=True).drivername == "mysql+aiomysql"
    assert resolve_url("mysql://u@h/db", asynchronous=False).query["charset"] == "utf8mb4"
    assert resolve_url("sqlite:///x.db", asynchronous=True).drivername == "sqlite+aiosqlite"
    assert resolve_url("sqlite:///x.db", asynchronous=False).drivername == "sqlite"
    # an explicit driver is kept
    assert resolve_url("mysql+asyncmy://u@h/db", asynchronous=True).drivername == "mysql+asyncmy"


def test_callers_engine_is_used_and_not_disposed(open_ledger: Opener, tmp_path: Path) -> None:
    engine = open_ledger.engine(f"sqlite:///{tmp_path / 'own.db'}")  # the twin's kind of engine
    with open_ledger(engine) as led:
        led.conversation("x").append({"role": "user", "content": "hi"})
    # still usable after the ledger closed: the ledger did not own it
    assert open_ledger(engine).get("x").messages() == [{"role": "user", "content": "hi"}]


def test_missing_schema_without_create(open_ledger: Opener, tmp_path: Path) -> None:
    led = open_ledger(f"sqlite:///{tmp_path / 'empty.db'}", create_tables=False)
    with pytest.raises(cl.SchemaVersionError, match="create_tables"):
        led.conversation("x")


def test_unreachable_database_is_a_storage_error(open_ledger: Opener, twin: Twin) -> None:
    # psycopg and asyncpg spell the connect timeout differently
    timeout = {"connect_timeout": 2} if twin == "sync" else {"timeout": 2}
    led = open_ledger("postgresql://postgres@127.0.0.1:1/test", connect_args=timeout)
    with pytest.raises(cl.StorageError):
        led.conversation("x")


def test_memory_sqlite_works_across_threads(open_ledger: Opener) -> None:
    """One in-memory database for every connection: another thread's (or, on the async twin,
    another task's) write is seen."""
    led = open_ledger("sqlite://")
    conv = led.conversation("m")
    t = threading.Thread(target=lambda: led.get("m").append({"role": "user", "content": "t"}))
    t.start()
    t.join()
    assert conv.messages() == [{"role": "user", "content": "t"}]


def test_concurrent_get_or_create_makes_one(ledger: AnyLedger, uid: str) -> None:
    """Six workers (threads; on the async twin, concurrent tasks) create one conversation."""
    led = ledger
    got: list[str] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            got.append(led.conversation(uid, system="once").id)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and got == [uid] * 6
    assert led.get(uid).messages() == [{"role": "system", "content": "once"}]


def test_readme_quickstart_runs(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'quick.db'}"
    for _ in range(2):  # and again on the same database
        out = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "quickstart.py"), url],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout
    lines = out.splitlines()
    stored = int(lines[-2].rsplit(" ", 1)[1])
    recounted = int(lines[-1].rsplit(" ", 1)[1])
    assert stored == recounted > 0
    assert sum(" tool " in line for line in lines) == 1
