"""A window against its floor: a raw SELECT of the same rows by primary-key range.

    .venv-bench/bin/python benchmarks/bench_window_floor.py [--n 10000] [--no-postgres] [--profile]

The floor reads the rows the window sends (the prefix and the kept tail) with one SQLAlchemy
Core ``SELECT`` by ``(conversation_pk, seq)`` range and decodes their JSON, as any store must.
The middle column adds what a consistent read must do: the conversation row and the rows in
one snapshot (two statements in a read transaction). The window does that and also finds the
cut point, checks the tool state, counts the tools and builds the account. Medians of many runs
in one process; ``--profile`` prints where a window's time goes (pyinstrument).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import text

import chatledger as cl

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import workload  # noqa: E402

PG = "postgresql://postgres@127.0.0.1:5432/test"
BUDGET = 8000


def timed(fn: Callable[[], Any], runs: int = 200) -> float:
    for _ in range(10):
        fn()
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def bench(url: str, n: int, profile: bool) -> list[str]:
    with cl.Ledger(url) as ledger:
        conv = ledger.conversation(uuid.uuid4().hex, model="gpt-4o")
        history = workload.history(n)
        for i in range(0, len(history), 2000):
            conv.extend(history[i : i + 2000])
        strategy = cl.TokenBudget(BUDGET)
        w = conv.window(strategy, explain=True)
        pk = conv._h.pk
        first, last, prefix = w.kept.first, w.kept.last, w.prefix.count
        cols = (
            "SELECT seq, role, data, tokens, cum_tokens, round_seq, created_at, status, meta, "
            "idempotency_key FROM chatledger_messages WHERE conversation_pk = :pk AND "
        )
        # two primary-key ranges (an OR of them would scan on SQLite)
        sql = text(
            f"{cols} seq <= :prefix UNION ALL {cols} seq BETWEEN :first AND :last ORDER BY seq"
        )

        def floor() -> None:
            with ledger.engine.connect() as c:
                rows = c.execute(
                    sql, {"pk": pk, "prefix": prefix, "first": first, "last": last}
                ).all()
            [json.loads(r[2]) for r in rows]

        from chatledger.store.locks import read_snapshot

        state_sql = text("SELECT * FROM chatledger_conversations WHERE pk = :pk")

        def floor_snapshot() -> None:
            # the floor, plus what consistency asks: the conversation row and the rows read
            # in one snapshot (a read transaction on SQLite, REPEATABLE READ on PostgreSQL)
            with ledger.engine.connect() as c:
                read_snapshot(c)
                c.execute(state_sql, {"pk": pk}).one()
                rows = c.execute(
                    sql, {"pk": pk, "prefix": prefix, "first": first, "last": last}
                ).all()
                c.rollback()
            [json.loads(r[2]) for r in rows]

        def window() -> None:
            conv.window(strategy)

        t_floor, t_snap, t_window = timed(floor), timed(floor_snapshot), timed(window)
        if profile:
            from pyinstrument import Profiler

            p = Profiler(interval=0.0001)
            p.start()
            for _ in range(300):
                window()
            p.stop()
            print(p.output_text(unicode=False, color=False, show_all=False))
    db = url.split(":")[0]
    return [
        f"| {db} | {n} | {w.kept.count + prefix} | {t_window * 1e3:.2f} ms | "
        f"{t_floor * 1e3:.2f} ms | {t_snap * 1e3:.2f} ms ({t_snap / t_floor:.2f}x) | "
        f"{t_window / t_floor:.2f}x |"
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    rows = [
        "| backend | messages | rows sent | window | raw SELECT + decode "
        "| + state row in one snapshot | ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    with tempfile.TemporaryDirectory() as d:
        rows += bench(f"sqlite:///{Path(d) / 'w.db'}", args.n, args.profile)
    if not args.no_postgres:
        import peers

        with peers.pg_database(PG) as url:
            rows += bench(url, args.n, args.profile)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
