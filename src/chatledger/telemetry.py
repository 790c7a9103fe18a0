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
is given ``telemetry=Telemetry(include_owner=True)``; the conversation id always is. An error's
message and stack trace can quote the owner (a budget's refusal, a database's key detail), so
the span records them with the owner blanked out.

Telemetry is a bystander: a fault in it (an SDK span processor or sampler that raises) is
logged and never escapes a public call, nor fails or undoes a write.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
import traceback
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from importlib import metadata
from types import TracebackType
from typing import Any

from chatledger.append_plan import utcnow
from chatledger.effects import Summarize
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


#: the window histogram's buckets, in seconds (the SDK's default ones are meant for ms)
WINDOW_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
#: what stands for the owner in an error's message and stack trace
REDACTED = "<owner>"


class _NoSpan:
    """What stands for a span that could not be opened: it records nothing."""

    __slots__ = ()

    def is_recording(self) -> bool:
        return False


_NO_SPAN = _NoSpan()


@dataclass(frozen=True, slots=True)
class _Instruments:
    """The tracer and the instruments, made once per process from the global providers: the
    API's proxies, which forward to whatever provider is set, even one set later."""

    tracer: Any
    tokens: Any
    cached_tokens: Any
    cost: Any
    window_seconds: Any
    status: Callable[[str], Any]
    set_span_in_context: Any
    attach: Any
    detach: Any

    def open(self, name: str) -> tuple[Any, object]:
        """A started span, and the context token that made it current (None for the API's
        no-op span when no SDK is installed: there is nothing to make current, or to end)."""
        span = self.tracer.start_span(name)
        if not span.is_recording() and not span.get_span_context().is_valid:
            return span, None
        return span, self.attach(self.set_span_in_context(span))

    def close(
        self, span: Any, token: object, error: BaseException | None, owner: str | None
    ) -> None:
        """Make the span's parent current again, note ``error`` (quoting no owner) and end it."""
        if token is None:
            return
        try:
            self.detach(token)
        finally:
            try:
                if isinstance(error, Exception) and span.is_recording():
                    message = _redact(str(error), owner)
                    stack = _redact("".join(traceback.format_exception(error)), owner)
                    quoted = {"exception.message": message, "exception.stacktrace": stack}
                    span.record_exception(error, quoted)
                    span.set_status(self.status(f"{type(error).__name__}: {message}"))
            finally:
                span.end()


def _redact(text: str, owner: str | None) -> str:
    """``text`` with the owner blanked out (as written, and as ``repr`` escapes it)."""
    if not owner:
        return text
    for form in {owner, repr(owner)[1:-1]}:
        text = text.replace(form, REDACTED)
    return text


@functools.cache
def _instruments() -> _Instruments | None:
    """The instruments, or None when ``opentelemetry-api`` is not installed or fails to load
    (tried once: a broken install does not stop a ledger from being made)."""
    try:
        return _make_instruments()
    except ImportError:
        return None
    except Exception:
        logger.warning("telemetry: opentelemetry failed to load; no spans", exc_info=True)
        return None


def _make_instruments() -> _Instruments:
    from opentelemetry import context, metrics, trace

    try:
        version = metadata.version("chatledger")
    except metadata.PackageNotFoundError:  # pragma: no cover - a source checkout
        version = "0"
    meter = metrics.get_meter("chatledger", version)
    window = ("chatledger.window.duration", "s", "Time to build a window")
    try:
        seconds = meter.create_histogram(
            *window, explicit_bucket_boundaries_advisory=WINDOW_BUCKETS
        )
    except TypeError:  # pragma: no cover - an older API, without the advice
        seconds = meter.create_histogram(*window)
    error = trace.StatusCode.ERROR
    return _Instruments(
        tracer=trace.get_tracer("chatledger", version),
        tokens=meter.create_counter(
            "chatledger.usage.tokens", unit="{token}", description="Tokens billed, by model"
        ),
        cached_tokens=meter.create_counter(
            "chatledger.usage.cached_tokens",
            unit="{token}",
            description="Input tokens read from the prompt cache (part of the input tokens)",
        ),
        cost=meter.create_counter(
            "chatledger.usage.cost", unit="USD", description="Cost of the replies recorded"
        ),
        window_seconds=seconds,
        status=lambda text: trace.Status(error, text),
        set_span_in_context=trace.set_span_in_context,
        attach=context.attach,
        detach=context.detach,
    )


class Telemetry:
    """What a ledger reports to OpenTelemetry: ``Ledger(url, telemetry=Telemetry(...))``.

    Options only: a ledger made without one reports with the defaults. ``enabled=False``
    turns this ledger's spans and metrics off. ``include_owner=True`` adds
    ``chatledger.owner`` to spans (and leaves it in error messages); it is off by default
    because owners are often personal data (an e-mail, a customer id), which traces should
    not carry unless asked to.
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
        try:
            return _Operation(self, self._instruments, op, name)
        except Exception:
            logger.warning("telemetry: no span for %s", name, exc_info=True)
            return None

    def summarizing(self, effect: Summarize) -> _Summary | None:
        """A span for one summarizer call (inside the window that asked for it)."""
        if self._instruments is None:
            return None
        return _Summary(self._instruments, effect)  # cannot fail: it only stores its arguments


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
        "_inst",
        "_name",
        "_op",
        "_since",
        "_span",
        "_started",
        "_telemetry",
        "_token",
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
        self._span: Any = _NO_SPAN
        self._token: object = None
        self._since = utcnow() if self._name == "record" else None
        self._started = time.perf_counter()

    @property
    def h(self) -> Handle | None:
        """The conversation the operation works on (None for a ledger's own)."""
        h = self._args.get("h")
        return h if isinstance(h, Handle) else None

    def __enter__(self) -> _Operation:
        try:
            self._span, self._token = self._inst.open(f"chatledger.{self._name}")
            if self._span.is_recording():
                if not self._args:
                    self._args = inspect.getgeneratorlocals(self._op)
                self._span.set_attributes(self._identity())
        except Exception:  # the operation runs all the same, in no span of ours
            logger.warning("telemetry: cannot open a span for %s", self._name, exc_info=True)
            self._span, self._token = self._forget(self._token), None
        self._started = time.perf_counter()
        return self

    def _forget(self, token: object) -> Any:
        """A span that failed to open: its parent made current again; the no-op span."""
        if token is not None:
            self._inst.detach(token)
        return _NO_SPAN

    def _owner(self) -> str | None:
        h = self.h
        owner = h.owner if h is not None else self._args.get("owner")
        return owner if isinstance(owner, str) else None

    def _identity(self) -> dict[str, Any]:
        """The conversation id (and the owner, when asked for) and model, from the
        operation's arguments."""
        attrs: dict[str, Any] = {"chatledger.operation": self._name}
        h = self.h
        cid = h.id if h is not None else self._args.get("cid")
        owner = self._owner()
        if isinstance(cid, str):
            attrs["chatledger.conversation.id"] = cid
            attrs["gen_ai.conversation.id"] = cid
        if owner is not None and self._telemetry.include_owner:
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
        """Time a window, end the span; never raises (``error``, if any, goes on)."""
        try:
            if self._name == "window":
                seconds = time.perf_counter() - self._started
                h = self.h
                attrs = {} if h is None else {"gen_ai.request.model": h.model}
                if error is not None:
                    attrs["error.type"] = type(error).__qualname__
                self._inst.window_seconds.record(seconds, attrs)
        except Exception:
            logger.warning("telemetry: cannot time %s", self._name, exc_info=True)
        try:
            if isinstance(error, Exception) and self._span.is_recording():
                self._span.set_attribute("error.type", type(error).__qualname__)
            owner = None if self._telemetry.include_owner else self._owner()
            self._inst.close(self._span, self._token, error, owner)
        except Exception:
            logger.warning("telemetry: cannot end the span of %s", self._name, exc_info=True)

    def finish(self, result: Any) -> Any:
        """Note what the operation returned; returns it unchanged."""
        try:
            if self._span.is_recording():
                self._describe(result)
            if self._name in ("record", "chat", "regenerate"):
                billed = self._billed(result)
                if billed is not None:
                    self._meter(billed)
        except Exception:  # the call stored what it stored: its result is returned
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
            self._inst.cached_tokens.add(v["cached_tokens"], base)
        if v["cost_micros"] is not None:
            self._inst.cost.add(v["cost_micros"] / 1_000_000, base)


class _Summary:
    """A summarizer call's span: which rounds it folded and whether it gave a summary."""

    __slots__ = ("_effect", "_inst", "_span", "_token")

    def __init__(self, inst: _Instruments, effect: Summarize) -> None:
        self._inst, self._effect = inst, effect
        self._span: Any = _NO_SPAN
        self._token: object = None

    def __enter__(self) -> Callable[[str | None], str | None]:
        try:
            self._span, self._token = self._inst.open("chatledger.summarize")
            if self._span.is_recording():
                self._span.set_attributes(self._attributes())
        except Exception:
            logger.warning("telemetry: cannot open a summarizer span", exc_info=True)
            if self._token is not None:
                self._inst.detach(self._token)
            self._span, self._token = _NO_SPAN, None
        return self._outcome

    def _attributes(self) -> dict[str, Any]:
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
        return attrs

    def _outcome(self, text: str | None) -> str | None:
        try:
            if self._span.is_recording():
                self._span.set_attribute("chatledger.summary.failed", text is None)
                if text is None:  # the window went on without it: an error of this span only
                    self._span.set_status(self._inst.status("the summarizer failed"))
        except Exception:
            logger.warning("telemetry: cannot describe a summarizer call", exc_info=True)
        return text

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self._inst.close(self._span, self._token, error, None)
        except Exception:
            logger.warning("telemetry: cannot end a summarizer span", exc_info=True)
