"""Bulk import: ``conv.extend`` of a long history and ``import_jsonl`` of a backup, against a
raw ``executemany`` of the same rows.

    .venv-bench/bin/python benchmarks/bench_bulk.py            # N = 10k and 100k
    .venv-bench/bin/python benchmarks/bench_bulk.py --quick    # N = 10k only
    .venv-bench/bin/python benchmarks/bench_bulk.py --no-postgres
    .venv-bench/bin/python benchmarks/bench_bulk.py --breakdown  # CPU per message, by step
    .venv-bench/bin/python benchmarks/bench_bulk.py --cpu        # process CPU, SQLite

Two floors, timed in this process in alternation with chatledger (ratios only, never
absolute targets):

- ``raw``: the rows chatledger stores (seq, role, compact JSON, token count, running total,
  round marker, time) built before the clock starts, inserted with one ``executemany`` and one
  commit per batch into a table with the columns, primary key, foreign key and indexes of
  ``chatledger_messages``. The database's floor.
- ``raw+count``: the same with ``json.dumps`` of each message and tiktoken's
  ``encode_ordinary`` of its texts on the clock (the Rust core, as chatledger calls it): the
  least work any store of exact token counts does, without chatledger's validation, tool
  pairing or per-message rules.

For ``import_jsonl`` the floors insert each conversation's row and then its messages in one
transaction per conversation, as the import does; ``raw+count`` also parses each line with
``json.loads`` on the clock.
Throughput is messages per second; a ratio is chatledger's throughput over the floor's.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import Column, ForeignKey, Index, MetaData, Table, insert, text

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import chatledger as cl  # noqa: E402
import workload  # noqa: E402
from chatledger.backup import export_jsonl, import_jsonl  # noqa: E402
from chatledger.store.schema import conversations as conv_table  # noqa: E402
from chatledger.store.schema import messages as msg_table  # noqa: E402
from chatledger.tokens import TokenCounter, encoding_for_model  # noqa: E402

MODEL = "gpt-4o"
PG = os.environ.get("CHATLEDGER_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
BATCH = 1000
CONV_SIZE = 100  # about this many messages per conversation in the backup file


def raw_table(md: MetaData, prefix: str = "bench_raw") -> Table:
    """A table with chatledger_messages' columns, keys and indexes, under another name."""
    suffix = uuid.uuid4().hex[:8]
    conv_table.to_metadata(md)  # the foreign key's target (created by the ledger)
    m = msg_table.c
    cols = [
        Column(
            "conversation_pk",
            m.conversation_pk.type,
            ForeignKey(f"{conv_table.name}.pk", ondelete="CASCADE"),
            primary_key=True,
        ),
        Column("seq", m.seq.type, primary_key=True, autoincrement=False),
        *(
            Column(c.name, c.type, nullable=c.nullable)
            for c in msg_table.columns
            if c.name not in ("conversation_pk", "seq")
        ),
    ]
    return Table(
        f"{prefix}_{suffix}",
        md,
        *cols,
        Index(
            f"uq_{prefix}_idem_{suffix}",
            "conversation_pk",
            "idempotency_key",
            unique=True,
            sqlite_where=text("idempotency_key IS NOT NULL"),
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
        Index(f"ix_{prefix}_cum_{suffix}", "conversation_pk", "cum_tokens"),
        sqlite_with_rowid=False,
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )


def dumps(m: dict[str, Any]) -> str:
    return json.dumps(m, ensure_ascii=False, separators=(",", ":"))


def texts(m: dict[str, Any]) -> list[str]:
    """The strings a token count encodes: text content, tool call names and arguments (a
    role's tokens are a constant)."""
    out = []
    if isinstance(m.get("content"), str):
        out.append(m["content"])
    for c in m.get("tool_calls") or ():
        out += [c["function"]["name"], c["function"]["arguments"]]
    return out


def fastest_encode() -> Callable[[str], list[int]]:
    """tiktoken's ``encode_ordinary`` without its Python wrapper (as chatledger calls it)."""
    encoding = encoding_for_model(MODEL)
    core = getattr(encoding, "_core_bpe", None)
    fn: Callable[[str], list[int]] = getattr(core, "encode_ordinary", encoding.encode_ordinary)
    return fn


def raw_rows(pk: int, msgs: list[dict[str, Any]], counter: TokenCounter) -> list[dict[str, Any]]:
    """The rows chatledger stores for ``msgs``, with chatledger's own counts."""
    rows, cum, round_seq = [], 0, 0
    now = datetime.now(UTC)
    for seq, (m, n) in enumerate(zip(msgs, counter.messages(msgs), strict=True), 1):
        cum += n
        if m["role"] == "user":
            round_seq = seq
        rows.append(
            {
                "conversation_pk": pk,
                "seq": seq,
                "role": m["role"],
                "data": dumps(m),
                "tokens": n,
                "cum_tokens": cum,
                "round_seq": round_seq,
                "created_at": now,
                "status": None,
                "meta": None,
                "idempotency_key": None,
            }
        )
    return rows


def conversations_of(n: int) -> list[list[dict[str, Any]]]:
    """``n`` messages (about) as conversations of about CONV_SIZE: a system prompt, whole
    rounds (so every tool call has its result)."""
    out: list[list[dict[str, Any]]] = []
    conv: list[dict[str, Any]] = [{"role": "system", "content": workload.SYSTEM}]
    total = 1
    for r in workload.rounds(seed=n):
        conv += r
        total += len(r)
        if len(conv) >= CONV_SIZE:
            out.append(conv)
            conv = [{"role": "system", "content": workload.SYSTEM}]
            total += 1
        if total >= n:
            break
    if len(conv) > 1:
        out.append(conv)
    return out


class Bench:
    """One backend: a ledger, the floor's table, and the measurements."""

    def __init__(self, url: str, reps: int) -> None:
        self.url, self.reps = url, reps
        self.ledger = cl.Ledger(url)
        self.engine = self.ledger.engine
        self.holder = self.ledger.create(owner="bench-raw", model=MODEL)  # makes the schema
        self.md = MetaData()
        self.table = raw_table(self.md)
        self.md.create_all(self.engine, tables=[self.table])
        self.counter = TokenCounter(MODEL)
        self.encode = fastest_encode()

    def close(self) -> None:
        self.table.drop(self.engine)
        self.ledger.close()

    def _clear(self) -> None:
        with self.engine.begin() as c:
            c.execute(self.table.delete())

    def _insert(self, rows: list[dict[str, Any]], batch: int) -> None:
        stmt = insert(self.table)
        for i in range(0, len(rows), batch):
            with self.engine.begin() as c:
                c.execute(stmt, rows[i : i + batch])

    def _counted(self, msgs: list[dict[str, Any]], rows: list[dict[str, Any]], batch: int) -> None:
        enc = self.encode
        fresh = [
            {**r, "data": dumps(m), "tokens": sum(len(enc(t)) for t in texts(m)) + 3}
            for m, r in zip(msgs, rows, strict=True)
        ]
        self._insert(fresh, batch)

    def _extend(self, msgs: list[dict[str, Any]], batch: int) -> None:
        conv = self.ledger.create(owner="bench", model=MODEL)
        for i in range(0, len(msgs), batch):
            conv.extend(msgs[i : i + batch])
        if conv.info.last_seq != len(msgs):
            raise AssertionError("not every message was stored")

    def _alternate(self, fns: list[Callable[[], None]], before: Callable[[], None]) -> list[float]:
        times: list[list[float]] = [[] for _ in fns]
        for _ in range(self.reps):
            for i, fn in enumerate(fns):
                before()
                t = time.perf_counter()
                fn()
                times[i].append(time.perf_counter() - t)
        return [statistics.median(t) for t in times]

    def extend(self, n: int) -> list[tuple[str, int, list[float]]]:
        msgs = workload.history(n)
        rows = raw_rows(self.holder._h.pk, msgs, self.counter)
        out = []
        for label, batch in ((f"extend, batches of {BATCH}", BATCH), ("extend, one call", n)):
            medians = self._alternate(
                [
                    partial(self._extend, msgs, batch),
                    partial(self._insert, rows, batch),
                    partial(self._counted, msgs, rows, batch),
                ],
                self._clear,
            )
            out.append((label, len(msgs), medians))
        self._clear()
        return out

    def import_(self, n: int) -> tuple[str, int, list[float]]:
        convs = conversations_of(n)
        with tempfile.TemporaryDirectory() as d, cl.Ledger(f"sqlite:///{d}/src.db") as src:
            for i, c in enumerate(convs):
                src.conversation(f"c{i:05d}", owner="src", model=MODEL).extend(c)
            buf = io.StringIO()
            export_jsonl(src, buf)
        backup = buf.getvalue()
        per_conv = [raw_rows(self.holder._h.pk, c, self.counter) for c in convs]
        lines = backup.splitlines()[1:]  # after the header
        enc = self.encode

        def floor() -> None:
            for rows in per_conv:
                self._insert_conversation(rows)

        def floor_counted() -> None:
            for line in lines:
                msgs = [m["message"] for m in json.loads(line)["messages"]]
                rows, cum, now = [], 0, datetime.now(UTC)
                for seq, m in enumerate(msgs, 1):
                    n = sum(len(enc(t)) for t in texts(m)) + 3
                    cum += n
                    rows.append(
                        {
                            "seq": seq,
                            "role": m["role"],
                            "data": dumps(m),
                            "tokens": n,
                            "cum_tokens": cum,
                            "round_seq": seq,
                            "created_at": now,
                            "status": None,
                            "meta": None,
                            "idempotency_key": None,
                        }
                    )
                self._insert_conversation(rows)

        def ours() -> None:
            report = import_jsonl(self.ledger, io.StringIO(backup), owner=uuid.uuid4().hex)
            if report.imported != len(convs) or report.refused:
                raise AssertionError(f"import refused lines: {report.refused[:3]}")

        medians = self._alternate([ours, floor, floor_counted], self._clear)
        total = sum(len(c) for c in convs)
        return (f"import_jsonl, {len(convs)} conversations", total, medians)

    def _insert_conversation(self, rows: list[dict[str, Any]]) -> None:
        """The floor of one imported conversation: its row, then its messages, one commit."""
        now = datetime.now(UTC)
        with self.engine.begin() as c:
            key = c.execute(
                insert(conv_table),
                {
                    "id": uuid.uuid4().hex,
                    "owner": "bench-floor",
                    "model": MODEL,
                    "encoding": "o200k_base",
                    "token_profile": "floor",
                    "created_at": now,
                    "updated_at": now,
                    "message_count": len(rows),
                    "token_total": rows[-1]["cum_tokens"],
                    "last_seq": len(rows),
                },
            ).inserted_primary_key
            assert key is not None
            for r in rows:
                r["conversation_pk"] = key[0]
            c.execute(insert(self.table), rows)


def breakdown(n: int, reps: int) -> list[str]:
    """Where one ``extend`` of ``n`` messages spends its CPU outside the database: each step
    of ``LedgerConfig.prepare`` and ``plan_append`` alone (process time, medians)."""
    from chatledger.append_plan import plan_append
    from chatledger.config import LedgerConfig
    from chatledger.errors import Problem
    from chatledger.messages import _normalize
    from chatledger.rows import State

    msgs = workload.history(n)
    counter = TokenCounter(MODEL)
    config = LedgerConfig(default_model=MODEL, max_message_bytes=8 * 1024 * 1024)
    batch, _ = config.prepare(msgs, counter)
    problems: list[Problem] = []
    normal = [m for i, m0 in enumerate(msgs) if (m := _normalize(m0, i, problems)) is not None]
    enc = fastest_encode()
    steps: list[tuple[str, Callable[[], object]]] = [
        ("LedgerConfig.prepare, all of it", lambda: config.prepare(msgs, counter)),
        ("  validation (messages._normalize)", lambda: [_normalize(m, 0, []) for m in msgs]),
        ("  serialisation (json.dumps)", lambda: [dumps(m) for m in normal]),
        ("  counting (TokenCounter.messages)", lambda: counter.messages(normal)),
        (
            "tiktoken encode_ordinary of the texts (the floor's)",
            lambda: [enc(t) for m in msgs for t in texts(m)],
        ),
        (
            "plan_append (seqs, totals, rounds, pairing)",
            lambda: plan_append(1, State(0, 0, 0, 0, 0, None), batch, None),
        ),
    ]
    out = []
    for label, fn in steps:
        times = []
        for _ in range(reps):
            t = time.process_time()
            fn()
            times.append(time.process_time() - t)
        us = statistics.median(times) / n * 1e6
        out.append(f"| {label} | {us:.1f} µs |")
        print(out[-1], flush=True)
    return out


def cpu(reps: int) -> None:
    """Process CPU (not wall time: steady on a loaded machine) of ``import_jsonl`` of 10,000
    messages in 99 conversations and of ``extend`` of 10,000 in batches of 1,000, SQLite."""
    convs = conversations_of(10_000)
    msgs = workload.history(10_000)
    with tempfile.TemporaryDirectory() as d:
        with cl.Ledger(f"sqlite:///{d}/src.db") as src:
            for i, c in enumerate(convs):
                src.conversation(f"c{i:05d}", owner="src", model=MODEL).extend(c)
            buf = io.StringIO()
            export_jsonl(src, buf)
        with cl.Ledger(f"sqlite:///{d}/dst.db") as ledger:
            import_jsonl(ledger, io.StringIO(buf.getvalue()), owner="warm-up")
            imports, extends = [], []
            for _ in range(reps):
                t = time.process_time()
                import_jsonl(ledger, io.StringIO(buf.getvalue()), owner=uuid.uuid4().hex)
                imports.append(time.process_time() - t)
                conv = ledger.create(model=MODEL)
                t = time.process_time()
                for i in range(0, len(msgs), BATCH):
                    conv.extend(msgs[i : i + BATCH])
                extends.append(time.process_time() - t)
    print(
        f"{cl.__file__}: import_jsonl {statistics.median(imports) * 1000:.0f} ms CPU, "
        f"extend (batches) {statistics.median(extends) * 1000:.0f} ms CPU"
    )


def rate(n: int, s: float) -> str:
    return f"{n / s:,.0f}"


def bench(url: str, backend: str, sizes: list[int], reps: int) -> list[str]:
    b = Bench(url, reps)
    lines = []
    try:
        results = []
        for n in sizes:
            b.reps = reps if n <= 10_000 else 1  # a 100k run is long enough to be steady
            results += b.extend(n)
            results.append(b.import_(n))
        for label, n, (ours, raw, counted) in results:
            c_ratio = f"{counted / ours:.2f}"
            lines.append(
                f"| {backend} | {n:,} | {label} | {ours * 1000:,.0f} ms | {rate(n, ours)} | "
                f"{rate(n, raw)} | {raw / ours:.2f} | {rate(n, counted)} | {c_ratio} |"
            )
            print(lines[-1], flush=True)
    finally:
        b.close()
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="N = 10k only, fewer repetitions")
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--breakdown", action="store_true", help="CPU per message, step by step")
    ap.add_argument("--cpu", action="store_true", help="process CPU of import and extend")
    args = ap.parse_args()
    if args.cpu:
        cpu(args.reps or 5)
        return
    if args.breakdown:
        print("| step (10,000 workload messages) | CPU per message |\n| --- | ---: |")
        breakdown(10_000, args.reps or 5)
        return
    sizes = [10_000] if args.quick else [10_000, 100_000]
    reps = args.reps or 3
    head = [
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
        f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; medians of {reps} (100k: one run)",
        "",
        "| backend | messages | operation | chatledger | msgs/s | raw msgs/s | ratio | "
        "raw+count msgs/s | ratio |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    print("\n".join(head), flush=True)
    rows: list[str] = []
    with tempfile.TemporaryDirectory() as d:
        rows += bench(f"sqlite:///{Path(d) / 'bulk.db'}", "sqlite", sizes, reps)
    if not args.no_postgres:
        import peers

        with peers.pg_database(PG) as url:
            rows += bench(url, "postgresql", sizes, reps)
    print(f"\nload after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
