"""Instructions per operation (valgrind callgrind) for append and window against their floors.

    .venv/bin/python benchmarks/bench_instructions.py            # SQLite, two repeats
    .venv/bin/python benchmarks/bench_instructions.py --postgres # also PostgreSQL, client only

Timed ratios move with the machine's load; instruction counts do not, so a change of a few
percent shows. Each figure is a difference: a child process does the same setup and warm-up
twice over (one run stops there, the other then does N operations), both under callgrind, and
``(Ir(N) - Ir(0)) / N`` is the cost of one operation, with interpreter start, imports and setup
cancelled. The floors are the timed benchmark's own: ``run.Floor`` (a raw SQLAlchemy Core
insert and commit of the same message) and ``bench_window_floor``'s raw ``SELECT`` of the rows
the window sends, plus JSON decoding. Counts are user-space instructions of the client process:
system calls and, for PostgreSQL, the server's work are not in them. The same operations are
timed in a child without valgrind, so both ratios stand side by side. Every child runs a private
copy of chatledger made at the start (see :func:`snapshot`). About 4 minutes per repeat and
backend on 2 cores: each child's start and imports cost a minute under valgrind.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src" / "chatledger"
sys.path.insert(0, str(HERE))

import chatledger as cl  # noqa: E402
import run  # noqa: E402
import workload  # noqa: E402

HISTORY = 1000  # messages stored before anything is measured (run.py's smallest N)
WARM = 20  # runs of every operation before counting starts, in every process
MESSAGE = {"role": "user", "content": "one more question about the trip?"}
# operation -> (label, operations counted under valgrind); the floor follows its operation
OPS: dict[str, tuple[str, int]] = {
    "append": ("chatledger append", 200),
    "insert": ("raw Core insert+commit", 200),
    "window": ("chatledger window", 100),
    "select": ("raw SELECT + decode", 100),
}
FLOOR_OF = {"append": "insert", "window": "select"}
# bench_window_floor.py's floor: the rows a window sends, by two primary-key ranges
_COLS = (
    "SELECT seq, role, data, tokens, cum_tokens, round_seq, created_at, status, meta, "
    "idempotency_key FROM chatledger_messages WHERE conversation_pk = :pk AND "
)
FLOOR_SQL = text(
    f"{_COLS} seq <= :prefix UNION ALL {_COLS} seq BETWEEN :first AND :last ORDER BY seq"
)


class Fixtures:
    """One conversation of ``HISTORY`` messages and both floors; identical in every process."""

    def __init__(self, backend: str, url: str, tmp: Path) -> None:
        run.PG_URL = url  # run.Floor reads it for PostgreSQL
        self.ledger = cl.Ledger(url)
        self.conv = self.ledger.conversation(f"bench-{uuid.uuid4().hex[:10]}", model=run.MODEL)
        history = workload.history(HISTORY)
        for i in range(0, len(history), 2000):
            self.conv.extend(history[i : i + 2000])
        self.budget = cl.TokenBudget(run.BUDGET)
        self.floor = run.Floor(backend, tmp)
        self.params: dict[str, int] = {}
        self.ops: dict[str, Callable[[], None]] = {
            "append": self.append,
            "insert": self.floor.insert,
            "window": self.window,
            "select": self.select,
        }

    def append(self) -> None:
        self.conv.append(MESSAGE)

    def window(self) -> None:
        self.conv.window(self.budget)

    def select(self) -> None:
        with self.ledger.engine.connect() as c:
            rows = c.execute(FLOOR_SQL, self.params).all()
        [json.loads(r[2]) for r in rows]

    def warm(self) -> None:
        """Appends first, then the rows the window sends are read (the floor reads the same
        ones), then windows: a window measured after further appends would send other rows."""
        for name in ("append", "insert"):
            for _ in range(WARM):
                self.ops[name]()
        w = self.conv.window(self.budget, explain=True)
        assert w.kept.first is not None and w.kept.last is not None
        self.params = {
            "pk": self.conv._h.pk,
            "prefix": w.prefix.count,
            "first": w.kept.first,
            "last": w.kept.last,
        }
        for name in ("window", "select"):
            for _ in range(WARM):
                self.ops[name]()


def child(mode: str, backend: str, url: str, tmp: Path, op: str, n: int) -> None:
    """``count``: setup, warm-up, then ``n`` runs of ``op``, and exit without teardown (whose
    cost may vary with ``n``). ``time``: print :func:`timed`'s medians (``n`` runs) as JSON."""
    if mode == "time":
        print(json.dumps(timed(backend, url, tmp, n)))
        return
    fx = Fixtures(backend, url, tmp)
    fx.warm()
    fn = fx.ops[op]
    for _ in range(n):
        fn()
    sys.stdout.flush()
    os._exit(0)


def snapshot(tmp: Path) -> Path:
    """A private copy of chatledger and these benchmarks, so that edits made to the checkout
    while this runs change no count (a module edited between two children would be compiled
    again in one of them: billions of instructions)."""
    snap = tmp / "snapshot"
    shutil.copytree(SRC, snap / "chatledger", ignore=shutil.ignore_patterns("__pycache__"))
    for f in HERE.glob("*.py"):
        shutil.copy2(f, snap / f.name)
    return snap


def spawn(snap: Path, args: list[str], *, valgrind_out: Path | None = None) -> str:
    """Run this script's child from the snapshot (under callgrind when ``valgrind_out``)."""
    cmd = [sys.executable, str(snap / Path(__file__).name), "--child", *args]
    if valgrind_out is not None:
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={valgrind_out}", *cmd]
    env = {**os.environ, "PYTHONPATH": str(snap), "PYTHONHASHSEED": "0"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def callgrind(snap: Path, backend: str, url: str, tmp: Path, op: str, n: int) -> int:
    """Instructions the whole child executed (callgrind's ``totals``)."""
    out = tmp / f"cg-{uuid.uuid4().hex[:8]}.out"
    db = tmp / f"db-{uuid.uuid4().hex[:8]}"  # same name length in every child
    db.mkdir()
    child_url = f"sqlite:///{db / 'cl.db'}" if backend == "sqlite" else url
    spawn(snap, ["count", backend, child_url, str(db), op, str(n)], valgrind_out=out)
    for line in out.read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {out}")


def count(
    snap: Path, backend: str, url: str, tmp: Path, repeats: int, jobs: int
) -> dict[str, list[float]]:
    """Instructions per operation, one value per repeat, for every operation in ``OPS``."""
    tasks = [(r, op) for r in range(repeats) for op in ("", *OPS)]
    with ThreadPoolExecutor(jobs) as pool:
        futures = {
            t: pool.submit(
                callgrind, snap, backend, url, tmp, t[1] or "append", OPS[t[1]][1] if t[1] else 0
            )
            for t in tasks
        }
        totals = {t: f.result() for t, f in futures.items()}
    return {
        op: [(totals[(r, op)] - totals[(r, "")]) / OPS[op][1] for r in range(repeats)] for op in OPS
    }


def timed(backend: str, url: str, tmp: Path, runs: int) -> dict[str, float]:
    """Median seconds per operation, without valgrind; each operation alternates with its floor."""
    fx = Fixtures(backend, url, tmp)
    fx.warm()
    out: dict[str, float] = {}
    for ours in ("window", "append"):  # windows first: appends would change their rows
        pair: dict[str, list[float]] = {ours: [], FLOOR_OF[ours]: []}
        for _ in range(runs):
            for name, times in pair.items():
                t = time.perf_counter()
                fx.ops[name]()
                times.append(time.perf_counter() - t)
        out.update({name: statistics.median(times) for name, times in pair.items()})
    p = fx.params
    out["rows sent"] = p["prefix"] + p["last"] - p["first"] + 1  # by the window and the floor
    fx.floor.close()
    fx.ledger.close()
    return out


@dataclass
class Result:
    backend: str
    per_op: dict[str, list[float]]
    seconds: dict[str, float]


def table(results: list[Result]) -> list[str]:
    repeats = len(results[0].per_op["append"])
    runs = " / ".join(f"run {i + 1}" for i in range(repeats))
    lines = [
        f"| backend | operation | N | instructions per op ({runs}) | spread | "
        "instructions / floor | time | time / floor |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for res in results:
        label = res.backend if res.backend == "sqlite" else f"{res.backend} (client only)"
        for op, (name, n) in OPS.items():
            vals = res.per_op[op]
            mean = statistics.fmean(vals)
            spread = (max(vals) - min(vals)) / mean * 100
            ratio_ir = ratio_t = ""
            if op in FLOOR_OF:
                floor = FLOOR_OF[op]
                ratio_ir = f"{mean / statistics.fmean(res.per_op[floor]):.2f}x"
                ratio_t = f"{res.seconds[op] / res.seconds[floor]:.2f}x"
            lines.append(
                f"| {label} | {name} | {n} | {' / '.join(f'{v:,.0f}' for v in vals)} | "
                f"{spread:.2f}% | {ratio_ir} | {run.fmt(res.seconds[op])} | {ratio_t} |"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        mode, backend, url, folder, op, n = argv[1:]
        child(mode, backend, url, Path(folder), op, int(n))
        return 0
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=2, help="independent valgrind runs")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--postgres", action="store_true", help="also PostgreSQL (client only)")
    ap.add_argument("--runs", type=int, default=401, help="timed runs of each operation")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # drop the PostgreSQL database
    started = time.perf_counter()
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        snap, code = snapshot(tmp), _code()
        for backend in ("sqlite", "postgresql") if args.postgres else ("sqlite",):
            print(f"[{backend}] timing, then callgrind", file=sys.stderr)
            if backend == "sqlite":
                results.append(_one(snap, backend, "", tmp, args))
            else:
                import peers

                with peers.pg_database(run.PG_URL) as url:
                    results.append(_one(snap, backend, url, tmp, args))
    print(f"Code: {code}. Machine: {run.machine()}. {run.versions()}. valgrind {_valgrind()}.")
    sent = ", ".join(f"{r.backend} {r.seconds['rows sent']:.0f}" for r in results)
    print(
        f"{HISTORY} + {WARM} messages stored, budget {run.BUDGET} tokens, rows a window sends: "
        f"{sent}; {args.repeats} repeats."
    )
    print("\n".join(table(results)))
    print(f"({time.perf_counter() - started:.0f} s)")
    return 0


def _one(snap: Path, backend: str, url: str, tmp: Path, args: argparse.Namespace) -> Result:
    """Time first (which also compiles the snapshot's bytecode once), then count."""
    sub = tmp / backend
    sub.mkdir()
    timing_url = f"sqlite:///{sub / 'timed.db'}" if backend == "sqlite" else url
    out = spawn(snap, ["time", backend, timing_url, str(sub), "-", str(args.runs)])
    seconds = json.loads(out.strip().splitlines()[-1])
    per_op = count(snap, backend, url, sub, args.repeats, args.jobs)
    return Result(backend, per_op, seconds)


def _code() -> str:
    """The commit measured, and whether src/ differed from it (read when the snapshot was made)."""
    git = ["git", "-C", str(HERE.parent)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run([*git, "status", "--porcelain", "src"], capture_output=True, text=True)
    return head.stdout.strip() + (" + uncommitted changes in src/" if dirty.stdout.strip() else "")


def _valgrind() -> str:
    out = subprocess.run(["valgrind", "--version"], capture_output=True, text=True).stdout
    return out.strip().removeprefix("valgrind-")


if __name__ == "__main__":
    raise SystemExit(main())
