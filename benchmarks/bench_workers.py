"""Many workers: 8 processes appending at once, on PostgreSQL and MariaDB.

    .venv-bench/bin/python benchmarks/bench_workers.py            # 400 appends a worker
    .venv-bench/bin/python benchmarks/bench_workers.py --quick    # 150
    .venv-bench/bin/python benchmarks/bench_workers.py --backends postgresql
    .venv-bench/bin/python benchmarks/bench_workers.py --count    # statements per append
    .venv-bench/bin/python benchmarks/bench_workers.py --quick --profile /tmp/w0  # worker 0

Each backend gets a scratch database (PostgreSQL: ``peers.pg_database``; MariaDB: a
``bench_<random>`` database created and dropped as root). The processes start together at a
barrier; throughput is every message of every process over the time from the first start to
the last end. Four phases, the first three run ``--reps`` times in alternation:

- ``raw``: each process inserts its messages with SQLAlchemy Core, one ``INSERT`` and one
  commit per message, into a table with the columns, keys and indexes of
  ``chatledger_messages`` (no conversation state row). Rows are built before the clock starts
  (seq, JSON, token count); only ``created_at`` is taken on the clock.
- ``raw+state``: the same, plus the conditional ``UPDATE`` of a conversation row chatledger's
  append does (the compare-and-set on ``last_seq``) in the same transaction: chatledger's
  design without chatledger's Python, to tell the cost of the second statement from ours.
- ``own``: each process ``conv.append``\\s the same messages to its own conversation.
- ``shared``: all processes append to ONE conversation; afterwards the conversation is checked
  (every message stored exactly once, seqs 1..N without a gap, running totals and the row's
  totals exact). Appends that found another worker's write first (the handle's state was
  stale, so the locked path ran) are counted by each worker from the seqs it got back; lock
  waits are sampled every 5 ms from ``pg_stat_activity`` / ``information_schema.INNODB_TRX``
  of the scratch database.

Messages alternate user / assistant, 50-300 tokens, one message per call.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import multiprocessing as mp
import os
import platform
import random
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    MetaData,
    Table,
    bindparam,
    create_engine,
    event,
    insert,
    make_url,
    select,
    text,
    update,
)

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import chatledger as cl  # noqa: E402
import workload  # noqa: E402
from bench_bulk import dumps, raw_table  # noqa: E402
from chatledger.store.schema import conversations as conv_table  # noqa: E402
from chatledger.store.schema import messages as msg_table  # noqa: E402
from chatledger.tokens import TokenCounter  # noqa: E402

MODEL = "gpt-4o"
PG = os.environ.get("CHATLEDGER_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
MARIADB = os.environ.get("CHATLEDGER_BENCH_MARIADB", "mysql://root@127.0.0.1:3306/test")
WORKERS = 8


# --- scratch databases --------------------------------------------------------------------


@contextlib.contextmanager
def scratch(backend: str) -> Iterator[str]:
    if backend == "postgresql":
        import peers

        with peers.pg_database(PG) as url:
            yield url
        return
    name = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(make_url(MARIADB).set(drivername="mysql+pymysql"))
    try:
        with admin.begin() as c:
            c.execute(text(f"CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"))
        yield make_url(MARIADB).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.begin() as c:
            c.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        admin.dispose()


# --- the work -----------------------------------------------------------------------------


def make_messages(worker: int, n: int, tag: str) -> list[dict[str, Any]]:
    """``n`` messages alternating user / assistant, 50-300 tokens, each starting with a tag
    that names it (the shared check finds every one exactly once)."""
    rng = random.Random(worker * 7919 + n)
    out = []
    for k in range(n):
        words = " ".join(rng.choice(workload._WORDS) for _ in range(rng.randint(50, 300)))
        role = "user" if k % 2 == 0 else "assistant"
        out.append({"role": role, "content": f"[{tag}-w{worker}-{k}] {words}."})
    return out


def worker(
    url: str,
    index: int,
    n: int,
    reps: int,
    raw_name: str,
    shared_id: str,
    barrier: Any,
    results: Any,
    profile: str | None = None,
) -> None:
    """One process: (raw, own) ``reps`` times, then ``shared`` once, each after the barrier."""
    ledger = cl.Ledger(url)
    engine = ledger.engine
    md = MetaData()
    raw = Table(raw_name, md, autoload_with=engine)
    raw_insert = insert(raw)
    cc = conv_table.c
    set_state = (
        update(conv_table)
        .where(cc.pk == bindparam("p_pk"), cc.last_seq == bindparam("p_seq"))
        .values(
            last_seq=bindparam("n_seq"),
            message_count=cc.message_count + 1,
            token_total=cc.token_total + 1,
            updated_at=bindparam("p_now"),
        )
    )
    counter = TokenCounter(MODEL)
    raw_pk = ledger.create(owner="bench-raw", model=MODEL)._h.pk
    raw_seq = state_seq = 0
    shared = ledger.get(shared_id, owner="bench")
    for r in range(reps):
        msgs = make_messages(index, 2 * n, f"raw{r}")
        counts = counter.messages(msgs)
        rows = []
        for m, c in zip(msgs, counts, strict=True):
            raw_seq += 1
            rows.append(
                {
                    "conversation_pk": raw_pk,
                    "seq": raw_seq,
                    "role": m["role"],
                    "data": dumps(m),
                    "tokens": c,
                    "cum_tokens": c,
                    "round_seq": raw_seq,
                    "status": None,
                    "meta": None,
                    "idempotency_key": None,
                }
            )
        half = len(rows) // 2
        barrier.wait()
        start = time.monotonic()
        for row in rows[:half]:
            with engine.begin() as conn:
                conn.execute(raw_insert, {**row, "created_at": datetime.now(UTC)})
        results.put(("raw", r, index, start, time.monotonic(), 0))

        # the same design without chatledger's Python: the state row updated, then the insert
        barrier.wait()
        start = time.monotonic()
        for row in rows[half:]:
            with engine.begin() as conn:
                now = datetime.now(UTC)
                done = conn.execute(
                    set_state,
                    {"p_pk": raw_pk, "p_seq": state_seq, "n_seq": state_seq + 1, "p_now": now},
                ).rowcount
                state_seq += done  # always 1: nobody else writes this row
                conn.execute(raw_insert, {**row, "created_at": now})
        results.put(("raw+state", r, index, start, time.monotonic(), 0))

        msgs = make_messages(index, n, f"own{r}")
        conv = ledger.create(owner="bench", model=MODEL)
        profiler = None
        if profile and index == 0 and r == reps - 1:  # one worker, while the others run too
            profiler = importlib.import_module("pyinstrument").Profiler(interval=0.0005)
        barrier.wait()
        start = time.monotonic()
        if profiler is not None:
            profiler.start()
        for m in msgs:
            conv.append(m)
        end = time.monotonic()
        if profiler is not None:
            profiler.stop()
            Path(str(profile)).write_text(profiler.output_text(unicode=False, color=False))
        results.put(("own", r, index, start, end, 0))

    msgs = make_messages(index, n, "shared")
    barrier.wait()
    start = time.monotonic()
    missed = 0
    for m in msgs:
        expected = shared.info.last_seq + 1
        if shared.append(m).seq != expected:
            missed += 1  # another worker wrote since this handle's last write
    results.put(("shared", 0, index, start, time.monotonic(), missed))
    ledger.close()


# --- lock waits ---------------------------------------------------------------------------


class LockSampler:
    """Counts, every 5 ms, the sessions of the scratch database waiting on a lock."""

    def __init__(self, url: str, backend: str) -> None:
        self.engine = create_engine(
            make_url(url).set(
                drivername="postgresql+psycopg" if backend == "postgresql" else "mysql+pymysql"
            )
        )
        db = make_url(url).database
        if backend == "postgresql":
            self.q = text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = :db AND wait_event_type = 'Lock'"
            ).bindparams(db=db)
        else:
            self.q = text(
                "SELECT count(*) FROM information_schema.INNODB_TRX t "
                "JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id "
                "WHERE p.DB = :db AND t.trx_state = 'LOCK WAIT'"
            ).bindparams(db=db)
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.engine.connect() as c:
            while not self._stop.is_set():
                self.samples.append(int(c.execute(self.q).scalar() or 0))
                c.rollback()
                time.sleep(0.005)

    def __enter__(self) -> LockSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.engine.dispose()


# --- checks -------------------------------------------------------------------------------


def check_shared(ledger: cl.Ledger, cid: str, expected: int) -> str:
    """Every appended message stored once, seqs gap-free, totals exact; '' when all hold."""
    conv = ledger.get(cid, owner="bench")
    info = conv.info
    m = msg_table.c
    with ledger.engine.connect() as c:
        rows = c.execute(
            select(m.seq, m.data, m.tokens, m.cum_tokens, m.round_seq, m.role)
            .where(m.conversation_pk == conv._h.pk)
            .order_by(m.seq)
        ).all()
        state = c.execute(
            select(
                conv_table.c.message_count, conv_table.c.token_total, conv_table.c.last_seq
            ).where(conv_table.c.pk == conv._h.pk)
        ).one()
    problems = []
    if [r.seq for r in rows] != list(range(1, len(rows) + 1)):
        problems.append("seqs have gaps")
    tags = [r.data.split("]", 1)[0] for r in rows[1:]]  # row 1 is the system prompt
    if len(tags) != expected or len(set(tags)) != expected:
        problems.append(f"{len(tags)} stored, {len(set(tags))} distinct, {expected} appended")
    cum = 0
    for r in rows:
        cum += r.tokens
        if r.cum_tokens != cum:
            problems.append(f"cum_tokens wrong at seq {r.seq}")
            break
    if (state.message_count, state.token_total, state.last_seq) != (len(rows), cum, len(rows)):
        problems.append(f"row totals {tuple(state)} != {(len(rows), cum, len(rows))}")
    if info.message_count != len(rows):
        problems.append("info.message_count")
    return "; ".join(problems)


# --- one backend --------------------------------------------------------------------------


def run_backend(backend: str, n: int, reps: int, profile: str | None) -> list[str]:
    with scratch(backend) as url:
        ledger = cl.Ledger(url)
        cid = f"shared-{uuid.uuid4().hex[:8]}"
        ledger.conversation(cid, owner="bench", model=MODEL, system="You are terse.")
        md = MetaData()
        table = raw_table(md)
        md.create_all(ledger.engine, tables=[table])
        ledger.engine.dispose()  # no pooled connection crosses the fork
        ctx = mp.get_context("fork")
        barrier = ctx.Barrier(WORKERS)
        results = ctx.Queue()
        procs = [
            ctx.Process(
                target=worker,
                args=(url, i, n, reps, table.name, cid, barrier, results),
                kwargs={"profile": None if profile is None else f"{profile}.{backend}.txt"},
            )
            for i in range(WORKERS)
        ]
        for p in procs:
            p.start()
        expected = WORKERS * (3 * reps + 1)
        got: list[tuple[str, int, int, float, float, int]] = []
        sampler: LockSampler | None = None
        while len(got) < expected:
            got.append(results.get(timeout=600))
            done_own = sum(1 for g in got if g[0] == "own")
            if sampler is None and done_own == WORKERS * reps:
                sampler = LockSampler(url, backend).__enter__()  # before the shared phase
        for p in procs:
            p.join()
        assert sampler is not None
        sampler.__exit__()
        if any(p.exitcode for p in procs):
            raise SystemExit(f"a worker failed on {backend}")
        problems = check_shared(ledger, cid, WORKERS * n)
        ledger.close()  # the scratch database goes, and the floor's table with it

    def rate(phase: str, r: int) -> float:
        rs = [g for g in got if g[0] == phase and g[1] == r]
        return WORKERS * n / (max(g[4] for g in rs) - min(g[3] for g in rs))

    raw = statistics.median(rate("raw", r) for r in range(reps))
    state = statistics.median(rate("raw+state", r) for r in range(reps))
    own = statistics.median(rate("own", r) for r in range(reps))
    shared = rate("shared", 0)
    missed = sum(g[5] for g in got if g[0] == "shared")
    waiting = statistics.mean(sampler.samples) if sampler.samples else 0.0
    peak = max(sampler.samples, default=0)
    verdict = "correct" if not problems else f"WRONG: {problems}"
    return [
        f"| {backend} | raw Core insert+commit, own conversations | {raw:,.0f} | 1.00 | |",
        f"| {backend} | raw Core UPDATE state row + INSERT + commit, own conversations | "
        f"{state:,.0f} | {state / raw:.2f} | |",
        f"| {backend} | conv.append, own conversations | {own:,.0f} | {own / raw:.2f} | |",
        f"| {backend} | conv.append, one shared conversation | {shared:,.0f} | "
        f"{shared / raw:.2f} | {verdict}; {missed} of {WORKERS * n} appends found the "
        f"handle stale (locked path); sessions waiting on a lock: mean {waiting:.1f}, "
        f"max {peak} ({len(sampler.samples)} samples) |",
    ]


# --- statements per append ----------------------------------------------------------------


def count_statements(backend: str) -> None:
    """Statements one process runs per append (own conversation), and a profile of 200."""
    with scratch(backend) as url:
        ledger = cl.Ledger(url)
        conv = ledger.create(owner="bench", model=MODEL)
        msgs = make_messages(0, 400, "count")
        for m in msgs[:20]:
            conv.append(m)
        seen: list[str] = []

        @event.listens_for(ledger.engine, "before_cursor_execute")
        def _count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            seen.append(statement.split(None, 1)[0].upper())

        @event.listens_for(ledger.engine, "commit")
        def _commit(conn: Any) -> None:
            seen.append("COMMIT")

        for m in msgs[20:120]:
            conv.append(m)
        kinds = {k: seen.count(k) / 100 for k in sorted(set(seen))}
        print(f"{backend}: statements per append: {kinds}")
        try:
            profiler = importlib.import_module("pyinstrument").Profiler
        except ImportError:
            ledger.close()
            return
        p = profiler(interval=0.0005)
        p.start()
        for m in msgs[120:]:
            conv.append(m)
        p.stop()
        print(p.output_text(unicode=False, color=False))
        ledger.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="150 appends a worker, 2 repetitions")
    ap.add_argument("--backends", default="postgresql,mariadb")
    ap.add_argument("--n", type=int, default=None, help="appends a worker per phase")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--count", action="store_true", help="statements per append, and a profile")
    ap.add_argument(
        "--profile", metavar="PATH", help="pyinstrument profile of worker 0's own appends"
    )
    args = ap.parse_args()
    backends = args.backends.split(",")
    if args.count:
        for b in backends:
            count_statements(b)
        return
    n = args.n or (150 if args.quick else 400)
    reps = args.reps or (2 if args.quick else 3)
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} cores, "
        f"load {os.getloadavg()[0]:.2f}; {WORKERS} processes x {n} appends, "
        f"median of {reps} (shared: 1 run)\n"
    )
    print("| backend | phase | messages/s (all processes) | vs raw | notes |")
    print("| --- | --- | ---: | ---: | --- |")
    for b in backends:
        for line in run_backend(b, n, reps, args.profile):
            print(line, flush=True)
    print(f"\nload after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
