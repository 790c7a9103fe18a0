"""The Responses API request, written once as an operation (sans-IO, as in
:mod:`chatledger.operations`, whose window and budget steps it reuses).

The window is planned on the stored Chat Completions counts, exactly as ``request()`` plans it,
then written as ``input`` items (:mod:`chatledger.responses`). Recording a ``Response`` goes
through ``operations.record``, which reads either shape.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from chatledger import responses, round_trip, spending, window_start
from chatledger.effects import Op
from chatledger.handle import Handle
from chatledger.operations import window
from chatledger.params import conversation_cache_key
from chatledger.rows import Snapshot, StoredMessage
from chatledger.tokens import request_features
from chatledger.window import StrategyArg, Window

__all__ = ["responses_request"]

Tools = Sequence[Mapping[str, Any]] | None
#: the rule family drift reports for requests sent as Responses input
FEATURE = "responses_api"


def _window_and_rows(
    h: Handle, strategy: StrategyArg, tools: Tools, choice: Any, room: int
) -> Op[tuple[Window, list[StoredMessage]]]:
    """``operations.window``, and the stored rows of its kept tail (their metadata holds the
    kept items). The window reads them anyway: this drives it effect by effect and keeps what
    its reads return (the snapshot, or the tail read after it), so no read is added."""
    steps = window(h, strategy, tools, choice, room)
    snap: Snapshot | None = None
    last_rows: list[StoredMessage] = []
    try:
        effect = next(steps)
        while True:
            try:
                result = yield effect
            except Exception as exc:  # the driver's failure: the window decides, as ever
                effect = steps.throw(exc)
                continue
            if isinstance(result, Snapshot):
                snap = result
            elif isinstance(result, list) and all(isinstance(r, StoredMessage) for r in result):
                last_rows = result  # the tail read last, after any fold's read
            effect = steps.send(result)
    except StopIteration as stop:
        w: Window = stop.value
    if w.kept.first is None:
        return w, []
    rows = snap.tail(w.kept.first) if snap is not None else None
    if rows is None:
        rows = last_rows
    return w, [r for r in rows if r.seq >= w.kept.first]


def _kept_items(w: Window, rows: Sequence[StoredMessage]) -> dict[int, Mapping[str, Any]]:
    """Per index of ``w.messages``, the items a kept reply stored beside its message."""
    if w.kept.first is None:
        return {}
    offset = len(w.messages) - w.kept.count  # the kept tail ends the window
    out: dict[int, Mapping[str, Any]] = {}
    for r in rows:
        kept = (r.metadata or {}).get(responses.METADATA_KEY)
        index = offset + r.seq - w.kept.first
        if r.role == "assistant" and isinstance(kept, Mapping) and 0 <= index < len(w.messages):
            out[index] = kept
    return out


def _replayed_reasoning(w: Window, kept: Mapping[int, Mapping[str, Any]]) -> int:
    """Reasoning tokens the request carries again, an estimate: the API keeps the reasoning
    of the current turn (after the last user message) and drops earlier turns'; each item
    counts as the reasoning its response was billed for."""
    users = [i for i, m in enumerate(w.messages) if m.get("role") == "user"]
    last_user = users[-1] if users else -1
    return sum(_int(k.get("reasoning_tokens")) for i, k in kept.items() if i > last_user)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def responses_request(
    h: Handle,
    strategy: StrategyArg,
    tools: Tools,
    budget: Any,
    instructions: bool,
    params: Mapping[str, Any],
) -> Op[tuple[dict[str, Any], int, int | None]]:
    """The kwargs for ``responses.create``, their prompt tokens (estimated) and the budget
    reservation's key: as ``request()``, with the window written as ``input`` items, the kept
    reasoning replayed in place, and the pinned prefix as ``instructions`` if asked."""
    checked = responses.check_params(params)
    if "prompt_cache_key" not in params:  # None given: send none
        checked["prompt_cache_key"] = conversation_cache_key(h.owner, h.id)
    flat = responses.responses_tools(tools)
    counted = responses.chat_tools(flat)
    choice = responses.chat_tool_choice(checked.get("tool_choice"))
    guards = round_trip.budgets_for(h.config, budget)
    room = int(checked.get("max_output_tokens") or 0)
    w, rows = yield from _window_and_rows(h, strategy, counted, choice, room)
    kept = _kept_items(w, rows)
    prompt = w.prompt_tokens + _replayed_reasoning(w, kept)
    features = request_features(w.messages, counted, tool_choice=choice) | {FEATURE}
    h.sent = (prompt, features)
    rid = None
    if guards:
        asked = {"model": h.model, "max_completion_tokens": room}
        allowed, rid = yield from spending.reserve(h, guards, asked, prompt, room)
        cap = allowed.get("max_completion_tokens", allowed.get("max_tokens", room))
        if cap < room:
            checked["max_output_tokens"] = cap
    yield from window_start.remember(h, w)
    out: dict[str, Any] = {"model": h.model, **checked}
    messages: Sequence[Mapping[str, Any]] = w.messages
    if instructions and w.prefix.count:
        out["instructions"] = responses.instructions_text(messages[: w.prefix.count])
        messages = messages[w.prefix.count :]
        kept = {i - w.prefix.count: k for i, k in kept.items()}
    out["input"] = responses.input_items(messages, kept)
    if flat:
        out["tools"] = flat
    return out, prompt, rid
