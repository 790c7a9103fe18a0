"""OpenTelemetry: the spans and metrics a ledger reports through the global providers, on both
twins and every backend, read back with the SDK's in-memory exporter and reader.

A process has one global tracer provider and one meter provider, set once: the session fixture
sets them (or, if a docs page already set a tracer provider, adds its exporter to that one),
and a sampler that records only while a test of this module runs, so the rest of the suite is
not traced. A span processor that raises on demand stands for a faulty SDK setup.

What needs a process of its own (opentelemetry not importable, a provider set after the ledger
was made) is in ``test_telemetry_process.py``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import openai
import pytest
from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind, StatusCode, TraceState
from opentelemetry.util.types import Attributes

import chatledger as cl
from chatledger.telemetry import Telemetry
from openai_server import FakeOpenAI, Reply, Usage
from twins import AnyLedger, Opener

pytestmark = pytest.mark.twins

OWNER = "alice@example.com"


class _Switch(Sampler):
    """Records while ``on``: only this module's tests are traced."""

    on = False

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        decision = Decision.RECORD_AND_SAMPLE if self.on else Decision.DROP
        return SamplingResult(decision, attributes)

    def get_description(self) -> str:
        return "chatledger test switch"


class _Gated(SimpleSpanProcessor):
    """Keeps spans only while the switch is on (a docs page's provider records them all)."""

    def __init__(self, exporter: InMemorySpanExporter, switch: _Switch) -> None:
        super().__init__(exporter)
        self.switch = switch

    def on_end(self, span: ReadableSpan) -> None:
        if self.switch.on:
            super().on_end(span)


class _Faulty(SpanProcessor):
    """A span processor that raises when a span starts or ends, on demand: the SDK calls
    processors unguarded, so a faulty one raises inside whatever starts or ends a span."""

    fails_on: str | None = None

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if self.fails_on == "start":
            raise RuntimeError("span processor down")

    def on_end(self, span: ReadableSpan) -> None:
        if self.fails_on == "end":
            raise RuntimeError("span processor down")


@dataclass
class Otel:
    """What the global providers received."""

    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader | None
    sampler: _Switch
    faulty: _Faulty

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        found = self.exporter.get_finished_spans()
        return [s for s in found if name is None or s.name == name]

    def span(self, name: str) -> ReadableSpan:
        (one,) = self.spans(name)
        return one

    def points(self, name: str, attributes: Mapping[str, Any]) -> list[Any]:
        """The data points of ``name`` with exactly these attributes."""
        if self.reader is None:
            pytest.skip("another MeterProvider was set in this process first")
        data = self.reader.get_metrics_data()
        return [
            point
            for resource in (data.resource_metrics if data else ())
            for scope in resource.scope_metrics
            for m in scope.metrics
            if m.name == name
            for point in m.data.data_points
            if dict(point.attributes or {}) == dict(attributes)
        ]

    def metric(self, name: str, attributes: Mapping[str, Any]) -> Any:
        """The cumulative value of ``name`` for these attributes (a histogram's count), 0 if
        there is none."""
        for point in self.points(name, attributes):
            return getattr(point, "value", None) or getattr(point, "count", 0)
        return 0


@pytest.fixture(scope="session")
def _providers() -> Otel:
    exporter, sampler, faulty = InMemorySpanExporter(), _Switch(), _Faulty()
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):  # a docs page set one: listen to it too
        current.add_span_processor(faulty)
        current.add_span_processor(_Gated(exporter, sampler))
    else:
        provider = TracerProvider(sampler=sampler)
        provider.add_span_processor(faulty)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
    reader: InMemoryMetricReader | None = InMemoryMetricReader()
    if isinstance(metrics.get_meter_provider(), MeterProvider):
        reader = None
    else:
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))  # type: ignore[list-item]
    return Otel(exporter, reader, sampler, faulty)


@pytest.fixture
def otel(_providers: Otel) -> Iterator[Otel]:
    _providers.exporter.clear()
    _providers.sampler.on = True
    try:
        yield _providers
    finally:
        _providers.sampler.on = False
        _providers.faulty.fails_on = None
        _providers.exporter.clear()


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def _all_values(spans: list[ReadableSpan]) -> list[str]:
    """Every attribute value of the spans and their events, and their status texts."""
    found = [str(s.status.description) for s in spans]
    for s in spans:
        for attributes in (s.attributes, *(e.attributes for e in s.events)):
            found.extend(str(v) for v in (attributes or {}).values())
    return found


def test_a_turn_in_spans(
    ledger: AnyLedger, uid: str, server: FakeOpenAI, client: openai.OpenAI, otel: Otel
) -> None:
    conv = ledger.conversation(uid, owner=OWNER, model="gpt-4o", system="Be brief.")
    conv.extend([user("old question " * 40), assistant("old answer " * 40)])
    conv.append({"role": "user", "content": "What is 2 + 2?"})
    w = conv.window(cl.TokenBudget(60), explain=True)
    server.queue(
        Reply(content="4", usage=Usage(prompt_tokens=30, completion_tokens=2, cached_tokens=8))
    )
    kwargs = conv.request(cl.TokenBudget(60), max_tokens=10)
    recorded = conv.record(client.chat.completions.create(**kwargs))

    names = [s.name for s in otel.spans()]
    assert names == [
        "chatledger.conversation",
        "chatledger.extend",
        "chatledger.append",
        "chatledger.window",
        "chatledger.request",
        "chatledger.record",
    ]
    for s in otel.spans():
        assert s.attributes is not None and s.attributes["chatledger.conversation.id"] == uid
        assert s.status.status_code is StatusCode.UNSET
    assert otel.span("chatledger.extend").attributes == {
        "chatledger.operation": "extend",
        "chatledger.conversation.id": uid,
        "gen_ai.conversation.id": uid,
        "gen_ai.request.model": "gpt-4o",
        "chatledger.messages.count": 2,
        "chatledger.messages.tokens": conv.records()[1].tokens + conv.records()[2].tokens,
        "chatledger.messages.last_seq": 3,
    }
    window = otel.span("chatledger.window").attributes or {}
    assert window["chatledger.window.kept.first"] == w.kept.first == 4
    assert window["chatledger.window.kept.tokens"] == w.kept.tokens
    assert window["chatledger.window.dropped.tokens"] == w.dropped.tokens
    assert window["chatledger.window.dropped.messages"] == 2
    assert window["chatledger.window.summarized.tokens"] == 0
    assert window["chatledger.window.rows_read"] == w.rows_read
    assert window["chatledger.window.prompt_tokens"] == w.prompt_tokens
    request = otel.span("chatledger.request").attributes or {}
    assert request["gen_ai.request.model"] == "gpt-4o"
    assert request["gen_ai.provider.name"] == "openai"
    assert request["gen_ai.request.max_tokens"] == 10
    assert request["chatledger.request.prompt_tokens"] == w.prompt_tokens
    record = otel.span("chatledger.record").attributes or {}
    assert record["gen_ai.usage.input_tokens"] == 30
    assert record["gen_ai.usage.output_tokens"] == 2
    assert record["gen_ai.usage.cache_read.input_tokens"] == 8
    assert record["gen_ai.response.model"] == recorded.usage.model
    assert record["gen_ai.response.finish_reasons"] == ("stop",)
    assert record["chatledger.cost_usd"] == pytest.approx(float(recorded.usage.cost_usd or 0))
    assert record["chatledger.messages.last_seq"] == 5
    # the owner is never emitted unless asked for
    assert not any("owner" in k for s in otel.spans() for k in s.attributes or {})
    assert not any(OWNER in v for v in _all_values(otel.spans()))


def test_owner_only_when_asked(open_ledger: Opener, db_url: str, uid: str, otel: Otel) -> None:
    ledger = open_ledger(db_url, telemetry=Telemetry(include_owner=True))
    conv = ledger.conversation(uid, owner=OWNER)
    conv.append({"role": "user", "content": "hi"})
    ledger.delete_owner(OWNER)
    for name in ("chatledger.conversation", "chatledger.append", "chatledger.delete_owner"):
        assert (otel.span(name).attributes or {})["chatledger.owner"] == OWNER


def test_disabled_ledger_emits_nothing(
    open_ledger: Opener, db_url: str, uid: str, otel: Otel
) -> None:
    ledger = open_ledger(db_url, telemetry=Telemetry(enabled=False))
    ledger.conversation(uid).append({"role": "user", "content": "hi"})
    assert otel.spans() == []
    with pytest.raises(cl.InvalidArgumentError):
        open_ledger(db_url, telemetry={"include_owner": True})


def test_an_error_is_recorded_and_raised_unchanged(ledger: AnyLedger, uid: str, otel: Otel) -> None:
    conv = ledger.conversation(uid)
    conv.append({"role": "user", "content": "hi"})
    orphan = {"role": "tool", "tool_call_id": "call_1", "content": "42"}
    with pytest.raises(cl.ChatLedgerError) as raised:
        conv.append(orphan)
    span = otel.spans("chatledger.append")[-1]
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == type(raised.value).__qualname__
    (event,) = span.events
    assert event.name == "exception"
    assert str((event.attributes or {})["exception.type"]).endswith(type(raised.value).__qualname__)
    assert (event.attributes or {})["exception.message"] == str(raised.value)
    assert [m["role"] for m in conv.messages()] == ["user"]  # nothing was written


def test_summarizer_call_is_a_child_span(ledger: AnyLedger, uid: str, otel: Otel) -> None:
    def summarize(previous: str | None, messages: list[dict[str, Any]]) -> str:
        return f"{len(messages)} messages about numbers"

    def fail(previous: str | None, messages: list[dict[str, Any]]) -> str:
        raise RuntimeError("down")

    conv = ledger.conversation(uid)
    conv.append(user("question " * 30))
    for i in range(6):
        conv.extend([assistant(f"answer {i} " * 30), user(f"question {i} " * 30)])
    conv.window([cl.Summarize(summarize, trigger=200, keep=100)])
    w = otel.span("chatledger.window")
    s = otel.span("chatledger.summarize")
    assert s.parent is not None and w.context is not None
    assert s.parent.span_id == w.context.span_id
    attrs = s.attributes or {}
    assert attrs["chatledger.summary.failed"] is False
    assert attrs["chatledger.summary.from_seq"] == 1
    assert attrs["chatledger.summary.messages"] == attrs["chatledger.summary.upto_seq"]
    assert (w.attributes or {})["chatledger.window.summarized.messages"] != 0

    otel.exporter.clear()
    other = ledger.conversation(f"{uid}-b")
    other.extend(conv.messages())
    other.window([cl.Summarize(fail, trigger=200, keep=100)])
    failed = otel.span("chatledger.summarize")
    assert failed.status.status_code is StatusCode.ERROR
    assert (failed.attributes or {})["chatledger.summary.failed"] is True
    assert otel.span("chatledger.window").status.status_code is StatusCode.UNSET


def test_a_summarizers_own_spans_nest_under_its_summarize_span(
    ledger: AnyLedger, uid: str, otel: Otel
) -> None:
    """A sync summarizer with a timeout runs on a pool thread (so the timeout can end the
    wait); the caller's context goes with it, so what it traces (an LLM client's span) is a
    child of ``chatledger.summarize``, not a trace of its own."""

    def summarize(previous: str | None, messages: list[dict[str, Any]]) -> str:
        with trace.get_tracer("a-summarizer").start_as_current_span("llm call"):
            return f"{len(messages)} messages about numbers"

    conv = ledger.conversation(uid)
    conv.append(user("question " * 30))
    for i in range(6):
        conv.extend([assistant(f"answer {i} " * 30), user(f"question {i} " * 30)])
    conv.window([cl.Summarize(summarize, trigger=200, keep=100, timeout=30)])
    s = otel.span("chatledger.summarize")
    inner = otel.span("llm call")
    assert s.context is not None and inner.parent is not None
    assert inner.parent.span_id == s.context.span_id
    assert inner.context is not None and inner.context.trace_id == s.context.trace_id


def test_metrics_count_tokens_cost_and_window_time(
    ledger: AnyLedger, uid: str, server: FakeOpenAI, client: openai.OpenAI, otel: Otel
) -> None:
    model = "gpt-4o-mini"
    conv = ledger.conversation(uid, model=model)
    base = {"gen_ai.provider.name": "openai", "gen_ai.response.model": model}
    kinds = ("input", "output")
    tokens, cached = "chatledger.usage.tokens", "chatledger.usage.cached_tokens"
    before = [otel.metric(tokens, {**base, "gen_ai.token.type": k}) for k in kinds]
    before.append(otel.metric(cached, base))
    spent = otel.metric("chatledger.usage.cost", base)
    server.queue(
        Reply(content="one", usage=Usage(prompt_tokens=100, completion_tokens=7, cached_tokens=64))
    )
    conv.chat(client, "hello")
    server.queue(Reply(content="two", usage=Usage(prompt_tokens=120, completion_tokens=5)))
    conv.record(client.chat.completions.create(**conv.request()))
    after = [otel.metric(tokens, {**base, "gen_ai.token.type": k}) for k in kinds]
    after.append(otel.metric(cached, base))
    assert [b - a for a, b in zip(before, after, strict=True)] == [220, 12, 64]
    cost = sum(r.cost_micros or 0 for r in conv.usage_records())
    assert cost > 0
    assert otel.metric("chatledger.usage.cost", base) - spent == pytest.approx(cost / 1e6)
    chat = otel.span("chatledger.chat").attributes or {}
    assert chat["gen_ai.usage.input_tokens"] == 100 and chat["gen_ai.response.model"] == model

    windows = {"gen_ai.request.model": "gpt-4o-mini"}
    before = otel.metric("chatledger.window.duration", windows)
    conv.window()
    conv.window(cl.TokenBudget(500))
    assert otel.metric("chatledger.window.duration", windows) == before + 2
    (histogram,) = otel.points("chatledger.window.duration", windows)
    assert histogram.explicit_bounds[:3] == (0.0005, 0.001, 0.0025)  # seconds, not ms
    assert sum(histogram.bucket_counts[:-1]) == histogram.count  # none past the last bound


def test_metrics_need_no_sampled_span_and_a_replay_adds_nothing(
    ledger: AnyLedger, uid: str, server: FakeOpenAI, client: openai.OpenAI, otel: Otel
) -> None:
    conv = ledger.conversation(uid, model="gpt-4o-mini")
    conv.append(user("hi"))
    counted = {
        "gen_ai.provider.name": "openai",
        "gen_ai.response.model": "gpt-4o-mini",
        "gen_ai.token.type": "output",
    }
    before = otel.metric("chatledger.usage.tokens", counted)
    server.queue(Reply(content="hello", usage=Usage(prompt_tokens=9, completion_tokens=11)))
    completion = client.chat.completions.create(**conv.request())
    otel.sampler.on = False  # spans dropped (unless a docs page's provider samples them all)
    conv.record(completion)
    conv.record(completion)  # the same response: stored once, billed once
    assert len(conv.usage_records()) == 1
    assert otel.metric("chatledger.usage.tokens", counted) == before + 11


def test_a_streamed_turn_is_billed_when_the_stream_ends(
    ledger: AnyLedger, uid: str, server: FakeOpenAI, client: openai.OpenAI, otel: Otel
) -> None:
    conv = ledger.conversation(uid, model="gpt-4o-mini")
    server.queue(
        Reply(content="a streamed reply", usage=Usage(prompt_tokens=8, completion_tokens=3))
    )
    recorder = conv.chat(client, "hi", stream=True, stream_options={"include_usage": True})
    chat = otel.span("chatledger.chat").attributes or {}
    assert chat["chatledger.chat.stream"] is True
    assert "gen_ai.usage.output_tokens" not in chat  # not recorded yet
    assert otel.spans("chatledger.record") == []
    with recorder as chunks:
        for _ in chunks:
            pass
    record = otel.span("chatledger.record").attributes or {}
    assert record["gen_ai.usage.input_tokens"] == 8
    assert record["gen_ai.usage.output_tokens"] == 3
    assert record["chatledger.conversation.id"] == uid


def test_operations_name_their_arguments_as_telemetry_reads_them() -> None:
    """Spans read an operation's conversation from its arguments: a handle is ``h``, a
    conversation id ``cid``, an owner ``owner``, a reply's choice ``choice``."""
    from chatledger import editing, operations

    modules = [operations, editing]
    try:
        from chatledger import responses_ops  # type: ignore[attr-defined, unused-ignore]

        modules.append(responses_ops)
    except ImportError:
        pass
    handles = 0
    for module in modules:
        for name, fn in vars(module).items():
            if not inspect.isgeneratorfunction(fn) or fn.__module__ != module.__name__:
                continue
            for param in inspect.signature(fn).parameters.values():
                if param.annotation == "Handle":
                    assert param.name == "h", f"{module.__name__}.{name}({param.name})"
                    handles += 1
    assert handles >= 15  # append, record, window, request, chat, the edits...


def _folding_history(conv: Any) -> None:
    conv.append(user("question " * 30))
    for i in range(6):
        conv.extend([assistant(f"answer {i} " * 30), user(f"question {i} " * 30)])


def _summarize(previous: str | None, messages: list[dict[str, Any]]) -> str:
    return f"{len(messages)} messages about numbers"


@pytest.mark.parametrize("fails_on", ["start", "end"])
def test_a_faulty_sdk_fails_no_call_and_no_write(
    ledger: AnyLedger,
    uid: str,
    server: FakeOpenAI,
    client: openai.OpenAI,
    otel: Otel,
    caplog: pytest.LogCaptureFixture,
    fails_on: str,
) -> None:
    """A span processor that raises as a span starts or ends: every call returns what it
    would have, every write is stored, and a failing call raises its own error."""
    otel.faulty.fails_on = fails_on
    with caplog.at_level(logging.WARNING, logger="chatledger"):
        conv = ledger.conversation(uid, owner=OWNER, model="gpt-4o-mini")
        _folding_history(conv)
        w = conv.window([cl.Summarize(_summarize, trigger=200, keep=100)], explain=True)
        assert w.summary is not None and w.summarized.count > 0  # the fold was stored
        server.queue(Reply(content="fine", usage=Usage(prompt_tokens=40, completion_tokens=2)))
        recorded = conv.record(client.chat.completions.create(**conv.request(max_tokens=20)))
        with pytest.raises(cl.InvalidMessageError):
            conv.append({"role": "tool", "tool_call_id": "call_1", "content": "42"})
    faults = [r for r in caplog.records if r.getMessage().startswith("telemetry:")]
    assert recorded.message is not None and recorded.message.seq == 14
    assert [m["content"] for m in conv.messages()][-1] == "fine"
    assert len(conv.usage_records()) == 1
    assert faults and all(r.exc_info is not None for r in faults)
    kinds = {r.getMessage() for r in faults}
    if fails_on == "start":  # no span opened: nothing to end, nothing exported
        assert kinds == {
            "telemetry: cannot open a span for conversation",
            "telemetry: cannot open a span for extend",
            "telemetry: cannot open a span for append",
            "telemetry: cannot open a span for window",
            "telemetry: cannot open a summarizer span",
            "telemetry: cannot open a span for request",
            "telemetry: cannot open a span for record",
        }
        assert otel.spans() == []
    else:
        assert "telemetry: cannot end the span of record" in kinds
        assert "telemetry: cannot end a summarizer span" in kinds


def test_errors_quote_no_owner(open_ledger: Opener, db_url: str, uid: str, otel: Otel) -> None:
    """A budget's refusal names the owner: the span's exception event and status blank it
    out, unless the ledger was asked to include owners."""
    too_small = cl.Budget(tokens=5, scope="owner")
    conv = open_ledger(db_url).conversation(uid, owner=OWNER, model="gpt-4o-mini")
    conv.append(user("hi"))
    with pytest.raises(cl.BudgetExceededError) as raised:
        conv.request(max_tokens=10, budget=too_small)
    assert OWNER in str(raised.value)  # the caller's error is unchanged
    span = otel.span("chatledger.request")
    assert span.status.status_code is StatusCode.ERROR
    assert not any(OWNER in v for v in _all_values(otel.spans()))
    (event,) = span.events
    assert (event.attributes or {})["exception.message"] == str(raised.value).replace(
        OWNER, "<owner>"
    )
    assert "<owner>" in str((event.attributes or {})["exception.stacktrace"])

    otel.exporter.clear()
    trusted = open_ledger(db_url, telemetry=Telemetry(include_owner=True))
    with pytest.raises(cl.BudgetExceededError):
        trusted.conversation(uid, owner=OWNER).request(max_tokens=10, budget=too_small)
    (event,) = otel.span("chatledger.request").events
    assert (event.attributes or {})["exception.message"] == str(raised.value)
