"""Many conversations on PostgreSQL (issue 16, item 4): listing, opening, storage per message,
and retention in bounded batches.

    .venv-bench/bin/python benchmarks/bench_scale.py          # 200k conversations, 1.025M messages
    .venv-bench/bin/python benchmarks/bench_scale.py --quick  # 20k conversations, 102,500 messages

A scratch database (``peers.pg_database``, dropped at the end) is loaded with ``COPY`` straight
into chatledger's tables: owners of 100 conversations of five messages (a system prompt and two
rounds), every fifth conversation idle for 400 days, and one large owner (``--big``
conversations of ten messages) to erase; every message is 1-2 KB of compact JSON, every
conversation has one usage row. Seqs, token counts (chatledger's own counter), running totals
and round markers are computed as chatledger computes them, and checked: the same messages
appended through the API must store the same rows. Then, with chatledger's own calls:

- ``ledger.conversations(owner=...)`` (newest first, the default page of 100): at most 5 ms;
- ``ledger.get(id, owner=...)`` then ``conv.window(cl.TokenBudget(8000))``: at most 3 ms;
- bytes per stored message (``pg_total_relation_size`` of the messages table: heap, TOAST and
  indexes, over the message count): at most 1.6x the raw JSON;
- ``delete_owner`` of the large owner and ``delete_idle`` of every idle conversation: each
  transaction timed (SQLAlchemy's ``begin`` to ``commit`` events), and the time its
  conversation locks were held (from the locking read to the commit): at most 100 ms.

Times are medians (and 95th percentiles) of single calls over random owners and conversations,
on a database that has been ``VACUUM ANALYZE``d, as autovacuum would leave it.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import random
import statistics
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import chatledger as cl  # noqa: E402
from chatledger.tokens import TokenCounter  # noqa: E402
from peers import pg_database  # noqa: E402

MODEL = "gpt-4o"
BUDGET = 8000
PER_OWNER = 100  # conversations of a typical owner: one full default page
PER_CONVERSATION = 5  # system, user, assistant, user, assistant
BIG_PER_CONVERSATION = 10
IDLE_EVERY = 5  # every fifth typical conversation has been idle for IDLE_DAYS
IDLE_DAYS = 400
LOCK_STATEMENT = (
    "UPDATE chatledger_conversations SET updated_at=chatledger_conversations.updated_at"
)
TARGETS = {"list": 5.0, "open": 3.0, "bytes": 1.6, "lock": 100.0}
PG_URL = os.environ.get("CHATLEDGER_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")

_TEXT = (
    "the ledger stores each message once and the window reads only the newest rows of a "
    "conversation so that a request costs the same at ten messages or ten thousand while "
    "owners list their conversations newest first and retention deletes whole conversations "
    "in short transactions tool call result summary budget token model reply question answer "
    "database index page lock commit batch owner idle erase tenant prompt cache"
)
WORDS = _TEXT.split()


# --- the data -----------------------------------------------------------------------------------


@dataclass
class Pool:
    """Message bodies to draw from: each a dict, its compact JSON and its token count."""

    system: list[tuple[str, int]] = field(default_factory=list)
    user: list[tuple[str, int]] = field(default_factory=list)
    assistant: list[tuple[str, int]] = field(default_factory=list)

    def pick(self, role: str, rng: random.Random) -> tuple[str, int]:
        items: list[tuple[str, int]] = getattr(self, role)
        return items[rng.randrange(len(items))]


def dumps(message: dict[str, Any]) -> str:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))


def make_pool(rng: random.Random, counter: TokenCounter, size: int = 400) -> Pool:
    """Messages whose compact JSON is 1,000-2,000 bytes, counted by chatledger's counter."""
    pool = Pool()
    for role, n in (("system", 16), ("user", size), ("assistant", size)):
        for _ in range(n):
            target = rng.randint(1000, 2000)
            words: list[str] = []
            msg: dict[str, Any] = {"role": role, "content": ""}
            while len(dumps(msg).encode()) < target - 12:
                words.append(rng.choice(WORDS))
                msg["content"] = " ".join(words)
            getattr(pool, role).append((dumps(msg), counter.message(msg)))
    return pool


@dataclass(frozen=True)
class Layout:
    owners: int  # typical owners of PER_OWNER conversations
    big: int  # conversations of the owner to erase

    @property
    def conversations(self) -> int:
        return self.owners * PER_OWNER + self.big

    @property
    def messages(self) -> int:
        return self.owners * PER_OWNER * PER_CONVERSATION + self.big * BIG_PER_CONVERSATION

    @property
    def idle(self) -> int:
        return sum(1 for n in range(self.owners * PER_OWNER) if n % IDLE_EVERY == 0)


BIG_OWNER = "owner-big"


def owner_of(n: int, layout: Layout) -> str:
    typical = layout.owners * PER_OWNER
    return f"owner-{n // PER_OWNER:05d}" if n < typical else BIG_OWNER


def conversation_id(n: int) -> str:
    return f"conv-{n:07d}"


def history(pool: Pool, rng: random.Random, length: int) -> list[tuple[str, str, int]]:
    """(role, JSON, tokens) of one conversation: a system prompt, then user/assistant rounds."""
    out = [("system", *pool.pick("system", rng))]
    while len(out) < length:
        role = "user" if len(out) % 2 == 1 else "assistant"
        out.append((role, *pool.pick(role, rng)))
    return out


def _ts(moment: datetime) -> str:
    return moment.isoformat(sep=" ")


def _copy_text(value: str) -> str:
    """A value in COPY's text format (compact JSON has no raw tabs or newlines)."""
    return value.replace("\\", "\\\\")


@dataclass
class Rows:
    conversations: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    usage: list[str] = field(default_factory=list)


def rows_for(
    n: int, layout: Layout, pool: Pool, rng: random.Random, now: datetime, ref: Reference
) -> Rows:
    """The rows of conversation ``n`` (key ``n + 1``) as chatledger would have written them."""
    pk = n + 1
    big = owner_of(n, layout) == BIG_OWNER
    msgs = history(pool, rng, BIG_PER_CONVERSATION if big else PER_CONVERSATION)
    idle = not big and n % IDLE_EVERY == 0
    updated = now - timedelta(days=IDLE_DAYS if idle else 0, seconds=rng.randrange(60 * 86400))
    created = updated - timedelta(minutes=len(msgs))
    out = Rows()
    cum = round_seq = 0
    for seq, (role, data, tokens) in enumerate(msgs, start=1):
        cum += tokens
        if role == "user":
            round_seq = seq
        at = _ts(created + timedelta(minutes=seq - 1))
        out.messages.append(
            f"{pk}\t{seq}\t{role}\t{_copy_text(data)}\t{tokens}\t{cum}\t{round_seq}\t{at}\n"
        )
    out.conversations.append(
        "\t".join(
            [
                str(pk),
                conversation_id(n),
                owner_of(n, layout),
                MODEL,
                ref.encoding,
                ref.profile,
                _ts(created),
                _ts(updated),
                str(len(msgs)),
                str(cum),
                str(len(msgs)),
                str(round_seq),
                "1",
                "0",
            ]
        )
        + "\n"
    )
    usage = [pk, pk, owner_of(n, layout), len(msgs), MODEL, cum, 300, 0, 0, _ts(updated)]
    out.usage.append("\t".join(map(str, usage)) + "\n")
    return out


CONV_COLUMNS = (
    "pk, id, owner, model, encoding, token_profile, created_at, updated_at, message_count, "
    "token_total, last_seq, last_round_seq, prefix_seq, revision"
)
MSG_COLUMNS = "conversation_pk, seq, role, data, tokens, cum_tokens, round_seq, created_at"
USAGE_COLUMNS = (
    "pk, conversation_pk, owner, message_seq, model, prompt_tokens, completion_tokens, "
    "cached_tokens, reasoning_tokens, created_at"
)


@dataclass(frozen=True)
class Reference:
    """What chatledger itself stores for a conversation: its counting profile and encoding."""

    encoding: str
    profile: str


def load(url: str, layout: Layout, pool: Pool, ref: Reference, seed: int) -> float:
    """COPY every row in; returns the seconds it took (VACUUM ANALYZE included)."""
    import psycopg

    started = time.perf_counter()
    rng = random.Random(seed)
    now = datetime.now(UTC)
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    chunk = 5000
    with psycopg.connect(dsn) as conn:
        conn.execute("SET synchronous_commit = off")
        with conn.cursor() as cur:
            for start in range(0, layout.conversations, chunk):
                batch = Rows()
                for n in range(start, min(start + chunk, layout.conversations)):
                    one = rows_for(n, layout, pool, rng, now, ref)
                    batch.conversations += one.conversations
                    batch.messages += one.messages
                    batch.usage += one.usage
                for table, columns, lines in (
                    ("chatledger_conversations", CONV_COLUMNS, batch.conversations),
                    ("chatledger_messages", MSG_COLUMNS, batch.messages),
                    ("chatledger_completions", USAGE_COLUMNS, batch.usage),
                ):
                    with cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                        copy.write("".join(lines))
            for table in ("chatledger_conversations", "chatledger_completions"):
                cur.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'pk'), "
                    f"(SELECT max(pk) FROM {table}))"
                )
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE")
    return time.perf_counter() - started


def check_against_api(ledger: cl.Ledger, engine: Engine, layout: Layout, pool: Pool) -> None:
    """Conversation 0 as loaded must equal the same messages appended through the API."""
    with engine.connect() as c:
        loaded = c.execute(
            text(
                "SELECT role, data, tokens, cum_tokens, round_seq FROM chatledger_messages "
                "WHERE conversation_pk = 1 ORDER BY seq"
            )
        ).all()
    conv = ledger.conversation("reference", owner="reference", model=MODEL)
    conv.extend([json.loads(r.data) for r in loaded])
    cols = "message_count, token_total, last_seq, last_round_seq, prefix_seq, encoding, "
    cols += "token_profile, tool_state, revision"
    with engine.connect() as c:
        stored = c.execute(
            text(
                "SELECT m.role, m.data, m.tokens, m.cum_tokens, m.round_seq FROM "
                "chatledger_messages m JOIN chatledger_conversations v ON v.pk = "
                "m.conversation_pk WHERE v.id = 'reference' ORDER BY m.seq"
            )
        ).all()
        rows = c.execute(
            text(f"SELECT id, {cols} FROM chatledger_conversations WHERE pk = 1")
        ).all()
        ref_row = c.execute(
            text(f"SELECT id, {cols} FROM chatledger_conversations WHERE id = 'reference'")
        ).one()
    if [tuple(r) for r in loaded] != [tuple(r) for r in stored]:
        raise SystemExit("the loaded messages differ from what chatledger stores")
    if tuple(rows[0])[1:] != tuple(ref_row)[1:]:
        raise SystemExit(f"the loaded conversation row differs: {rows[0]} != {ref_row}")
    ledger.delete("reference", owner="reference")


# --- the measurements ---------------------------------------------------------------------------


def timed_ms(fn: Any) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000


def spread(samples: list[float]) -> tuple[float, float, float]:
    """Median, 95th percentile and maximum."""
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return statistics.median(ordered), p95, ordered[-1]


@dataclass
class Transactions:
    """Each committed transaction's duration, and how long its conversation locks were held
    (from the locking read, ``FOR UPDATE``, to the commit), in milliseconds; and where the
    longest one spent its time, statement by statement."""

    engine: Engine
    started: float | None = None
    locked: float | None = None
    durations: list[float] = field(default_factory=list)
    locks: list[float] = field(default_factory=list)
    steps: list[tuple[str, float]] = field(default_factory=list)
    worst: tuple[int, list[tuple[str, float]]] = (0, [])
    collections: list[float] = field(default_factory=list)  # the client's garbage collections
    _at: float = 0.0
    _gc_at: float = 0.0

    def __enter__(self) -> Transactions:
        for name in ("begin", "before_cursor_execute", "after_cursor_execute", "commit"):
            event.listen(self.engine, name, getattr(self, f"_{name}"))
        gc.callbacks.append(self._gc)
        return self

    def __exit__(self, *exc: object) -> None:
        for name in ("begin", "before_cursor_execute", "after_cursor_execute", "commit"):
            event.remove(self.engine, name, getattr(self, f"_{name}"))
        gc.callbacks.remove(self._gc)

    def _gc(self, phase: str, info: dict[str, int]) -> None:
        """A pause of this process holds the transaction's locks as long as the database does."""
        if phase == "start":
            self._gc_at = time.perf_counter()
            return
        took = (time.perf_counter() - self._gc_at) * 1000
        self.collections.append(took)
        if self.started is not None:
            self.steps.append((f"(garbage collection, generation {info['generation']})", took))

    def _begin(self, conn: Any) -> None:
        self.started, self.locked, self.steps = time.perf_counter(), None, []

    def _before_cursor_execute(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self._at = time.perf_counter()
        if self.locked is None and statement.rstrip().endswith("FOR UPDATE"):
            self.locked = self._at

    def _after_cursor_execute(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        head = " ".join(statement.split()[:3]).replace("chatledger_", "")
        self.steps.append((head, (time.perf_counter() - self._at) * 1000))

    def _commit(self, conn: Any) -> None:
        now = time.perf_counter()
        if self.started is not None:
            self.durations.append((now - self.started) * 1000)
            self.steps.append(("(commit, until the next statement)", 0.0))
            if self.durations[-1] == max(self.durations):
                self.worst = (len(self.durations), self.steps)
        if self.locked is not None:
            self.locks.append((now - self.locked) * 1000)
        self.started = self.locked = None

    def breakdown(self) -> str:
        n, steps = self.worst
        parts = ", ".join(f"{head} {t:.1f} ms" for head, t in steps if t >= 0.05)
        return f"transaction {n} of {len(self.durations)}: {parts}"


@dataclass
class Figure:
    what: str
    value: str
    target: str = ""
    verdict: str = ""


def ms(value: float) -> str:
    return f"{value:.2f} ms"


def verdict(value: float, limit: float) -> str:
    return "met" if value <= limit else "MISSED"


def explain(engine: Engine, sql: str, params: dict[str, Any]) -> str:
    with engine.connect() as c:
        plan = c.execute(text(f"EXPLAIN (ANALYZE, BUFFERS) {sql}"), params).scalars()
        return "\n".join(str(line) for line in plan)


def sample_owners(layout: Layout, rng: random.Random, n: int) -> list[str]:
    return [f"owner-{rng.randrange(layout.owners):05d}" for _ in range(n)]


def measure(
    url: str, layout: Layout, samples: int, seed: int, waits: bool, freeze: bool
) -> tuple[list[Figure], list[str]]:
    rng = random.Random(seed + 1)
    figures: list[Figure] = []
    notes: list[str] = []
    load_before = os.getloadavg()[0]
    if freeze:  # what a server does once started: its long-lived objects leave the collector
        gc.collect()
        gc.freeze()
    with cl.Ledger(url) as ledger:
        engine = ledger.engine
        for owner in sample_owners(layout, rng, 20):  # warm the pool and the statement cache
            ledger.conversations(owner=owner)

        listing = []
        for owner in sample_owners(layout, rng, samples):
            listing.append(timed_ms(lambda: ledger.conversations(owner=owner)))  # noqa: B023
        med, p95, _ = spread(listing)
        page = ledger.conversations(owner=f"owner-{0:05d}")
        figures.append(
            Figure(
                f"list an owner's conversations ({PER_OWNER} of them, page of {len(page)})",
                f"{ms(med)} (p95 {ms(p95)})",
                f"<= {TARGETS['list']:.0f} ms",
                verdict(med, TARGETS["list"]),
            )
        )
        big = [timed_ms(lambda: ledger.conversations(owner=BIG_OWNER)) for _ in range(30)]
        med, p95, _ = spread(big)
        figures.append(
            Figure(
                f"list the large owner's conversations ({layout.big} of them, page of 100)",
                f"{ms(med)} (p95 {ms(p95)})",
                f"<= {TARGETS['list']:.0f} ms",
                verdict(med, TARGETS["list"]),
            )
        )
        plan = explain(
            engine,
            "SELECT pk FROM chatledger_conversations WHERE owner = :o "
            "ORDER BY updated_at DESC, pk DESC LIMIT 100",
            {"o": BIG_OWNER},
        )
        notes.append(f"EXPLAIN ANALYZE of the large owner's listing:\n\n```\n{plan}\n```")

        typical = layout.owners * PER_OWNER
        picks = [rng.randrange(typical) for _ in range(samples)]

        def open_window(n: int) -> int:
            conv = ledger.get(conversation_id(n), owner=owner_of(n, layout))
            return len(conv.window(cl.TokenBudget(BUDGET)))

        for n in picks[:20]:
            open_window(n)
        opening = [timed_ms(lambda: open_window(n)) for n in picks]  # noqa: B023
        med, p95, _ = spread(opening)
        figures.append(
            Figure(
                "get(id, owner) + window(TokenBudget(8000)), a random conversation",
                f"{ms(med)} (p95 {ms(p95)})",
                f"<= {TARGETS['open']:.0f} ms",
                verdict(med, TARGETS["open"]),
            )
        )
        got = ledger.get(conversation_id(picks[0]), owner=owner_of(picks[0], layout))
        only_get = []
        for n in picks:
            cid, owner = conversation_id(n), owner_of(n, layout)
            only_get.append(timed_ms(lambda: ledger.get(cid, owner=owner)))  # noqa: B023
        only_window = [timed_ms(lambda: got.window(cl.TokenBudget(BUDGET))) for _ in picks]
        figures.append(Figure("  of which get(id, owner)", ms(spread(only_get)[0])))
        figures.append(Figure("  of which window(TokenBudget(8000))", ms(spread(only_window)[0])))

        with engine.connect() as c:
            size = c.execute(
                text(
                    "SELECT pg_total_relation_size('chatledger_messages') AS total, "
                    "pg_relation_size('chatledger_messages') AS heap, "
                    "pg_table_size('chatledger_messages') - pg_relation_size("
                    "'chatledger_messages') AS toast_etc, "
                    "pg_indexes_size('chatledger_messages') AS indexes, "
                    "(SELECT count(*) FROM chatledger_messages) AS n, "
                    "(SELECT avg(octet_length(data)) FROM chatledger_messages) AS raw"
                )
            ).one()
        per = size.total / size.n
        ratio = per / float(size.raw)
        figures.append(
            Figure(
                "bytes per stored message (table + TOAST + indexes) / raw JSON",
                f"{per:.0f} B / {float(size.raw):.0f} B = {ratio:.2f}x",
                f"<= {TARGETS['bytes']}x",
                verdict(ratio, TARGETS["bytes"]),
            )
        )
        figures.append(
            Figure(
                "  of which heap / TOAST, maps / indexes, per message",
                f"{size.heap / size.n:.0f} B / {size.toast_etc / size.n:.0f} B / "
                f"{size.indexes / size.n:.0f} B",
            )
        )

        with contextlib.ExitStack() as stack:
            sampler = stack.enter_context(Waits(url)) if waits else None
            with Transactions(engine) as erase:
                t = time.perf_counter()
                erased = ledger.delete_owner(BIG_OWNER)
                erase_s = time.perf_counter() - t
            if erased != layout.big:
                raise SystemExit(f"delete_owner deleted {erased}, expected {layout.big}")
            figures += retention_figures(
                f"delete_owner: {erased} conversations, {erased * BIG_PER_CONVERSATION} messages, "
                f"{erased} usage rows",
                erase,
                erase_s,
            )
            with Transactions(engine) as sweep:
                t = time.perf_counter()
                swept = ledger.delete_idle(timedelta(days=IDLE_DAYS - 30))
                sweep_s = time.perf_counter() - t
        if sampler is not None:
            notes.append(sampler.table())
        if swept != layout.idle:
            raise SystemExit(f"delete_idle deleted {swept}, expected {layout.idle}")
        figures += retention_figures(
            f"delete_idle: {swept} conversations, {swept * PER_CONVERSATION} messages "
            "(usage rows kept, unlinked)",
            sweep,
            sweep_s,
        )
    notes.insert(
        0,
        f"Load average (1 min) of the machine before / after the measurements: {load_before:.1f}"
        f" / {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.",
    )
    pauses = erase.collections + sweep.collections
    notes.append(
        f"Garbage collections of this process during the retention calls: {len(pauses)}, the "
        f"longest {max(pauses, default=0):.1f} ms ("
        + ("after gc.freeze(), as a server calls it once started" if freeze else "no gc.freeze()")
        + "): a pause of the client holds the batch's locks as long as the database would."
    )
    notes.append(
        f"The longest delete_owner transaction, statement by statement: {erase.breakdown()}."
    )
    notes.append(
        f"The longest delete_idle transaction, statement by statement: {sweep.breakdown()}."
    )
    return figures, notes


def retention_figures(what: str, tx: Transactions, seconds: float) -> list[Figure]:
    ordered = sorted(tx.locks)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    over = sum(1 for t in ordered if t > TARGETS["lock"])
    return [
        Figure(what, f"{seconds:.2f} s in {len(tx.durations)} transactions"),
        Figure(
            "  transaction time: median / p95 / longest",
            f"{ms(statistics.median(tx.durations))} / {ms(spread(tx.durations)[1])} / "
            f"{ms(max(tx.durations))}",
        ),
        Figure(
            "  time conversation locks were held: median / p99 / longest",
            f"{ms(statistics.median(ordered))} / {ms(p99)} / {ms(ordered[-1])}",
            f"<= {TARGETS['lock']:.0f} ms",
            verdict(ordered[-1], TARGETS["lock"])
            + ("" if not over else f" ({over} of {len(ordered)} over)"),
        ),
    ]


class Waits:
    """What the database sessions of this benchmark wait on, sampled from ``pg_stat_activity``
    every few milliseconds on a connection of its own (``--waits``): lock waits would show as
    ``Lock``; I/O as ``IO`` (a WAL fsync at commit, writing out a dirty buffer to make room)."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(
            url.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
        )
        self.seen: Counter[tuple[str, str, str]] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> Waits:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.engine.dispose()

    def _sample(self) -> None:
        query = text(
            "SELECT wait_event_type, wait_event, array_to_string((regexp_split_to_array("
            "query, '\\s+'))[1:3], ' ') FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend' AND state = 'active'"
        )
        with self.engine.connect() as c:
            while not self._stop.is_set():
                for kind, name, statement in c.execute(query):
                    self.seen[
                        (kind or "CPU", name or "-", statement.replace("chatledger_", ""))
                    ] += 1
                time.sleep(0.005)

    def table(self) -> str:
        total = sum(self.seen.values()) or 1
        rows = [
            f"| {kind} | {name} | {statement} | {n / total:.0%} |"
            for (kind, name, statement), n in self.seen.most_common(12)
        ]
        return "\n".join(
            [
                "Where the retention sessions spent their active time (`--waits`: "
                f"{total} samples of pg_stat_activity):",
                "",
                "| wait type | wait | statement | share |",
                "| --- | --- | --- | ---: |",
                *rows,
            ]
        )


# --- the report ---------------------------------------------------------------------------------


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def server_version(url: str) -> str:
    engine = create_engine(url)
    try:
        with engine.connect() as c:
            return str(c.execute(text("SHOW server_version")).scalar())
    finally:
        engine.dispose()


def report(
    command: str,
    layout: Layout,
    load_s: float,
    figures: list[Figure],
    notes: list[str],
    version: str,
) -> str:
    import sqlalchemy

    lines = [
        "## Many conversations (`benchmarks/bench_scale.py`)",
        "",
        f"Made by `{command}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        f"Machine: {machine()}. PostgreSQL {version}, Python {platform.python_version()}, "
        f"chatledger {cl.__version__}, sqlalchemy {sqlalchemy.__version__}.",
        f"Data: {layout.conversations:,} conversations, {layout.messages:,} messages "
        f"(owners of {PER_OWNER} conversations of {PER_CONVERSATION} messages, every "
        f"{IDLE_EVERY}th idle for {IDLE_DAYS} days: {layout.idle:,}; one owner of "
        f"{layout.big:,} conversations of {BIG_PER_CONVERSATION} messages), messages of "
        f"1-2 KB of JSON, one usage row per conversation; loaded with COPY in {load_s:.0f} s "
        "(VACUUM ANALYZE included). Times are single calls, medians over random owners and "
        "conversations.",
        "",
        "| measure | value | target | |",
        "| --- | ---: | --- | --- |",
    ]
    lines += [f"| {f.what} | {f.value} | {f.target} | {f.verdict} |" for f in figures]
    lines.append("")
    for note in notes:
        lines += [note, ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="20,000 conversations, 102,500 messages")
    ap.add_argument("--samples", type=int, default=300, help="calls timed per figure")
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--waits", action="store_true", help="sample pg_stat_activity in retention")
    ap.add_argument(
        "--no-freeze", action="store_true", help="leave the process's objects to the collector"
    )
    ap.add_argument("--out", type=Path, default=HERE / "results" / "scale.md")
    ap.add_argument("--pg", default=PG_URL, help="a server database to make the scratch one from")
    args = ap.parse_args(argv)
    layout = Layout(owners=195, big=500) if args.quick else Layout(owners=1950, big=5000)
    command = ".venv-bench/bin/python benchmarks/bench_scale.py" + (
        " --quick" if args.quick else ""
    )
    rng = random.Random(args.seed)
    started = time.perf_counter()
    pool = make_pool(rng, TokenCounter(MODEL))
    with pg_database(args.pg) as url:
        with cl.Ledger(url) as ledger:
            probe = ledger.conversation("probe", model=MODEL)
            with ledger.engine.connect() as c:
                enc, profile = c.execute(
                    text(
                        "SELECT encoding, token_profile FROM chatledger_conversations "
                        "WHERE id = 'probe'"
                    )
                ).one()
            probe.delete()
        ref = Reference(encoding=str(enc), profile=str(profile))
        print(f"loading {layout.conversations:,} conversations, {layout.messages:,} messages")
        load_s = load(url, layout, pool, ref, args.seed)
        print(f"loaded in {load_s:.0f} s")
        with cl.Ledger(url) as ledger:
            check_against_api(ledger, ledger.engine, layout, pool)
        figures, notes = measure(
            url, layout, args.samples, args.seed, args.waits, not args.no_freeze
        )
        version = server_version(url.replace("postgresql://", "postgresql+psycopg://"))
    text_out = report(command, layout, load_s, figures, notes, version)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text_out + "\n")
    print(text_out)
    print(f"total {time.perf_counter() - started:.0f} s; written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
