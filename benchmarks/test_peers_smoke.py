"""A quick check that every peer runs: setup, append, cold open, window at budget 2000.

    .venv-bench/bin/pytest benchmarks/test_peers_smoke.py -q -s   # -s shows the verdicts

Run with the bench venv (the peers' libraries are not in the test extra); the main suite does
not collect benchmarks/. Correctness is printed, not asserted: some peers are known to build
wrong windows, and the harness reports that. The network is blocked except the loopback.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peers
import workload

N = 60
BUDGET = 2000
PG_URL = os.environ.get("CHATLEDGER_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing may reach beyond this machine (no downloads, no LLM calls)."""
    real = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            host = address[0]
            if not (host.startswith("127.") or host in ("::1", "localhost")):
                raise AssertionError(f"network access to {address!r}")
        return real(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


def _pg_reachable() -> str | None:
    try:
        from sqlalchemy import create_engine, text

        engine = create_engine(peers._sync_url(PG_URL))
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
    except Exception as exc:
        return f"PostgreSQL unreachable at {PG_URL}: {exc}"
    return None


def _names() -> list[str]:
    return [p.name for p in peers.all_peers(BUDGET, include_chatledger=True)]


def _make(name: str) -> Any:
    return next(p for p in peers.all_peers(BUDGET, include_chatledger=True) if p.name == name)


def _exercise(peer: Any, target: str) -> None:
    history = workload.history(N)
    newest = {"role": "user", "content": "Which museum opens earliest tomorrow?"}
    try:
        peer.setup(target, history)
        peer.append({"role": "assistant", "content": "The city museum, at nine."})
        peer.append(newest)
        stored = [*history, {"role": "assistant", "content": "The city museum, at nine."}, newest]
        warm = peer.window(BUDGET)
        peer.open()  # cold: a fresh instance on the existing database
        cold = peer.window(BUDGET)
    finally:
        peer.close()
    for w in (warm, cold):
        assert isinstance(w, list)
        assert all(isinstance(m, dict) for m in w)
    assert cold == warm
    ok, why = workload.is_correct_window(cold, stored, BUDGET, peers.MODEL)
    backend = "postgresql" if "://" in target else "sqlite"
    verdict = "correct" if ok else f"WRONG: {why}"
    print(f"\n{peer.name} ({backend}): {len(cold)} messages, {verdict}")


@pytest.mark.parametrize("name", _names())
def test_peer_sqlite(name: str, tmp_path: Path) -> None:
    _exercise(_make(name), str(tmp_path / f"{name}.db"))


@pytest.mark.parametrize("name", _names())
def test_peer_postgresql(name: str) -> None:
    peer = _make(name)
    if not peer.supports_postgres:
        pytest.skip(f"{name} stores in SQLite files only")
    why = _pg_reachable()
    if why:
        pytest.skip(why)
    with peers.pg_database(PG_URL) as url:
        _exercise(peer, url)


@pytest.mark.parametrize("target", ["sqlite", "postgresql"])
def test_raw_floors(target: str, tmp_path: Path) -> None:
    floor = peers.RawCoreInsert()
    if target == "postgresql":
        why = _pg_reachable()
        if why:
            pytest.skip(why)
        url = PG_URL
    else:
        url = str(tmp_path / "floor.db")
    history = workload.history(N)
    try:
        floor.setup(url, history)
        floor.append({"role": "user", "content": "one more"})
        floor.open()
        floor.append({"role": "assistant", "content": "one more answer"})
        with pytest.raises(NotImplementedError):
            floor.window(BUDGET)
    finally:
        floor.close()
    n = peers.raw_tiktoken_encode(peers.message_texts(history))
    assert n > 0
