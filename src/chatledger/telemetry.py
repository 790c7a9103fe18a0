"""OpenTelemetry spans and metrics for a ledger's operations (the ``chatledger[otel]`` extra).

Every public call of a ledger or a conversation is one operation handed to a driver, so the
drivers are the one place that opens a span (``chatledger.<method>``) and reads its outcome.
Spans and instruments come from the *global* tracer and meter providers: configure the
OpenTelemetry SDK as usual and chatledger reports into it, with no setup call of its own.

Without ``opentelemetry-api`` nothing is imported again after the first try and a call costs
one attribute check. Without an SDK the API's no-op spans are started and not made current:
span attributes are computed only for a span that records (the counters' figures are read
for records and turns, which the meter provider may want although no span is sampled).

A span reads the conversation from the operation's arguments (a generator not yet started
holds exactly those as its locals): the handle is ``h``, a ledger's conversation id ``cid``
and its owner ``owner`` (``tests/test_telemetry.py`` checks the operations keep to that).

Owners are often e-mail addresses or customer ids, so they are never emitted unless a ledger
is given ``telemetry=Telemetry(include_owner=True)``; the conversation id always is.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from importlib import metadata
from types import TracebackType
from typing import Any

from chatledger.append_plan import utcnow
from chatledger.effects import Summarize
from chatledger.errors import ChatLedgerError
from chatledger.handle import Handle
from chatledger.round_trip import Recorded, parse_reply, usage_values
from chatledger.rows import StoredMessage, UsageRecord
from chatledger.window import Window

__all__ = ["Telemetry"]

logger = logging.getLogger("chatledger")

#: what every request, record and chat reports as ``gen_ai.provider.name``
PROVIDER = "openai"
#: operations whose span name is not the operation's own name: the public method's
_PUBLIC_NAMES = {
    "get_or_create": "conversation",
    "list_conversations": "conversations",
    "delete_by_id": "delete",
    "ledger_usage": "usage",
    "usage_totals": "usage",
    "read": "records",
}
#: operations whose arguments the metrics need, sampled or not
_METERED = frozenset({"window", "record", "chat", "regenerate"})
#: the request parameters that cap a reply, Chat Completions' and the Responses API's
_LIMITS = ("max_completion_tokens", "max_tokens", "max_output_tokens")


@dataclass(frozen=True, slots=True)
class _Instruments:
    """The tracer and the instruments, made once per process from the global providers (a
    proxy that forwards to whatever SDK is installed later)."""

    tracer: Any
    tokens: Any
    cost: Any
    window_seconds: Any
    status_error: Any
    use_span: Any

    def open(self, name: str) -> tuple[Any, Any]:
        """A started span, and the context manager that makes it current (None for the API's
        no-op span when no SDK is installed: there is nothing to make current, or to end)."""
        span = self.tracer.start_span(name)
        if not span.is_recording() and not span.get_span_context().is_valid:
            return span, None
        current = self.use_span(
            span, end_on_exit=True, record_exception=True, set_status_on_exception=True
        )
        current.__enter__()
        return span, current


@functools.cache
def _instruments() -> _Instruments | None:
    """The instruments, or None when ``opentelemetry-api`` is not installed (tried once)."""
    try:
        from opentelemetry import metrics, trace
    except ImportError:
        return None
    try:
        version = metadata.version("chatledger")
    except metadata.PackageNotFoundError:  # pragma: no cover - a source checkout
        version = "0"
    meter = metrics.get_meter("chatledger", version)
    return _Instruments(
        tracer=trace.get_tracer("chatledger", version),
        tokens=meter.create_counter(
            "chatledger.usage.tokens", unit="{token}", description="Tokens billed, by model"
        ),
        cost=meter.create_counter(
            "chatledger.usage.cost", unit="USD", description="Cost of the replies recorded"
        ),
        window_seconds=meter.create_histogram(
            "chatledger.window.duration", unit="s", description="Time to build a window"
        ),
        status_error=trace.StatusCode.ERROR,
        use_span=trace.use_span,
    )


class Telemetry:
    """What a ledger reports to OpenTelemetry: ``Ledger(url, telemetry=Telemetry(...))``.

    ``enabled=False`` turns this ledger's spans and metrics off. ``include_owner=True`` adds
    ``chatledger.owner`` to spans; it is off by default because owners are often personal
    data (an e-mail, a customer id), which traces should not carry unless asked to.
    """

    __slots__ = ("_enabled", "_include_owner", "_instruments")

    def __init__(self, *, enabled: bool = True, include_owner: bool = False) -> None:
        self._enabled = bool(enabled)
        self._include_owner = bool(include_owner)
        self._instruments = _instruments() if self._enabled else None

    @property
    def enabled(self) -> bool:
        return self._enabled

    @property
    def include_owner(self) -> bool:
        return self._include_owner

    def __repr__(self) -> str:
        return f"Telemetry(enabled={self.enabled}, include_owner={self.include_owner})"

    def operation(self, op: Generator[Any, Any, Any], name: str | None) -> _Operation | None:
        """A span for one operation (``name`` overrides the operation's own), or None when
        nothing is emitted: the driver then runs the operation bare."""
        if self._instruments is None:
            return None
        return _Operation(self, self._instruments, op, name)

    def summarizing(self, effect: Summarize) -> _Summary | None:
        """A span for one summarizer call (inside the window that asked for it)."""
        if self._instruments is None:
            return None
        return _Summary(self._instruments, effect)


def _items(items: object) -> int:
    """How many messages (or Responses input items) a request carries."""
    return len(items) if isinstance(items, list) else int(items is not None)


def _billed_values(u: UsageRecord) -> dict[str, Any]:
    """A usage row's figures under the keys of ``round_trip.usage_values``."""
    keys = ("model", "response_id", "finish_reason", "prompt_tokens", "completion_tokens")
    more = ("cached_tokens", "reasoning_tokens", "cache_write_tokens", "cost_micros")
    return {k: getattr(u, k) for k in (*keys, *more)}


def _usage_attributes(v: Mapping[str, Any]) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": PROVIDER,
        "gen_ai.response.model": v["model"],
        "gen_ai.usage.input_tokens": v["prompt_tokens"],
        "gen_ai.usage.output_tokens": v["completion_tokens"],
        "gen_ai.usage.cache_read.input_tokens": v["cached_tokens"],
        "gen_ai.usage.reasoning.output_tokens": v["reasoning_tokens"],
    }
    if v["cache_write_tokens"] is not None:
        attrs["gen_ai.usage.cache_creation.input_tokens"] = v["cache_write_tokens"]
    if v["response_id"] is not None:
        attrs["gen_ai.response.id"] = v["response_id"]
    if v["finish_reason"] is not None:
        attrs["gen_ai.response.finish_reasons"] = (v["finish_reason"],)
    if v["cost_micros"] is not None:
        attrs["chatledger.cost_usd"] = v["cost_micros"] / 1_000_000
    return attrs


def _window_attributes(w: Window) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "gen_ai.request.model": w.model,
        "chatledger.window.prompt_tokens": w.prompt_tokens,
        "chatledger.window.messages": len(w.messages),
        "chatledger.window.kept.messages": w.kept.count,
        "chatledger.window.dropped.messages": w.dropped.count,
        "chatledger.window.summarized.messages": w.summarized.count,
        "chatledger.window.rows_read": w.rows_read,
        "chatledger.window.held": w.held,
        "chatledger.window.predicted_cached_tokens": w.predicted_cached_tokens,
    }
    for part, span in (("kept", w.kept), ("dropped", w.dropped), ("summarized", w.summarized)):
        if span.tokens is not None:
            attrs[f"chatledger.window.{part}.tokens"] = span.tokens
    if w.kept.first is not None:
        attrs["chatledger.window.kept.first"] = w.kept.first
    if w.allowed is not None:
        attrs["chatledger.window.allowed"] = w.allowed
    if w.summary is not None:
        attrs["chatledger.window.summary.tokens"] = w.summary.tokens
    return attrs


class _Operation:
    """One operation's span: opened before it runs, given its outcome when it returns.

    Metrics do not depend on the span being sampled: the operations that feed them (windows,
    records, turns) read their arguments whether or not the span records."""

    __slots__ = (
        "_args",
        "_cm",
        "_inst",
        "_name",
        "_op",
        "_since",
        "_span",
        "_started",
        "_telemetry",
    )

    def __init__(
        self,
        telemetry: Telemetry,
        inst: _Instruments,
        op: Generator[Any, Any, Any],
        name: str | None,
    ) -> None:
        self._telemetry, self._inst = telemetry, inst
        own = getattr(op, "__name__", "operation")
        self._name = name or _PUBLIC_NAMES.get(own, own)
        self._args: Mapping[str, Any] = {}
        if self._name in _METERED:
            self._args = inspect.getgeneratorlocals(op)
        self._op = op

    @property
    def h(self) -> Handle | None:
        """The conversation the operation works on (None for a ledger's own)."""
        h = self._args.get("h")
        return h if isinstance(h, Handle) else None

    def __enter__(self) -> _Operation:
        self._span, self._cm = self._inst.open(f"chatledger.{self._name}")
        if self._span.is_recording():
            if not self._args:
                self._args = inspect.getgeneratorlocals(self._op)
            self._span.set_attributes(self._identity())
        self._since = utcnow() if self._name == "record" else None
        self._started = time.perf_counter()
        return self

    def _identity(self) -> dict[str, Any]:
        """The conversation id (and the owner, when asked for) and model, from the
        operation's arguments."""
        attrs: dict[str, Any] = {"chatledger.operation": self._name}
        h = self.h
        cid = h.id if h is not None else self._args.get("cid")
        owner = h.owner if h is not None else self._args.get("owner")
        if isinstance(cid, str):
            attrs["chatledger.conversation.id"] = cid
            attrs["gen_ai.conversation.id"] = cid
        if isinstance(owner, str) and self._telemetry.include_owner:
            attrs["chatledger.owner"] = owner
        if h is not None:
            attrs["gen_ai.request.model"] = h.model
        return attrs

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._name == "window":
            seconds = time.perf_counter() - self._started
            h = self.h
            attrs = {} if h is None else {"gen_ai.request.model": h.model}
            if error is not None:
                attrs["error.type"] = type(error).__qualname__
            self._inst.window_seconds.record(seconds, attrs)
        if isinstance(error, ChatLedgerError) and self._span.is_recording():
            self._span.set_attribute("error.type", type(error).__qualname__)
        if self._cm is not None:  # records the exception, status ERROR, ends the span
            self._cm.__exit__(kind, error, tb)

    def finish(self, result: Any) -> Any:
        """Note what the operation returned; returns it unchanged."""
        try:
            if self._span.is_recording():
                self._describe(result)
            if self._name in ("record", "chat", "regenerate"):
                billed = self._billed(result)
                if billed is not None:
                    self._meter(billed)
        except Exception:  # pragma: no cover - a bug here must not fail a stored call
            logger.warning("telemetry: cannot describe %s", self._name, exc_info=True)
        return result

    def _describe(self, result: Any) -> None:
        span, name = self._span, self._name
        if name in ("append", "extend") and isinstance(result, list):
            stored = [r for r in result if isinstance(r, StoredMessage)]
            span.set_attribute("chatledger.messages.count", len(stored))
            span.set_attribute("chatledger.messages.tokens", sum(r.tokens for r in stored))
            if stored:
                span.set_attribute("chatledger.messages.last_seq", stored[-1].seq)
        elif isinstance(result, Window):
            span.set_attributes(_window_attributes(result))
        elif name in ("request", "responses_request") and isinstance(result, tuple):
            kwargs, prompt, reservation = result[:3]
            limit = next((kwargs[k] for k in _LIMITS if k in kwargs), None)
            attrs = {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": PROVIDER,
                "gen_ai.request.model": kwargs.get("model", ""),
                "chatledger.request.prompt_tokens": prompt,
                "chatledger.request.messages": _items(kwargs.get("messages", kwargs.get("input"))),
                "chatledger.request.reserved": reservation is not None,
            }
            if isinstance(limit, int):
                attrs["gen_ai.request.max_tokens"] = limit
            span.set_attributes(attrs)
        elif isinstance(result, Recorded):
            if result.message is not None:
                span.set_attribute("chatledger.messages.last_seq", result.message.seq)
        elif name in ("chat", "regenerate"):
            span.set_attributes(
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": PROVIDER,
                    "chatledger.request.prompt_tokens": result.prompt_tokens,
                    "chatledger.chat.stream": result.stream,
                }
            )

    def _billed(self, result: Any) -> Mapping[str, Any] | None:
        """The usage a record or a turn stored, None if it stored none this time (a stream
        is recorded, with its own span, when it ends; a response recorded again is not
        billed again)."""
        if isinstance(result, Recorded):
            u = result.usage
            replayed = self._since is not None and u.created_at < self._since
            return None if replayed else _billed_values(u)
        h = self.h
        if result.stream or h is None:
            return None
        choice = self._args.get("choice", 0)
        reply = parse_reply(result.response, choice, h.counter, result.prompt_tokens)
        return usage_values(h.config, reply, h.model)

    def _meter(self, v: Mapping[str, Any]) -> None:
        """A recorded reply: its usage on the span, its tokens and cost on the counters."""
        if self._span.is_recording():
            self._span.set_attributes(_usage_attributes(v))
        base = {"gen_ai.provider.name": PROVIDER, "gen_ai.response.model": v["model"]}
        tokens = self._inst.tokens
        tokens.add(v["prompt_tokens"], {**base, "gen_ai.token.type": "input"})
        tokens.add(v["completion_tokens"], {**base, "gen_ai.token.type": "output"})
        if v["cached_tokens"]:
            tokens.add(v["cached_tokens"], {**base, "gen_ai.token.type": "cache_read"})
        if v["cost_micros"] is not None:
            self._inst.cost.add(v["cost_micros"] / 1_000_000, base)


class _Summary:
    """A summarizer call's span: which rounds it folded and whether it gave a summary."""

    __slots__ = ("_cm", "_effect", "_inst", "_span")

    def __init__(self, inst: _Instruments, effect: Summarize) -> None:
        self._inst, self._effect = inst, effect

    def __enter__(self) -> Callable[[str | None], str | None]:
        self._span, self._cm = self._inst.open("chatledger.summarize")
        span = self._span
        if span.is_recording():
            req = self._effect.request
            attrs: dict[str, Any] = {
                "chatledger.conversation.id": self._effect.conversation_id,
                "gen_ai.conversation.id": self._effect.conversation_id,
                "chatledger.summary.from_seq": req.from_seq,
                "chatledger.summary.upto_seq": req.upto_seq,
                "chatledger.summary.messages": len(self._effect.messages),
            }
            model = getattr(req.strategy.summarizer, "model", None)
            if isinstance(model, str):
                attrs["gen_ai.request.model"] = model
            span.set_attributes(attrs)
        return self._outcome

    def _outcome(self, text: str | None) -> str | None:
        if self._span.is_recording():
            self._span.set_attribute("chatledger.summary.failed", text is None)
            if text is None:  # the window went on without it: an error of this span only
                self._span.set_status(self._inst.status_error, "the summarizer failed")
        return text

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._cm is not None:
            self._cm.__exit__(kind, error, tb)
