"""The benchmark: chatledger against what users would pick instead, in one process.

    .venv-bench/bin/python benchmarks/run.py            # SQLite and PostgreSQL, N = 1k, 10k, 100k
    .venv-bench/bin/python benchmarks/run.py --quick    # N = 1k, 10k; fewer repetitions

Every figure is a median over repetitions in this run, and every target is a ratio against a
baseline measured in the same run (never an absolute time). Each peer's window is checked for
correctness (system prompt kept, tool pairs valid, newest message present, within budget) and
the verdict printed next to its time. Writes benchmarks/RESULTS.md and benchmarks/window.png.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import platform
import statistics
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import chatledger as cl  # noqa: E402
import workload  # noqa: E402
from chatledger.tokens import encoding_for_model  # noqa: E402

BUDGET = 8000
MODEL = "gpt-4o"
PG_URL = os.environ.get("CHATLEDGER_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")


def median_time(fn: Callable[[], Any], reps: int, *, cap_s: float = 20.0) -> float:
    """Median seconds of ``fn`` over ``reps`` runs (fewer when one run alone takes long)."""
    times: list[float] = []
    gc.collect()  # once: a collection right before each run would slow that run tenfold
    started = time.perf_counter()
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        if time.perf_counter() - started > cap_s and len(times) >= 1:
            break
    return statistics.median(times)


def peak_memory(fn: Callable[[], Any]) -> int:
    """Peak bytes Python allocated while ``fn`` ran."""
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


@dataclass
class Row:
    backend: str
    n: int
    system: str
    op: str
    seconds: float | None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Chatledger:
    """chatledger's own operations, timed the way a backend uses them."""

    name = "chatledger"

    def __init__(self, url: str) -> None:
        self.url = url
        self.cid = f"bench-{uuid.uuid4().hex[:10]}"
        self.ledger = cl.Ledger(url)
        self.conv: cl.Conversation | None = None

    def setup(self, history: list[dict[str, Any]]) -> None:
        conv = self.ledger.conversation(self.cid, owner="bench", model=MODEL)
        for i in range(0, len(history), 2000):
            conv.extend(history[i : i + 2000])
        self.conv = conv

    def window(self) -> list[dict[str, Any]]:
        assert self.conv is not None
        return self.conv.window(cl.TokenBudget(BUDGET))

    def window_cold(self) -> list[dict[str, Any]]:
        with cl.Ledger(self.url) as fresh:
            return fresh.get(self.cid, owner="bench").window(cl.TokenBudget(BUDGET))

    def append(self, msg: dict[str, Any]) -> None:
        assert self.conv is not None
        self.conv.append(msg)

    def turn(self, user: dict[str, Any], reply: dict[str, Any], i: int) -> None:
        """A full turn: append the user message, build the window, record the reply."""
        assert self.conv is not None
        self.conv.append(user)
        w = self.conv.window(cl.TokenBudget(BUDGET), explain=True)
        self.conv.record(
            {
                "id": f"{self.cid}-{i}",
                "model": MODEL,
                "choices": [{"index": 0, "message": reply, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": w.prompt_tokens, "completion_tokens": 40},
            }
        )

    def close(self) -> None:
        if self.url.startswith("postgresql"):
            self.ledger.delete(self.cid, owner="bench")
        self.ledger.close()


def c_tmp(url: str) -> Path:
    """A scratch folder beside a SQLite database (any folder for a server URL)."""
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///")).parent
    return Path(tempfile.gettempdir())


def sqlite_url(tmp: Path, name: str) -> str:
    return f"sqlite:///{tmp / name}"


FAST_REPS = 101  # sub-millisecond operations: more runs for a steady median


def bench_chatledger(backend: str, n: int, reps: int, tmp: Path, rows: list[Row]) -> None:
    url = sqlite_url(tmp, f"cl-{n}.db") if backend == "sqlite" else PG_URL
    history = workload.history(n)
    c = Chatledger(url)
    c.setup(history)
    w = c.window()
    ok, why = workload.is_correct_window(w, history, BUDGET, MODEL)
    verdict = f"{'correct' if ok else 'WRONG: ' + why}, {len(w)} msgs"
    warm = median_time(c.window, max(reps, FAST_REPS))
    rows.append(Row(backend, n, "chatledger", "window (warm)", warm, verdict))
    rows.append(Row(backend, n, "chatledger", "window (cold)", median_time(c.window_cold, reps)))
    memory = peak_memory(c.window)
    rows.append(Row(backend, n, "chatledger", "window peak memory", None, extra={"bytes": memory}))

    # append and the raw floor, timed in alternation so both see the same machine
    floor = Floor(backend, c_tmp(url))
    ours: list[float] = []
    theirs: list[float] = []
    gc.collect()
    for _ in range(max(reps * 4, FAST_REPS)):
        t = time.perf_counter()
        c.append({"role": "user", "content": "one more question about the trip?"})
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        floor.insert()
        theirs.append(time.perf_counter() - t)
    floor.close()
    rows.append(Row(backend, n, "chatledger", "append", statistics.median(ours)))
    rows.append(Row(backend, n, "floor", "raw Core insert+commit", statistics.median(theirs)))

    source = workload.rounds(seed=n)
    msgs = iter([next(source) for _ in range(reps + 2)])  # made before timing starts
    counter = iter(range(10**9))

    def turn() -> None:
        r = next(msgs)
        c.turn(r[0], {"role": "assistant", "content": r[-1]["content"]}, next(counter))

    rows.append(Row(backend, n, "chatledger", "full turn", median_time(turn, reps)))
    c.close()


class Floor:
    """A raw SQLAlchemy Core insert-and-commit of the same message: the least a durable
    append can cost (same engine settings as chatledger's: WAL, synchronous=NORMAL)."""

    def __init__(self, backend: str, tmp: Path) -> None:
        import json

        from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, Text, insert

        from chatledger.store.engine import make_sync_engine

        url = sqlite_url(tmp, "floor.db") if backend == "sqlite" else PG_URL
        self.engine = make_sync_engine(url)
        self.md = MetaData()
        self.table = Table(
            f"bench_floor_{uuid.uuid4().hex[:8]}",
            self.md,
            Column("conversation_id", String(64), primary_key=True),
            Column("seq", Integer, primary_key=True),
            Column("role", String(16)),
            Column("data", Text),
            Column("created_at", DateTime(timezone=True)),
        )
        self.md.create_all(self.engine)
        self.stmt = insert(self.table)
        self.seq = iter(range(1, 10**9))
        self.payload = json.dumps({"role": "user", "content": "one more question about the trip?"})

    def insert(self) -> None:
        from datetime import UTC, datetime

        with self.engine.begin() as conn:
            conn.execute(
                self.stmt,
                {
                    "conversation_id": "c",
                    "seq": next(self.seq),
                    "role": "user",
                    "data": self.payload,
                    "created_at": datetime.now(UTC),
                },
            )

    def close(self) -> None:
        self.md.drop_all(self.engine)
        self.engine.dispose()


def bench_count_tokens(reps: int, rows: list[Row]) -> None:
    history = workload.history(1000)
    enc = encoding_for_model(MODEL)
    texts = [m["content"] for m in history if isinstance(m.get("content"), str)]
    plain = [m for m in history if isinstance(m.get("content"), str) and len(m) == 2]
    plain_texts = [m["content"] for m in plain]

    def raw() -> None:
        for t in plain_texts:
            enc.encode_ordinary(t)

    def ours() -> None:
        cl.count_tokens(plain, MODEL)

    rows.append(Row("-", len(plain), "floor", "raw tiktoken encode", median_time(raw, reps * 4)))
    rows.append(Row("-", len(plain), "chatledger", "count_tokens", median_time(ours, reps * 4)))
    del texts


def bench_peers(backend: str, n: int, reps: int, tmp: Path, rows: list[Row]) -> None:
    try:
        import peers
    except ImportError as exc:  # the bench extra is not installed
        rows.append(Row(backend, n, "peers", "-", None, f"not run: {exc}"))
        return
    history = workload.history(n)
    for peer in peers.all_peers():
        if backend != "sqlite" and not getattr(peer, "supports_postgres", False):
            continue
        if n > getattr(peer, "max_n", 10**9):
            rows.append(Row(backend, n, peer.name, "window (warm)", None, "skipped at this N"))
            continue
        path = str(tmp / f"{peer.name}-{n}.db") if backend == "sqlite" else PG_URL
        try:
            _bench_peer(peer, path, history, backend, n, reps, rows)
        except Exception as exc:  # report, do not hide
            rows.append(Row(backend, n, peer.name, "error", None, f"{type(exc).__name__}: {exc}"))
        finally:
            peer.close()


def _bench_peer(
    peer: Any,
    path: str,
    history: list[dict[str, Any]],
    backend: str,
    n: int,
    reps: int,
    rows: list[Row],
) -> None:
    peer.setup(path, history)
    w = peer.window(BUDGET)
    ok, why = workload.is_correct_window(w, history, BUDGET, MODEL)
    verdict = "correct" if ok else f"WRONG: {why}"
    rows.append(
        Row(
            backend,
            n,
            peer.name,
            "window (warm)",
            median_time(lambda: peer.window(BUDGET), reps),
            verdict,
        )
    )

    def cold() -> None:
        peer.open()
        peer.window(BUDGET)

    rows.append(Row(backend, n, peer.name, "window (cold)", median_time(cold, reps)))

    def append() -> None:
        peer.append({"role": "user", "content": "one more question about the trip?"})
        peer.append({"role": "assistant", "content": "one more answer about the trip."})

    rows.append(Row(backend, n, peer.name, "append", median_time(append, reps * 2) / 2))

    def turn() -> None:
        peer.append({"role": "user", "content": "one more question about the trip?"})
        peer.window(BUDGET)
        peer.append({"role": "assistant", "content": "one more answer about the trip."})

    rows.append(Row(backend, n, peer.name, "full turn", median_time(turn, reps)))


def fmt(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    return f"{seconds * 1e3:.2f} ms"


def get(rows: list[Row], backend: str, n: int, system: str, op: str) -> float | None:
    for r in rows:
        if (r.backend, r.n, r.system, r.op) == (backend, n, system, op):
            return r.seconds
    return None


def ratios(rows: list[Row], sizes: list[int], backends: list[str]) -> list[str]:
    out = []

    def ratio(a: float | None, b: float | None) -> str:
        return "n/a" if a is None or b is None or b == 0 else f"{a / b:.2f}"

    for b in backends:
        lo, hi = sizes[0], sizes[-1]
        w_lo = get(rows, b, lo, "chatledger", "window (warm)")
        w_hi = get(rows, b, hi, "chatledger", "window (warm)")
        out.append(f"- {b}: window t({hi}) / t({lo}) = {ratio(w_hi, w_lo)} (target <= 1.5)")
        m_lo = next(
            (
                r.extra["bytes"]
                for r in rows
                if (r.backend, r.n, r.op) == (b, lo, "window peak memory")
            ),
            None,
        )
        m_hi = next(
            (
                r.extra["bytes"]
                for r in rows
                if (r.backend, r.n, r.op) == (b, hi, "window peak memory")
            ),
            None,
        )
        if m_lo and m_hi:
            out.append(
                f"- {b}: window peak memory at {hi} / at {lo} = {m_hi / m_lo:.2f} (target <= 2)"
            )
        for n in sizes:
            floor = get(rows, b, n, "floor", "raw Core insert+commit")
            app = get(rows, b, n, "chatledger", "append")
            out.append(
                f"- {b}, N={n}: append / raw Core insert+commit = {ratio(app, floor)} "
                "(target <= 1.2)"
            )
            lc = get(rows, b, n, "langchain", "append")
            if b == "postgresql" and lc:
                out.append(
                    f"- {b}, N={n}: append / langchain add_message = {ratio(app, lc)} (target <= 1)"
                )
    raw = next((r.seconds for r in rows if r.op == "raw tiktoken encode"), None)
    ours = next((r.seconds for r in rows if r.op == "count_tokens"), None)
    out.append(f"- count_tokens / raw tiktoken encode = {ratio(ours, raw)} (target <= 1.1)")
    n10 = 10_000 if 10_000 in sizes else sizes[-1]
    ours_w = get(rows, "sqlite", n10, "chatledger", "window (warm)")
    for peer, target in (("agents-sdk", 50), ("langchain", 1000), ("llamaindex", 1)):
        theirs = get(rows, "sqlite", n10, peer, "window (warm)")
        if theirs is not None and ours_w:
            out.append(
                f"- sqlite, N={n10}: {peer} window / chatledger window = "
                f"{theirs / ours_w:.0f}x (target >= {target}x)"
            )
    turn = get(rows, "sqlite", n10, "chatledger", "full turn")
    correct = [
        r.system
        for r in rows
        if (r.backend, r.n, r.op) == ("sqlite", n10, "window (warm)")
        and r.system != "chatledger"
        and r.note.startswith("correct")
    ]
    best = [get(rows, "sqlite", n10, p, "full turn") for p in correct]
    best_peer = min((t for t in best if t), default=None)
    if turn and best_peer:
        out.append(
            f"- sqlite, N={n10}: best correct peer full turn / chatledger full turn = "
            f"{best_peer / turn:.0f}x (target >= 20x)"
        )
    appends = [
        get(rows, "sqlite", n10, p, "append") for p in ("agents-sdk", "langchain", "llamaindex")
    ]
    fastest = min((t for t in appends if t), default=None)
    ours_a = get(rows, "sqlite", n10, "chatledger", "append")
    if fastest and ours_a:
        out.append(
            f"- sqlite, N={n10}: chatledger append / fastest peer append = "
            f"{ours_a / fastest:.2f} (target <= 1)"
        )
    return out


def plot(rows: list[Row], sizes: list[int], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    systems = sorted({r.system for r in rows if r.op == "window (warm)" and r.seconds})
    for b in ("sqlite", "postgresql"):
        for s in systems:
            pts = [(n, get(rows, b, n, s, "window (warm)")) for n in sizes]
            pts = [(n, t) for n, t in pts if t]
            if pts:
                ax.plot(
                    [p[0] for p in pts],
                    [p[1] * 1e3 for p in pts],
                    marker="o",
                    linestyle="-" if b == "sqlite" else "--",
                    label=f"{s} ({b})",
                )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("messages stored (N)")
    ax.set_ylabel(f"window time, ms (budget {BUDGET} tokens)")
    ax.set_title("Building a correct window: time against history length")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def versions() -> str:
    out = [f"Python {platform.python_version()}", f"chatledger {cl.__version__}"]
    for mod in (
        "sqlalchemy",
        "tiktoken",
        "langchain_core",
        "langchain_community",
        "agents",
        "llama_index.core",
        "psycopg",
    ):
        try:
            m = __import__(mod, fromlist=["__version__"])
            out.append(f"{mod} {getattr(m, '__version__', '?')}")
        except ImportError:
            pass
    return ", ".join(out)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sizes", default=None, help="comma-separated N values")
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args = ap.parse_args(argv)
    sizes = (
        [int(x) for x in args.sizes.split(",")]
        if args.sizes
        else ([1000, 10_000] if args.quick else [1000, 10_000, 100_000])
    )
    reps = 5 if args.quick else 11
    backends = ["sqlite"] + ([] if args.no_postgres else ["postgresql"])
    rows: list[Row] = []
    global PG_URL
    with tempfile.TemporaryDirectory() as d, contextlib.ExitStack() as stack:
        tmp = Path(d)
        if not args.no_postgres:  # a database of its own: no schema left by other runs
            import peers

            PG_URL = stack.enter_context(peers.pg_database(PG_URL))
        bench_count_tokens(reps, rows)
        for b in backends:
            for n in sizes:
                print(f"[{b}] N={n}: chatledger", file=sys.stderr)
                bench_chatledger(b, n, reps, tmp, rows)
                if not args.no_peers:
                    print(f"[{b}] N={n}: peers", file=sys.stderr)
                    bench_peers(b, n, reps, tmp, rows)
    command = "python benchmarks/run.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "# Benchmark results",
        "",
        f"Made by `{command.strip()}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        f"Machine: {machine()}. {versions()}.",
        f"Workload: `benchmarks/workload.py` (system prompt, user 20-200 / assistant 50-600 "
        f"tokens, a tool call every 10th round); budget {BUDGET} tokens, model {MODEL}. "
        f"Medians of up to {reps} runs (appends: {reps * 4}).",
        "",
        "| backend | N | system | operation | median | notes |",
        "| --- | ---: | --- | --- | ---: | --- |",
    ]
    for r in rows:
        value = (
            fmt(r.seconds)
            if r.seconds is not None
            else (f"{r.extra['bytes'] / 1024:.0f} KiB" if "bytes" in r.extra else "-")
        )
        lines.append(f"| {r.backend} | {r.n or '-'} | {r.system} | {r.op} | {value} | {r.note} |")
    lines += ["", "## Targets (ratios within this run)", "", *ratios(rows, sizes, backends), ""]
    if plot(rows, sizes, HERE / "window.png"):
        lines += ["![window time against N](window.png)", ""]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
