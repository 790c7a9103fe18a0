"""What OpenTelemetry costs an append and a window, in three setups.

    .venv/bin/python benchmarks/bench_telemetry.py            # 5 rounds of each setup
    .venv/bin/python benchmarks/bench_telemetry.py --quick

Each setup runs in a fresh interpreter of its own (a process has one global tracer provider,
and whether ``opentelemetry`` imports is decided once):

- ``blocked``: ``opentelemetry`` refused by a ``sys.meta_path`` finder, as if not installed;
- ``no-op``: the API installed, no SDK provider set (the API's no-op spans);
- ``sdk``: the SDK's tracer provider recording every span (a simple processor handing them to
  an exporter that drops them) and a meter provider with an in-memory reader.

Within each process the baseline is a second ledger of the same process with
``Telemetry(enabled=False)``, which runs exactly the code ``blocked`` runs (one attribute
check, no span). Batches of the two ledgers alternate, each on its own SQLite file, and each
batch of 50 calls is timed in CPU time (file syncs excluded); the figure to read is the
setup's median over the baseline's median, in one process. ``blocked`` compares two
identical ledgers: its ratio is the measurement's noise. "The hook alone" times a driver
running an operation that does no I/O, with and without a span.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Any

MODES = ("blocked", "no-op", "sdk")
BATCH = 50  # append + window pairs per timed batch
HOOK_BATCH = 2000  # no-I/O operations per timed batch
HISTORY = 200  # messages stored before timing starts


def _block_opentelemetry() -> None:
    import importlib.abc

    class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
            if name.partition(".")[0] == "opentelemetry":
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Refuse())


def _install_sdk() -> None:
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    class Drop(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(Drop()))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))


def _noop() -> Generator[Any, Any, None]:
    """An operation that asks for nothing: what the driver's hook costs around it."""
    return None
    yield  # pragma: no cover - makes this a generator


def _cpu(fn: Callable[[], None]) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def worker(mode: str, batches: int) -> dict[str, Any]:
    """Time this process's setup against a ``Telemetry(enabled=False)`` ledger of its own."""
    if mode == "blocked":
        _block_opentelemetry()
    elif mode == "sdk":
        _install_sdk()
    import chatledger as cl
    from chatledger.telemetry import Telemetry

    tmp = Path(tempfile.mkdtemp(prefix="bench-telemetry-"))
    ledgers = {
        "base": cl.Ledger(f"sqlite:///{tmp / 'base.db'}", telemetry=Telemetry(enabled=False)),
        "setup": cl.Ledger(f"sqlite:///{tmp / 'setup.db'}"),
    }
    convs = {}
    for key, ledger in ledgers.items():
        conv = ledger.conversation("bench", model="gpt-4o-mini", system="Be brief.")
        for i in range(HISTORY // 2):
            conv.extend(
                [
                    {"role": "user", "content": f"question {i}: " + "words " * 40},
                    {"role": "assistant", "content": f"answer {i}: " + "more words " * 30},
                ]
            )
        convs[key] = conv
    budget = cl.TokenBudget(2000)

    def pairs(key: str) -> Callable[[], None]:
        conv = convs[key]

        def run() -> None:
            for i in range(BATCH):
                conv.append({"role": "user", "content": f"turn {i}: " + "words " * 30})
                conv.window(budget)

        return run

    def hooks(key: str) -> Callable[[], None]:
        driver = ledgers[key]._driver

        def run() -> None:
            for _ in range(HOOK_BATCH):
                driver.run(_noop())

        return run

    for key in ledgers:  # warm up: imports, statement caches, the first window
        pairs(key)()
        hooks(key)()
    times: dict[str, list[float]] = {"base": [], "setup": [], "hook_base": [], "hook_setup": []}
    for i in range(batches):
        order = ("base", "setup") if i % 2 == 0 else ("setup", "base")
        for key in order:
            times[key].append(_cpu(pairs(key)) / BATCH * 1e6)
            times[f"hook_{key}"].append(_cpu(hooks(key)) / HOOK_BATCH * 1e6)
    for ledger in ledgers.values():
        ledger.close()
    imported = any(m.startswith("opentelemetry") for m in sys.modules)
    return {"mode": mode, "imported": imported, **times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="processes per setup")
    parser.add_argument("--batches", type=int, default=8, help="batches per ledger and process")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 4 batches")
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.batches = 2, 4
    if args.worker:
        print(json.dumps(worker(args.worker, args.batches)))
        return

    results: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    for _ in range(args.rounds):
        for mode in MODES:  # the setups interleaved, so drift in the machine hits each alike
            done = subprocess.run(
                [sys.executable, __file__, "--worker", mode, "--batches", str(args.batches)],
                check=True,
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONHASHSEED": "0"},
            )
            results[mode].append(json.loads(done.stdout.splitlines()[-1]))

    print(
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, {args.rounds} processes per setup, {args.batches} batches "
        f"of {BATCH} append+window pairs ({HISTORY}+ stored messages, TokenBudget(2000)) and "
        f"{HOOK_BATCH} no-I/O operations per ledger and process; CPU time, medians"
    )
    print()
    print(
        "| setup | opentelemetry imported | append+window, µs | baseline, µs | ratio "
        "| the hook alone, µs | baseline, µs |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for mode in MODES:
        runs = results[mode]

        def med(key: str, runs: list[dict[str, Any]] = runs) -> float:
            return statistics.median(v for r in runs for v in r[key])

        per_process = [statistics.median(r["setup"]) / statistics.median(r["base"]) for r in runs]
        spread = f"{min(per_process):.3f}-{max(per_process):.3f}"
        imported = "yes" if all(r["imported"] for r in runs) else "no"
        print(
            f"| {mode} | {imported} | {med('setup'):.0f} | {med('base'):.0f} | "
            f"{med('setup') / med('base'):.3f} (per process {spread}) | "
            f"{med('hook_setup'):.2f} | {med('hook_base'):.2f} |"
        )


if __name__ == "__main__":
    main()
