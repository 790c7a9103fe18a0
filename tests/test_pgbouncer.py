"""chatledger behind PgBouncer in transaction pooling mode (``pool_mode = transaction``).

In that mode a client's transactions each run on whichever server connection is free, so
nothing may outlive a transaction on the server: not a prepared statement, not a ``SET``.
Both drivers prepare statements by default (psycopg 3 after ``prepare_threshold`` = 5
executions of one query on a connection; SQLAlchemy's asyncpg dialect for every statement,
cached by name), and PgBouncer before 1.21 (``max_prepared_statements``) cannot follow them.
These tests show the failure with the drivers' defaults and run the whole workload with the
settings docs/scaling.md gives:

- sync (psycopg): ``connect_args={"prepare_threshold": None}``;
- async (asyncpg): ``?prepared_statement_cache_size=0`` in the URL and
  ``connect_args={"statement_cache_size": 0}``: every statement is then an unnamed one,
  prepared and run inside its transaction.

The bouncer is a real ``pgbouncer`` on a free loopback port, started for this module and
stopped at its end; the module is skipped only where no ``pgbouncer`` is installed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from sqlalchemy import create_engine, make_url, text

import chatledger as cl
from chatledger.store.engine import resolve_url
from conftest import SERVER_URLS
from openai_server import FakeOpenAI
from test_partitioned import scratch_database, workload
from twins import Opener

PGBOUNCER = shutil.which("pgbouncer")
pytestmark = pytest.mark.skipif(PGBOUNCER is None, reason="pgbouncer is not installed")

SYNC_OPTIONS = {"connect_args": {"prepare_threshold": None}}
ASYNC_QUERY = "prepared_statement_cache_size=0"
ASYNC_OPTIONS = {"connect_args": {"statement_cache_size": 0}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(folder: Path, port: int) -> Path:
    server = make_url(SERVER_URLS["postgresql"])
    user = server.username or "postgres"
    (folder / "users.txt").write_text(f'"{user}" ""\n')
    ini = folder / "pgbouncer.ini"
    ini.write_text(
        "[databases]\n"
        f"* = host={server.host or '127.0.0.1'} port={server.port or 5432}\n"
        "[pgbouncer]\n"
        "listen_addr = 127.0.0.1\n"
        f"listen_port = {port}\n"
        "unix_socket_dir =\n"
        "auth_type = trust\n"
        f"auth_file = {folder / 'users.txt'}\n"
        "pool_mode = transaction\n"
        "default_pool_size = 8\n"
        "max_client_conn = 200\n"
    )
    for path in (folder, folder / "users.txt", ini):  # readable by the user it runs as
        path.chmod(0o755 if path.is_dir() else 0o644)
    return ini


@pytest.fixture(scope="module")
def bouncer() -> Iterator[int]:
    """A pgbouncer in transaction mode in front of the test server; yields its port."""
    assert PGBOUNCER is not None
    folder = Path(tempfile.mkdtemp(prefix="chatledger-pgbouncer-"))
    port = _free_port()
    # pgbouncer refuses to run as root: drop to the server's own user then
    as_user = ["-u", "postgres"] if os.geteuid() == 0 else []
    proc = subprocess.Popen(
        [PGBOUNCER, *as_user, str(_config(folder, port))],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.stderr else ""
                pytest.fail(f"pgbouncer did not start: {err}", pytrace=False)
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


def _via(url: str, port: int, query: str = "") -> str:
    """``url`` with its host and port those of the bouncer."""
    u = make_url(url).set(host="127.0.0.1", port=port)
    return u.render_as_string(hide_password=False) + (f"?{query}" if query else "")


@pytest.fixture
def database() -> Iterator[str]:
    """A fresh database, its tables created directly on the server (schema work is not for a
    transaction pooler: ``chatledger db upgrade`` holds a session lock across transactions)."""
    with scratch_database("chatledger_pgb") as url:
        cl.Ledger(url).close()
        yield url


def test_sync_workload_through_pgbouncer(
    bouncer: int, database: str, server: FakeOpenAI, client: openai.OpenAI
) -> None:
    url = _via(database, bouncer)
    with cl.Ledger(url, **SYNC_OPTIONS) as ledger:  # type: ignore[arg-type]
        workload(ledger, ledger, server, client)


def test_async_workload_through_pgbouncer(
    bouncer: int, database: str, server: FakeOpenAI, client: openai.OpenAI
) -> None:
    with Opener("async") as opener, cl.Ledger(_via(database, bouncer), **SYNC_OPTIONS) as sync:  # type: ignore[arg-type]
        ledger = opener(_via(database, bouncer, ASYNC_QUERY), **ASYNC_OPTIONS)
        workload(ledger, sync, server, client)


def _append_while_another_client_holds_its_server(
    opener: Opener, url: str, direct: str, **options: object
) -> None:
    """Six appends on one client connection (psycopg prepares from the sixth execution on),
    then a second client holds that server connection in a transaction while the first
    appends again: PgBouncer hands the first another server connection."""
    ledger = opener(url, pool_size=1, max_overflow=0, **options)
    conv = ledger.create("c")
    for i in range(6):
        conv.append({"role": "user", "content": f"hello {i}"})
    other = create_engine(resolve_url(make_url(url).set(query={}), asynchronous=False))
    try:
        with other.begin() as conn:
            conn.execute(text("SELECT 1"))
            conv.append({"role": "user", "content": "and once more"})
    finally:
        other.dispose()
    assert conv.info.last_seq == 7
    with cl.Ledger(direct) as check:
        assert check.get("c").info.last_seq == 7


@pytest.mark.parametrize("twin", ["sync", "async"])
def test_driver_defaults_break_under_transaction_pooling(
    bouncer: int, database: str, twin: str
) -> None:
    """Why the settings are needed: with the drivers' defaults a statement prepared on one
    server connection is run on another, and the write is refused."""
    with Opener(twin) as opener, pytest.raises(cl.StorageError, match="prepared statement"):  # type: ignore[arg-type]
        _append_while_another_client_holds_its_server(opener, _via(database, bouncer), database)


@pytest.mark.parametrize("twin", ["sync", "async"])
def test_the_settings_keep_statements_in_their_transaction(
    bouncer: int, database: str, twin: str
) -> None:
    url, options = (
        (_via(database, bouncer), SYNC_OPTIONS)
        if twin == "sync"
        else (_via(database, bouncer, ASYNC_QUERY), ASYNC_OPTIONS)
    )
    with Opener(twin) as opener:  # type: ignore[arg-type]
        _append_while_another_client_holds_its_server(opener, url, database, **options)


def test_a_session_setting_stays_with_the_server_connection(bouncer: int, database: str) -> None:
    """Why docs/scaling.md sets ``lock_timeout`` on the role: the ``SET`` a ledger sends when it
    connects lands on one server connection, and the next client to get that connection
    inherits it, while the ledger's own next transaction may run on one without it."""
    url = _via(database, bouncer)
    with cl.Ledger(url, lock_timeout=7, pool_size=1, **SYNC_OPTIONS) as ledger:  # type: ignore[arg-type]
        assert ledger.conversations() == []  # the first call connects
        stranger = create_engine(resolve_url(url, asynchronous=False))
        try:
            with stranger.connect() as conn:  # never set anything
                assert conn.execute(text("SHOW lock_timeout")).scalar() == "7s"
        finally:
            stranger.dispose()
