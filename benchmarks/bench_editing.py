"""Editing history: pop, truncate and fork of a long conversation, against the floor.

    .venv/bin/python benchmarks/bench_editing.py [--n 100000] [--no-postgres]

Each figure is the median of a few runs in this process. The floor for ``fork`` is a raw
``INSERT ... SELECT`` of the same rows into a scratch table; for ``pop`` and ``truncate`` a
raw ``DELETE`` of the same rows. The target: forking a 100,000-message conversation takes at
most 0.5 s on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import text

import chatledger as cl

PG = "postgresql://postgres@127.0.0.1:5432/test"


def load(ledger: cl.Ledger, n: int) -> cl.Conversation:
    conv = ledger.conversation(uuid.uuid4().hex, system="You are terse.")
    batch = []
    for i in range((n - 1) // 2):
        batch += [
            {"role": "user", "content": f"question {i}"},
            {"role": "assistant", "content": f"answer {i}"},
        ]
        if len(batch) >= 2000:
            conv.extend(batch)
            batch = []
    if batch:
        conv.extend(batch)
    return conv


def timed(fn, runs: int = 3) -> float:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def bench(url: str, n: int) -> list[str]:
    with cl.Ledger(url) as ledger:
        conv = load(ledger, n)
        total = conv.info.last_seq
        pk = conv._h.pk
        fork = timed(lambda: conv.fork())
        with ledger.engine.begin() as c:
            c.execute(
                text("CREATE TABLE bench_scratch AS SELECT * FROM chatledger_messages WHERE 1=0")
            )

        def raw_copy2() -> None:
            with ledger.engine.begin() as c2:
                c2.execute(text("DELETE FROM bench_scratch"))
                c2.execute(
                    text(
                        "INSERT INTO bench_scratch SELECT * FROM chatledger_messages "
                        f"WHERE conversation_pk = {pk}"
                    )
                )

        floor = timed(raw_copy2)
        pops = timed(lambda: conv.pop(), runs=21)
        cut = timed(lambda: conv.truncate(conv.info.last_seq - 100), runs=5)
        with ledger.engine.begin() as c:
            c.execute(text("DROP TABLE bench_scratch"))
    db = url.split(":")[0]
    floor_note = f"raw INSERT ... SELECT {floor * 1000:.0f} ms ({fork / floor:.2f}x)"
    return [
        f"| {db} | {total} | fork (all) | {fork * 1000:.0f} ms | {floor_note} |",
        f"| {db} | {total} | pop | {pops * 1000:.2f} ms | |",
        f"| {db} | {total} | truncate (100 messages) | {cut * 1000:.2f} ms | |",
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--no-postgres", action="store_true")
    args = ap.parse_args()
    rows = [
        "| backend | messages | operation | median | floor |",
        "| --- | ---: | --- | ---: | --- |",
    ]
    with tempfile.TemporaryDirectory() as d:
        rows += bench(f"sqlite:///{Path(d) / 'e.db'}", args.n)
    if not args.no_postgres:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import peers

        with peers.pg_database(PG) as url:
            rows += bench(url, args.n)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
