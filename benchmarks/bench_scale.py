"""Many conversations on PostgreSQL (issue 16, item 4): listing, opening, storage per message,
and retention in bounded batches.

    .venv-bench/bin/python benchmarks/bench_scale.py          # 200k conversations, 1.025M messages
    .venv-bench/bin/python benchmarks/bench_scale.py --quick  # 20k conversations, 102,500 messages

A scratch database (``peers.pg_database``, dropped at the end) is loaded with ``COPY`` straight
into chatledger's tables: owners of 100 conversations of five messages (a system prompt and two
rounds), every fifth conversation idle for 400 days, and one large owner (5,000 conversations
of ten messages) to erase; every message is 1-2 KB of compact JSON, every conversation has one
usage row. Seqs, token counts (chatledger's own counter), running totals and round markers are
computed as chatledger computes them, and checked: the same messages appended through the API
must store the same rows. Then, with chatledger's own calls:

- ``ledger.conversations(owner=...)`` (newest first, the default page of 100): at most 5 ms;
- ``ledger.get(id, owner=...)`` then ``conv.window(cl.TokenBudget(8000))``: at most 3 ms;
- bytes per stored message (``pg_total_relation_size`` of the messages table: heap, TOAST and
  indexes, over the message count): at most 1.6x the raw JSON;
- ``delete_owner`` of the large owner and ``delete_idle`` of every idle conversation: each
  transaction timed (SQLAlchemy's ``begin`` to ``commit`` events), and the time its
  conversation locks were held (from the locking read to the commit): at most 100 ms.

Times are medians (and 95th percentiles) of single calls over random owners and conversations,
on a database that has been ``VACUUM ANALYZE``d, as autovacuum would leave it, in a process
whose objects are frozen out of the garbage collector first (``gc.freeze()``, as a server does
once started; ``--no-freeze`` leaves them, and a full collection then lands inside a batch).
``--waits`` samples ``pg_stat_activity`` during retention: what the sessions wait on.
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

import sqlalchemy
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
BIG_OWNER = "owner-big"
IDLE_EVERY = 5  # every fifth typical conversation has been idle for IDLE_DAYS
IDLE_DAYS = 400
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


def dumps(message: dict[str, Any]) -> str:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))


Pool = dict[str, list[tuple[str, int]]]  # role -> (compact JSON, tokens) to draw from


def make_pool(rng: random.Random, counter: TokenCounter, size: int = 400) -> Pool:
    """Messages whose compact JSON is 1,000-2,000 bytes, counted by chatledger's counter."""
    pool: Pool = {}
    for role, n in (("system", 16), ("user", size), ("assistant", size)):
        pool[role] = []
        for _ in range(n):
            target, words = rng.randint(1000, 2000), list[str]()
            msg: dict[str, Any] = {"role": role, "content": ""}
            while len(dumps(msg).encode()) < target - 12:
                words.append(rng.choice(WORDS))
                msg["content"] = " ".join(words)
            pool[role].append((dumps(msg), counter.message(msg)))
    return pool


@dataclass(frozen=True)
class Layout:
    owners: int  # typical owners of PER_OWNER conversations
    big: int  # conversations of the owner to erase

    @property
    def typical(self) -> int:
        return self.owners * PER_OWNER

    @property
    def conversations(self) -> int:
        return self.typical + self.big

    @property
    def messages(self) -> int:
        return self.typical * PER_CONVERSATION + self.big * BIG_PER_CONVERSATION

    @property
    def idle(self) -> int:
        return len(range(0, self.typical, IDLE_EVERY))

    def owner_of(self, n: int) -> str:
        return f"owner-{n // PER_OWNER:05d}" if n < self.typical else BIG_OWNER


def conversation_id(n: int) -> str:
    return f"conv-{n:07d}"


@dataclass(frozen=True)
class Reference:
    """What chatledger itself stores for a conversation: its encoding and counting profile."""

    encoding: str
    profile: str


@dataclass
class Rows:
    """Lines of COPY's text format, per table (compact JSON has no raw tabs or newlines; its
    backslashes are doubled)."""

    conversations: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    usage: list[str] = field(default_factory=list)

    def add(self, n: int, layout: Layout, pool: Pool, rng: random.Random, ref: Reference) -> None:
        """Conversation ``n`` (key ``n + 1``) as chatledger would have written it."""
        pk, owner, now = n + 1, layout.owner_of(n), datetime.now(UTC)
        length = BIG_PER_CONVERSATION if owner == BIG_OWNER else PER_CONVERSATION
        idle = owner != BIG_OWNER and n % IDLE_EVERY == 0
        age = timedelta(days=IDLE_DAYS if idle else 0, seconds=rng.randrange(60 * 86400))
        updated = now - age
        created = updated - timedelta(minutes=length)
        cum = round_seq = 0
        for seq in range(1, length + 1):
            role = "system" if seq == 1 else "user" if seq % 2 == 0 else "assistant"
            data, tokens = pool[role][rng.randrange(len(pool[role]))]
            cum += tokens
            round_seq = seq if role == "user" else round_seq
            at = created + timedelta(minutes=seq - 1)
            row = [pk, seq, role, data.replace("\\", "\\\\"), tokens, cum, round_seq, at]
            self.messages.append("\t".join(map(str, row)) + "\n")
        head = [pk, conversation_id(n), owner, MODEL, ref.encoding, ref.profile, created]
        tail = [updated, length, cum, length, round_seq, 1, 0]
        self.conversations.append("\t".join(map(str, head + tail)) + "\n")
        usage = [pk, pk, owner, length, MODEL, cum, 300, 0, 0, updated]
        self.usage.append("\t".join(map(str, usage)) + "\n")


COLUMNS = {
    "chatledger_conversations": "pk, id, owner, model, encoding, token_profile, created_at, "
    "updated_at, message_count, token_total, last_seq, last_round_seq, prefix_seq, revision",
    "chatledger_messages": "conversation_pk, seq, role, data, tokens, cum_tokens, round_seq, "
    "created_at",
    "chatledger_completions": "pk, conversation_pk, owner, message_seq, model, prompt_tokens, "
    "completion_tokens, cached_tokens, reasoning_tokens, created_at",
}


def load(url: str, layout: Layout, pool: Pool, ref: Reference, seed: int) -> float:
    """COPY every row in; returns the seconds it took (VACUUM ANALYZE included)."""
    import psycopg

    started, rng, chunk = time.perf_counter(), random.Random(seed), 5000
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SET synchronous_commit = off")
        for start in range(0, layout.conversations, chunk):
            rows = Rows()
            for n in range(start, min(start + chunk, layout.conversations)):
                rows.add(n, layout, pool, rng, ref)
            for table, lines in zip(
                COLUMNS, (rows.conversations, rows.messages, rows.usage), strict=True
            ):
                with cur.copy(f"COPY {table} ({COLUMNS[table]}) FROM STDIN") as copy:
                    copy.write("".join(lines))
        for table in ("chatledger_conversations", "chatledger_completions"):
            cur.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'pk'), {layout.conversations})"
            )
        conn.commit()
        conn.autocommit = True
        cur.execute("VACUUM ANALYZE")
    return time.perf_counter() - started


_MESSAGES = "SELECT role, data, tokens, cum_tokens, round_seq FROM chatledger_messages"
_STATE = (
    "SELECT message_count, token_total, last_seq, last_round_seq, prefix_seq, encoding, "
    "token_profile, tool_state, revision FROM chatledger_conversations"
)


def reference(engine: Engine) -> Reference:
    with engine.connect() as c:
        q = "SELECT encoding, token_profile FROM chatledger_conversations WHERE id = 'probe'"
        enc, profile = c.execute(text(q)).one()
    return Reference(str(enc), str(profile))


def check_against_api(ledger: cl.Ledger) -> None:
    """Conversation 1 as loaded must equal the same messages appended through the API."""
    pk = "(SELECT pk FROM chatledger_conversations WHERE id = 'reference')"
    with ledger.engine.connect() as c:
        loaded = c.execute(text(f"{_MESSAGES} WHERE conversation_pk = 1 ORDER BY seq")).all()
    conv = ledger.conversation("reference", owner="reference", model=MODEL)
    conv.extend([json.loads(r.data) for r in loaded])
    with ledger.engine.connect() as c:
        stored = c.execute(text(f"{_MESSAGES} WHERE conversation_pk = {pk} ORDER BY seq")).all()
        ours, theirs = (c.execute(text(f"{_STATE} WHERE pk = {k}")).one() for k in ("1", pk))
    if [tuple(r) for r in loaded] != [tuple(r) for r in stored] or ours != theirs:
        raise SystemExit(f"the loaded rows differ from chatledger's: {ours} != {theirs}")
    conv.delete()


# --- the measurements ---------------------------------------------------------------------------


def timed_ms(fn: Any) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000


def quantile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(value: float) -> str:
    return f"{value:.2f} ms"


@dataclass
class Figure:
    what: str
    value: str
    target: str = ""
    verdict: str = ""


def timing(what: str, samples: list[float], target: str) -> Figure:
    """A figure of single-call times against its target: the median, with the p95 beside."""
    med, limit = statistics.median(samples), TARGETS[target]
    return Figure(
        what,
        f"{ms(med)} (p95 {ms(quantile(samples, 0.95))})",
        f"<= {limit:.0f} ms",
        "met" if med <= limit else "MISSED",
    )


@dataclass
class Transactions:
    """Each committed transaction's duration, and how long its conversation locks were held
    (from the locking read, ``FOR UPDATE``, to the commit), in milliseconds; where the longest
    one spent its time, statement by statement; and this process's garbage collections (a
    pause of the client holds the locks as long as the database would)."""

    engine: Engine
    started: float | None = None
    locked: float | None = None
    durations: list[float] = field(default_factory=list)
    locks: list[float] = field(default_factory=list)
    steps: list[tuple[str, float]] = field(default_factory=list)
    worst: tuple[int, list[tuple[str, float]]] = (0, [])
    collections: list[float] = field(default_factory=list)
    _at: float = 0.0
    _gc_at: float = 0.0
    _EVENTS = ("begin", "before_cursor_execute", "after_cursor_execute", "commit")

    def __enter__(self) -> Transactions:
        for name in self._EVENTS:
            event.listen(self.engine, name, getattr(self, f"_{name}"))
        gc.callbacks.append(self._gc)
        return self

    def __exit__(self, *exc: object) -> None:
        for name in self._EVENTS:
            event.remove(self.engine, name, getattr(self, f"_{name}"))
        gc.callbacks.remove(self._gc)

    def _gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_at = time.perf_counter()
            return
        self.collections.append(took := (time.perf_counter() - self._gc_at) * 1000)
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
            if self.durations[-1] == max(self.durations):
                self.worst = (len(self.durations), self.steps)
        if self.locked is not None:
            self.locks.append((now - self.locked) * 1000)
        self.started = self.locked = None

    def figures(self, what: str, seconds: float) -> list[Figure]:
        d, held, limit = self.durations, self.locks, TARGETS["lock"]
        over = sum(1 for t in held if t > limit)
        return [
            Figure(what, f"{seconds:.2f} s in {len(d)} transactions"),
            Figure(
                "  transaction time: median / p95 / longest",
                f"{ms(statistics.median(d))} / {ms(quantile(d, 0.95))} / {ms(max(d))}",
            ),
            Figure(
                "  time conversation locks were held: median / p99 / longest",
                f"{ms(statistics.median(held))} / {ms(quantile(held, 0.99))} / {ms(max(held))}",
                f"<= {limit:.0f} ms",
                "met" if not over else f"MISSED ({over} of {len(held)} over)",
            ),
        ]

    def breakdown(self) -> str:
        n, steps = self.worst
        parts = ", ".join(f"{head} {t:.1f} ms" for head, t in steps if t >= 0.05)
        return f"transaction {n} of {len(self.durations)}: {parts}"


class Waits:
    """What the benchmark's sessions wait on, sampled from ``pg_stat_activity`` every 5 ms on
    a connection of its own: lock waits would show as ``Lock``, I/O as ``IO`` (a WAL fsync at
    commit, a dirty buffer written out to make room)."""

    _QUERY = text(
        "SELECT coalesce(wait_event_type, 'CPU'), coalesce(wait_event, '-'), "
        "array_to_string((regexp_split_to_array(query, '\\s+'))[1:3], ' ') FROM "
        "pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
        "AND backend_type = 'client backend' AND state = 'active'"
    )

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url, isolation_level="AUTOCOMMIT")
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
        with self.engine.connect() as c:
            while not self._stop.is_set():
                self.seen.update(tuple(r) for r in c.execute(self._QUERY))
                time.sleep(0.005)

    def table(self) -> str:
        total = sum(self.seen.values()) or 1
        rows = [
            f"| {kind} | {name} | {what.replace('chatledger_', '')} | {n / total:.0%} |"
            for (kind, name, what), n in self.seen.most_common(12)
        ]
        head = f"Where the retention sessions spent their active time ({total} samples):"
        table = ["| wait type | wait | statement | share |", "| --- | --- | --- | ---: |"]
        return "\n".join([head, "", *table, *rows])


def listing_and_opening(
    ledger: cl.Ledger, layout: Layout, rng: random.Random, samples: int
) -> tuple[list[Figure], str]:
    owners = [f"owner-{rng.randrange(layout.owners):05d}" for _ in range(samples + 20)]
    for owner in owners[:20]:  # warm the pool and the statement cache
        ledger.conversations(owner=owner)
    listing = [timed_ms(lambda: ledger.conversations(owner=o)) for o in owners[20:]]  # noqa: B023
    big = [timed_ms(lambda: ledger.conversations(owner=BIG_OWNER)) for _ in range(30)]
    picks = [rng.randrange(layout.typical) for _ in range(samples + 20)]
    keys = [(conversation_id(n), layout.owner_of(n)) for n in picks]
    for cid, owner in keys[:20]:
        ledger.get(cid, owner=owner).window(cl.TokenBudget(BUDGET))
    keys = keys[20:]
    opening = [
        timed_ms(lambda: ledger.get(c, owner=o).window(cl.TokenBudget(BUDGET)))  # noqa: B023
        for c, o in keys
    ]
    only_get = [timed_ms(lambda: ledger.get(c, owner=o)) for c, o in keys]  # noqa: B023
    got = ledger.get(keys[0][0], owner=keys[0][1])
    only_window = [timed_ms(lambda: got.window(cl.TokenBudget(BUDGET))) for _ in keys]
    page = len(ledger.conversations(owner=owners[0]))
    sql = (
        "SELECT pk FROM chatledger_conversations WHERE owner = :o "
        "ORDER BY updated_at DESC, pk DESC LIMIT 100"
    )
    with ledger.engine.connect() as c:
        plan = c.execute(text(f"EXPLAIN (ANALYZE, BUFFERS) {sql}"), {"o": BIG_OWNER}).scalars()
        note = "EXPLAIN ANALYZE of the large owner's listing:\n\n```\n"
        note += "\n".join(map(str, plan)) + "\n```"
    return [
        timing(f"list an owner's conversations ({PER_OWNER}, page of {page})", listing, "list"),
        timing(f"list the large owner's conversations ({layout.big}, page of 100)", big, "list"),
        timing("get(id, owner) + window(TokenBudget(8000)), a random one", opening, "open"),
        Figure("  of which get(id, owner)", ms(statistics.median(only_get))),
        Figure("  of which window(TokenBudget(8000))", ms(statistics.median(only_window))),
    ], note


def storage(ledger: cl.Ledger) -> list[Figure]:
    t = "'chatledger_messages'"
    sql = (
        f"SELECT pg_total_relation_size({t}), pg_relation_size({t}), "
        f"pg_table_size({t}) - pg_relation_size({t}), pg_indexes_size({t}), "
        "(SELECT count(*) FROM chatledger_messages), "
        "(SELECT avg(octet_length(data)) FROM chatledger_messages)"
    )
    with ledger.engine.connect() as c:
        total, heap, toast, indexes, n, raw = c.execute(text(sql)).one()
    per, raw = total / n, float(raw)
    return [
        Figure(
            "bytes per stored message (table + TOAST + indexes) / raw JSON",
            f"{per:.0f} B / {raw:.0f} B = {per / raw:.2f}x",
            f"<= {TARGETS['bytes']}x",
            "met" if per / raw <= TARGETS["bytes"] else "MISSED",
        ),
        Figure(
            "  of which heap / TOAST, maps / indexes, per message",
            f"{heap / n:.0f} B / {toast / n:.0f} B / {indexes / n:.0f} B",
        ),
    ]


def retention(ledger: cl.Ledger, layout: Layout, url: str, waits: bool) -> tuple[Any, ...]:
    with contextlib.ExitStack() as stack:
        sampler = stack.enter_context(Waits(url)) if waits else None
        with Transactions(ledger.engine) as erase:
            t = time.perf_counter()
            erased = ledger.delete_owner(BIG_OWNER)
            erase_s = time.perf_counter() - t
        with Transactions(ledger.engine) as sweep:
            t = time.perf_counter()
            swept = ledger.delete_idle(timedelta(days=IDLE_DAYS - 30))
            sweep_s = time.perf_counter() - t
    if (erased, swept) != (layout.big, layout.idle):
        raise SystemExit(f"deleted {erased} and {swept}, not {layout.big} and {layout.idle}")
    figures = erase.figures(
        f"delete_owner: {erased} conversations, {erased * BIG_PER_CONVERSATION} messages, "
        f"{erased} usage rows",
        erase_s,
    )
    figures += sweep.figures(
        f"delete_idle: {swept} conversations, {swept * PER_CONVERSATION} messages (usage rows "
        "kept, unlinked)",
        sweep_s,
    )
    return figures, erase, sweep, sampler


def measure(url: str, layout: Layout, args: argparse.Namespace) -> tuple[list[Figure], list[str]]:
    load_before = os.getloadavg()[0]
    if not args.no_freeze:  # as a server does once started: its objects leave the collector
        gc.collect()
        gc.freeze()
    with cl.Ledger(url) as ledger:
        figures, plan = listing_and_opening(ledger, layout, random.Random(args.seed), args.samples)
        figures += storage(ledger)
        more, erase, sweep, sampler = retention(ledger, layout, url, args.waits)
    pauses = erase.collections + sweep.collections
    freeze = "no gc.freeze()" if args.no_freeze else "after gc.freeze()"
    notes = [
        f"Load average (1 min) of the machine before / after the measurements: {load_before:.1f}"
        f" / {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.",
        plan,
        *([sampler.table()] if sampler is not None else []),
        f"Garbage collections of this process during the retention calls: {len(pauses)}, the "
        f"longest {max(pauses, default=0):.1f} ms ({freeze}).",
        f"The longest delete_owner transaction, statement by statement: {erase.breakdown()}.",
        f"The longest delete_idle transaction, statement by statement: {sweep.breakdown()}.",
    ]
    return figures + more, notes


# --- the report ---------------------------------------------------------------------------------


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo") as f:
        cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def report(command: str, layout: Layout, load_s: float, measured: Any, version: str) -> str:
    figures, notes = measured
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
        *(f"| {f.what} | {f.value} | {f.target} | {f.verdict} |" for f in figures),
        "",
    ]
    for note in notes:
        lines += [note, ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="20,000 conversations, 102,500 messages")
    ap.add_argument("--samples", type=int, default=300, help="calls timed per figure")
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--waits", action="store_true", help="sample pg_stat_activity in retention")
    ap.add_argument("--no-freeze", action="store_true", help="no gc.freeze() before measuring")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "scale.md")
    ap.add_argument("--pg", default=PG_URL, help="a server database to make the scratch one from")
    args = ap.parse_args(argv)
    layout = Layout(owners=195, big=500) if args.quick else Layout(owners=1950, big=5000)
    given = sys.argv[1:] if argv is None else argv
    command = " ".join([".venv-bench/bin/python benchmarks/bench_scale.py", *given])
    started = time.perf_counter()
    pool = make_pool(random.Random(args.seed), TokenCounter(MODEL))
    with pg_database(args.pg) as url:
        with cl.Ledger(url) as ledger:
            ledger.conversation("probe", model=MODEL)
            ref = reference(ledger.engine)
            ledger.delete("probe")
        print(f"loading {layout.conversations:,} conversations, {layout.messages:,} messages")
        load_s = load(url, layout, pool, ref, args.seed)
        print(f"loaded in {load_s:.0f} s")
        with cl.Ledger(url) as ledger:
            check_against_api(ledger)
            with ledger.engine.connect() as c:
                version = str(c.execute(text("SHOW server_version")).scalar())
        measured = measure(url.replace("postgresql://", "postgresql+psycopg://"), layout, args)
    out = report(command, layout, load_s, measured, version)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(out + "\n")
    print(out)
    print(f"total {time.perf_counter() - started:.0f} s; written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
