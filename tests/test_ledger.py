"""Ledger lifecycle: URLs and engines, schema checks, errors from a database that is not there."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import create_engine

import chatledger as cl
from chatledger.store.engine import resolve_url

ROOT = Path(__file__).resolve().parents[1]


def test_resolve_url_picks_installed_drivers() -> None:
    assert resolve_url("postgresql://u@h/db", asynchronous=False).drivername == "postgresql+psycopg"
    assert resolve_url("postgresql://u@h/db", asynchronous=True).drivername == "postgresql+asyncpg"
    assert resolve_url("mysql://u@h/db", asynchronous=True).drivername == "mysql+aiomysql"
    assert resolve_url("mysql://u@h/db", asynchronous=False).query["charset"] == "utf8mb4"
    assert resolve_url("sqlite:///x.db", asynchronous=True).drivername == "sqlite+aiosqlite"
    assert resolve_url("sqlite:///x.db", asynchronous=False).drivername == "sqlite"
    # an explicit driver is kept
    assert resolve_url("mysql+asyncmy://u@h/db", asynchronous=True).drivername == "mysql+asyncmy"


def test_callers_engine_is_used_and_not_disposed(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'own.db'}")
    with cl.Ledger(engine) as led:
        led.conversation("x").append({"role": "user", "content": "hi"})
    # still usable after the ledger closed: the ledger did not own it
    assert cl.Ledger(engine).get("x").messages() == [{"role": "user", "content": "hi"}]
    engine.dispose()


def test_missing_schema_without_create(tmp_path: Path) -> None:
    led = cl.Ledger(f"sqlite:///{tmp_path / 'empty.db'}", create_tables=False)
    with pytest.raises(cl.SchemaVersionError, match="create_tables"):
        led.conversation("x")


def test_unreachable_database_is_a_storage_error() -> None:
    led = cl.Ledger("postgresql://postgres@127.0.0.1:1/test", connect_args={"connect_timeout": 2})
    with pytest.raises(cl.StorageError):
        led.conversation("x")


def test_memory_sqlite_works_across_threads() -> None:
    led = cl.Ledger("sqlite://")
    conv = led.conversation("m")
    t = threading.Thread(target=lambda: led.get("m").append({"role": "user", "content": "t"}))
    t.start()
    t.join()
    assert conv.messages() == [{"role": "user", "content": "t"}]


def test_concurrent_get_or_create_makes_one(db_url: str, uid: str) -> None:
    led = cl.Ledger(db_url)
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
    led.close()


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
