"""Where an append's time goes: a staircase from a raw insert up to chatledger's append.

    .venv-bench/bin/python benchmarks/bench_append_floor.py [--runs 2000] [--no-postgres]

Each step adds one thing an append must do, all timed in alternation in one process so every
step sees the same machine:

1. ``floor``: a raw SQLAlchemy Core insert + commit of the message row (every column an
   append stores) into a table of the same columns, keyed like chatledger's.
2. ``+ state``: the same, plus the conditional update of a per-conversation state row
   (last seq, running totals, tool state, compare-and-set on last seq and revision) in the same
   transaction: what gap-free seq and O(1) totals cost. On PostgreSQL both go in one statement
   (a data-modifying CTE), as chatledger's append does.
3. ``+ exact count``: step 2, plus validating and counting the message exactly with
   chatledger's counter and serialising it.
4. ``chatledger``: ``Conversation.append`` itself.

The ratios against step 1 say what each guarantee costs; the gap between step 3 and step 4 is
chatledger's own Python (planning, the handle, the driver).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    MetaData,
    Table,
    bindparam,
    insert,
    literal_column,
    select,
    update,
)

import chatledger as cl
from chatledger.store.engine import make_sync_engine
from chatledger.store.schema import messages
from chatledger.tokens import TokenCounter

PG = "postgresql://postgres@127.0.0.1:5432/test"
MESSAGE = {"role": "user", "content": "one more question about the trip?"}


class Staircase:
    """Steps 1-3 on their own tables beside chatledger's."""

    def __init__(self, url: str) -> None:
        self.engine = make_sync_engine(url)
        self.md = MetaData()
        tag = uuid.uuid4().hex[:8]
        self.rows = Table(
            f"bench_rows_{tag}",
            self.md,
            *(Column(c.name, c.type, primary_key=c.primary_key) for c in messages.c),
        )
        self.state = Table(
            f"bench_state_{tag}",
            self.md,
            Column("pk", Integer, primary_key=True, autoincrement=False),
            Column("last_seq", Integer),
            Column("token_total", BigInteger),
            Column("message_count", Integer),
            Column("revision", Integer),
        )
        self.md.create_all(self.engine)
        with self.engine.begin() as conn:
            conn.execute(
                insert(self.state),
                {"pk": 1, "last_seq": 0, "token_total": 0, "message_count": 0, "revision": 0},
            )
        s = self.state.c
        self.insert = insert(self.rows)
        self.set_state = (
            update(self.state)
            .where(
                s.pk == 1,
                s.last_seq == bindparam("p_last"),
                s.revision == bindparam("p_revision"),
            )
            .values(
                last_seq=bindparam("n_last"),
                token_total=s.token_total + bindparam("n_tokens"),
                message_count=s.message_count + 1,
            )
        )
        self.pg = self.engine.dialect.name == "postgresql"
        if self.pg:
            cte = self.set_state.returning(s.pk).cte("state")
            cols = [c.name for c in messages.c]
            source = select(
                *(
                    cte.c.pk
                    if name == "conversation_pk"
                    else bindparam(name, type_=messages.c[name].type)
                    for name in cols
                )
            )
            self.both = insert(self.rows).from_select(cols, source).returning(literal_column("1"))
        self.seq = 0  # the rows' key
        self.last = 0  # the state row's last seq
        self.counter = TokenCounter("gpt-4o")

    def _row(self, tokens: int, data: str) -> dict[str, Any]:
        self.seq += 1
        return {
            "conversation_pk": 1,
            "seq": self.seq,
            "role": "user",
            "data": data,
            "tokens": tokens,
            "cum_tokens": tokens * self.seq,
            "round_seq": self.seq,
            "created_at": datetime.now(UTC),
            "status": None,
            "meta": None,
            "idempotency_key": None,
        }

    def floor(self) -> None:
        row = self._row(12, '{"role": "user", "content": "one more question about the trip?"}')
        with self.engine.begin() as conn:
            conn.execute(self.insert, row)

    def _with_state(self, tokens: int, data: str) -> None:
        row = self._row(tokens, data)
        state = {"p_last": self.last, "p_revision": 0, "n_last": self.last + 1, "n_tokens": tokens}
        self.last += 1
        with self.engine.begin() as conn:
            if self.pg:
                assert conn.execute(self.both, {**row, **state}).all()
            else:
                assert conn.execute(self.set_state, state).rowcount == 1
                conn.execute(self.insert, row)

    def state_step(self) -> None:
        self._with_state(12, '{"role": "user", "content": "one more question about the trip?"}')

    def counted(self) -> None:
        msg = dict(MESSAGE)
        tokens = self.counter.message(msg)
        self._with_state(tokens, json.dumps(msg))

    def close(self) -> None:
        self.md.drop_all(self.engine)
        self.engine.dispose()


def bench(url: str, runs: int) -> list[tuple[str, float]]:
    stairs = Staircase(url)
    with cl.Ledger(url) as ledger:
        conv = ledger.conversation(uuid.uuid4().hex, owner="bench", model="gpt-4o")
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("floor: raw Core insert + commit", stairs.floor),
            ("+ state row (compare-and-set)", stairs.state_step),
            ("+ validate and count exactly", stairs.counted),
            ("chatledger append", lambda: conv.append(dict(MESSAGE))),
        ]
        times: dict[str, list[float]] = {name: [] for name, _ in steps}
        for _ in range(50):  # warm every statement cache
            for _, fn in steps:
                fn()
        gc.collect()
        gc.freeze()
        for _ in range(runs):
            for name, fn in steps:
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
        gc.unfreeze()
        ledger.delete(conv.id, owner="bench")
    stairs.close()
    return [(name, statistics.median(ts)) for name, ts in times.items()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--no-postgres", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        urls = [("sqlite", f"sqlite:///{Path(tmp) / 'append.db'}")]
        if not args.no_postgres:
            urls.append(("postgresql", PG))
        print(f"{platform.processor() or platform.machine()}, Python {platform.python_version()}")
        print("| backend | step | median | x floor |")
        print("| --- | --- | ---: | ---: |")
        for backend, url in urls:
            results = bench(url, args.runs)
            base = results[0][1]
            for name, secs in results:
                print(f"| {backend} | {name} | {secs * 1e6:.0f} us | {secs / base:.2f}x |")


if __name__ == "__main__":
    main()
