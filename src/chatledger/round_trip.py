"""The I/O-free half of a round trip: request parameters, budgets, reply parsing and usage."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from chatledger.budgets import Budget, Spend
from chatledger.completions import Reply, parse_completion
from chatledger.config import LedgerConfig
from chatledger.errors import InvalidArgumentError, InvalidParameterError
from chatledger.params import validate_params
from chatledger.responses import is_response, parse_response
from chatledger.rows import StoredMessage, UsageRecord
from chatledger.tokens import TokenCounter

__all__ = [
    "Estimate",
    "Recorded",
    "budgets_for",
    "completion_room",
    "parse_reply",
    "request_params",
    "usage_values",
    "user_message",
]


@dataclass(frozen=True, slots=True)
class Recorded:
    """What ``record`` stored: the reply's message (None if the response had none) and the
    usage row it was billed under."""

    message: StoredMessage | None
    usage: UsageRecord


@dataclass(frozen=True, slots=True)
class Estimate:
    """What a request can cost at most, before it is sent: its exact prompt tokens, the
    completion tokens it allows (``max_tokens`` times ``n``), and the price of both (None for a
    model without a price)."""

    model: str
    prompt_tokens: int
    max_completion_tokens: int
    max_cost_micros: int | None

    @property
    def max_cost_usd(self) -> Decimal | None:
        if self.max_cost_micros is None:
            return None
        return Decimal(self.max_cost_micros) / 1_000_000


def estimate(config: LedgerConfig, kwargs: Mapping[str, Any]) -> Estimate:
    """Price request ``kwargs`` (as ``request`` returns them) before sending them."""
    from chatledger.tokens import count_tokens

    model = kwargs.get("model")
    if not isinstance(model, str) or "messages" not in kwargs:
        raise InvalidArgumentError("kwargs", "must hold model and messages, as request() returns")
    prompt = count_tokens(
        kwargs["messages"], model, kwargs.get("tools"), tool_choice=kwargs.get("tool_choice")
    )
    room = completion_room(kwargs)
    return Estimate(model, prompt, room, config.prices.estimate_micros(model, prompt, room))


def user_message(message: object) -> object:
    """``chat("text")`` means a user message; anything else is a message as given."""
    return {"role": "user", "content": message} if isinstance(message, str) else message


def request_params(
    model: str, tools: Sequence[Mapping[str, Any]] | None, params: Mapping[str, Any]
) -> dict[str, Any]:
    """Check the request's parameters before anything is read or sent."""
    if "messages" in params:
        raise InvalidParameterError(
            [("messages", "is built by the conversation: append messages instead")]
        )
    merged: dict[str, Any] = {"model": model, **params}
    if tools is not None and not isinstance(tools, (list, tuple)):
        raise InvalidParameterError([("tools", "must be a list of tool definitions")])
    if tools:
        merged["tools"] = list(tools)
    return validate_params(merged)


def completion_room(params: Mapping[str, Any]) -> int:
    """Tokens a request may generate, as far as its parameters say (0 when they do not)."""
    room = params.get("max_completion_tokens") or params.get("max_tokens") or 0
    return int(room) * int(params.get("n") or 1)


def budgets_for(config: LedgerConfig, budget: Budget | Sequence[Budget] | None) -> list[Budget]:
    extra: list[Budget] = []
    if isinstance(budget, Budget):
        extra = [budget]
    elif budget is not None:
        extra = list(budget)
        for i, b in enumerate(extra):
            if not isinstance(b, Budget):
                raise InvalidArgumentError(f"budget[{i}]", "must be a chatledger.Budget")
    return [*config.budgets, *extra]


def needed_spend(config: LedgerConfig, model: str, prompt_tokens: int, room: int) -> Spend:
    micros = config.prices.estimate_micros(model, prompt_tokens, room)
    return Spend(prompt_tokens + room, micros)


def parse_reply(
    completion: object,
    choice: int,
    counter: TokenCounter,
    prompt_tokens: int | None,
) -> Reply:
    """Parse a chat completion or a Responses API ``Response``; fill in an estimate where
    the API reported no usage."""
    if is_response(completion):
        reply = parse_response(completion)
    else:
        reply = parse_completion(completion, choice=choice)
    if reply.usage.estimated:
        from dataclasses import replace

        text = ""
        if reply.message is not None:
            text = json.dumps(reply.message, ensure_ascii=False)
        reply = replace(
            reply,
            usage=replace(
                reply.usage,
                prompt_tokens=prompt_tokens or 0,
                completion_tokens=counter.text(text) if text else 0,
                extra={**reply.usage.extra, "usage": "estimated"},
            ),
        )
    return reply


def usage_values(
    config: LedgerConfig,
    reply: Reply,
    fallback_model: str,
    sent: tuple[int, frozenset[str]] | None = None,
) -> dict[str, Any]:
    """The usage row for a reply, with its cost from the ledger's price table, and the
    pre-send count with the request's rule families next to the billed figure."""
    u = reply.usage
    model = u.model or fallback_model
    cost = config.prices.cost_micros(
        model,
        prompt_tokens=u.prompt_tokens,
        completion_tokens=u.completion_tokens,
        cached_tokens=min(u.cached_tokens, u.prompt_tokens),
        cache_write_tokens=u.cache_write_tokens or 0,
    )
    meta = dict(u.extra)
    if reply.dropped_tool_calls:
        meta["dropped_tool_calls"] = reply.dropped_tool_calls
    if sent is not None and not u.estimated:
        meta["counted"] = sent[0]
        meta["features"] = sorted(sent[1])
    return {
        "model": model[:128],
        "response_id": (u.response_id or None) and str(u.response_id)[:255],
        "system_fingerprint": (u.system_fingerprint or None) and str(u.system_fingerprint)[:255],
        "finish_reason": (u.finish_reason or None) and str(u.finish_reason)[:32],
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "cached_tokens": u.cached_tokens,
        "reasoning_tokens": u.reasoning_tokens,
        "cache_write_tokens": u.cache_write_tokens,
        "cost_micros": cost,
        "meta": json.dumps(meta, ensure_ascii=False, separators=(",", ":")) if meta else None,
    }


def message_metadata(given: Mapping[str, Any] | None, reply: Reply) -> Mapping[str, Any] | None:
    """The stored reply's metadata: the caller's, and what the reply keeps beside its message
    (a Responses reply's reasoning items) under its own key."""
    if reply.metadata is None:
        return given
    return {**(given or {}), **reply.metadata}


def record_key(reply: Reply, idempotency_key: str | None) -> str | None:
    """A response is recorded once: its id is the natural idempotency key."""
    if idempotency_key is not None:
        return idempotency_key
    rid = reply.usage.response_id
    return f"response:{rid}"[:200] if rid else None
