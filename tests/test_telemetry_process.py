"""OpenTelemetry in a fresh interpreter: what a test process, whose global providers are set
once and early, cannot show.

- With ``opentelemetry`` made unimportable (a ``sys.meta_path`` finder that refuses it), both
  twins work as before and nothing of it is ever imported: nothing can be emitted.
- With the API installed, a ledger made *before* the application sets its tracer and meter
  providers reports into them once they are set: chatledger has no setup call, and looks the
  provider up through the API's proxies at each span, not when the ledger was made.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from openai_server import FakeOpenAI, Reply, Usage

TURN = """
import asyncio, json, sys
import chatledger as cl
import openai

def summarize(previous, messages):
    return "a summary"

def turn(conv, client):
    conv.append({"role": "user", "content": "hi " * 200})
    conv.extend([{"role": "assistant", "content": "hello " * 200},
                 {"role": "user", "content": "again " * 200}])
    conv.window([cl.Summarize(summarize, trigger=300, keep=250)])
    conv.record(client.chat.completions.create(**conv.request(cl.TokenBudget(1000))))
    try:
        conv.append({"role": "tool", "tool_call_id": "x", "content": "1"})
    except cl.ChatLedgerError as e:
        return type(e).__name__

async def aturn(conv, client):
    await conv.append({"role": "user", "content": "hi " * 200})
    await conv.extend([{"role": "assistant", "content": "hello " * 200},
                       {"role": "user", "content": "again " * 200}])
    await conv.window([cl.Summarize(summarize, trigger=300, keep=250)])
    await conv.record(
        await client.chat.completions.create(**await conv.request(cl.TokenBudget(1000))))
    try:
        await conv.append({"role": "tool", "tool_call_id": "x", "content": "1"})
    except cl.ChatLedgerError as e:
        return type(e).__name__
"""


def _run(script: str, server: FakeOpenAI, cwd: Path) -> dict[str, Any]:
    """Run ``TURN`` then ``script`` in a fresh interpreter; its last line of output, as JSON."""
    env = {**os.environ, "OPENAI_BASE_URL": server.url, "OPENAI_API_KEY": "test"}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(TURN) + textwrap.dedent(script)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    out: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return out


def test_without_opentelemetry_everything_works_and_nothing_is_imported(
    server: FakeOpenAI, tmp_path: Path
) -> None:
    script = """
    import importlib.abc

    class Refuse(importlib.abc.MetaPathFinder):
        tried = []

        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] == "opentelemetry":
                self.tried.append(name)
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    assert not any(m.startswith("opentelemetry") for m in sys.modules)
    sys.meta_path.insert(0, Refuse())
    from chatledger.telemetry import Telemetry

    client = openai.OpenAI(max_retries=0)
    out = {}
    with cl.Ledger("sqlite:///s.db") as ledger:
        out["sync"] = turn(ledger.conversation("c", owner="o"), client)
        out["sync_messages"] = len(ledger.conversation("c", owner="o").messages())
    with cl.Ledger("sqlite:///t.db", telemetry=Telemetry(include_owner=True)) as ledger:
        ledger.conversation("c", owner="o").append({"role": "user", "content": "hi"})

    async def main():
        aclient = openai.AsyncOpenAI(max_retries=0)
        async with cl.AsyncLedger("sqlite+aiosqlite:///a.db") as ledger:
            conv = await ledger.conversation("c", owner="o")
            out["async"] = await aturn(conv, aclient)
            out["async_messages"] = len(await conv.messages())

    asyncio.run(main())
    out["tried"] = Refuse.tried
    out["imported"] = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
    print(json.dumps(out))
    """
    server.queue("hello", "again")
    out = _run(script, server, tmp_path)
    assert out == {
        "sync": "InvalidMessageError",
        "sync_messages": 4,
        "async": "InvalidMessageError",
        "async_messages": 4,
        "tried": ["opentelemetry"],  # once, by chatledger, for every ledger of the process
        "imported": [],
    }


def test_a_provider_set_after_the_ledger_receives_its_spans_and_metrics(
    server: FakeOpenAI, tmp_path: Path
) -> None:
    script = """
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    client, aclient = openai.OpenAI(max_retries=0), openai.AsyncOpenAI(max_retries=0)
    ledger = cl.Ledger("sqlite:///s.db")  # no telemetry argument, no setup call
    aledger = cl.AsyncLedger("sqlite+aiosqlite:///a.db")
    early = ledger.conversation("early", owner="alice@example.com")
    early.append({"role": "user", "content": "before any provider"})

    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    trace.set_tracer_provider(provider)
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))

    conv = ledger.conversation("s", owner="alice@example.com", model="gpt-4o-mini")
    out = {"sync": turn(conv, client)}

    async def main():
        conv = await aledger.conversation("a", owner="alice@example.com", model="gpt-4o-mini")
        out["async"] = await aturn(conv, aclient)
        await aledger.close()

    asyncio.run(main())
    ledger.close()
    out["spans"] = [
        [s.name, s.attributes.get("chatledger.conversation.id"), s.status.status_code.name]
        for s in spans.get_finished_spans()
    ]
    out["owner_seen"] = any(
        "alice" in str(v) for s in spans.get_finished_spans() for v in s.attributes.values()
    )
    out["metrics"] = {}
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                for p in m.data.data_points:
                    key = m.name + "".join(f" {v}" for v in sorted(p.attributes.values()))
                    out["metrics"][key] = getattr(p, "value", None) or p.count
    print(json.dumps(out))
    """
    for _ in range(2):
        server.queue(Reply(content="fine", usage=Usage(prompt_tokens=50, completion_tokens=3)))
    out = _run(script, server, tmp_path)
    assert out["sync"] == out["async"] == "InvalidMessageError"
    turn = [
        ["chatledger.append", "UNSET"],
        ["chatledger.extend", "UNSET"],
        ["chatledger.summarize", "UNSET"],
        ["chatledger.window", "UNSET"],
        ["chatledger.request", "UNSET"],
        ["chatledger.record", "UNSET"],
        ["chatledger.append", "ERROR"],
    ]
    expected = [
        ["chatledger.conversation", "s", "UNSET"],
        *([name, "s", status] for name, status in turn),
        ["chatledger.conversation", "a", "UNSET"],
        *([name, "a", status] for name, status in turn),
    ]
    assert out["spans"] == expected  # nothing from "early", made before the provider
    assert out["owner_seen"] is False
    model = "gpt-4o-mini"
    cost = out["metrics"].pop(f"chatledger.usage.cost {model} openai", None)
    assert cost is not None and cost > 0
    assert out["metrics"] == {
        f"chatledger.usage.tokens {model} input openai": 100,
        f"chatledger.usage.tokens {model} openai output": 6,
        f"chatledger.window.duration {model}": 2,
    }


def test_a_broken_opentelemetry_install_is_logged_and_skipped(
    server: FakeOpenAI, tmp_path: Path
) -> None:
    """An import that fails with something other than ImportError (a broken install) does not
    stop a ledger from being made or used: it is logged once, and nothing is emitted."""
    script = """
    import importlib.abc, logging

    class Broken(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] == "opentelemetry":
                raise RuntimeError("a broken install")
            return None

    logged = []
    handler = logging.Handler()
    handler.emit = lambda record: logged.append(record.getMessage())
    logging.getLogger("chatledger").addHandler(handler)
    sys.meta_path.insert(0, Broken())
    client = openai.OpenAI(max_retries=0)
    with cl.Ledger("sqlite:///s.db") as ledger, cl.Ledger("sqlite:///t.db") as other:
        error = turn(ledger.conversation("c"), client)
        other.conversation("c").append({"role": "user", "content": "hi"})
        count = len(ledger.conversation("c").messages())
    failed = [m for m in logged if m.startswith("telemetry:")]
    print(json.dumps({"error": error, "messages": count, "logged": failed}))
    """
    server.queue("hello")
    assert _run(script, server, tmp_path) == {
        "error": "InvalidMessageError",
        "messages": 4,
        "logged": ["telemetry: opentelemetry failed to load; no spans"],
    }
