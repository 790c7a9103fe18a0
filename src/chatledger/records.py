"""What the store hands back: stored messages and conversation summaries, as plain values."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

__all__ = ["ConversationInfo", "StoredMessage", "UsageRecord", "UsageTotals"]


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One stored message with its place and its token accounting.

    ``message`` is the API dict; ``tokens`` is its share of a request's prompt tokens for the
    conversation's model (per-message overhead included) and ``cumulative_tokens`` the sum of
    ``tokens`` up to and including it. ``round_seq`` is the seq of the user message that opened
    its round (0 before the first user message).
    """

    seq: int
    role: str
    message: dict[str, Any]
    tokens: int
    cumulative_tokens: int
    round_seq: int
    created_at: datetime
    status: str | None = None
    metadata: dict[str, Any] | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class ConversationInfo:
    """A conversation's row: identity, model and running totals, read in one query."""

    id: str
    owner: str | None
    model: str
    encoding: str
    title: str | None
    metadata: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    message_count: int
    token_total: int
    last_seq: int
    prefix_seq: int
    last_round_seq: int
    pending_tool_calls: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One response in the usage ledger: what the API billed for it, and what that cost.

    ``cost_micros`` is in millionths of a dollar (None when the model has no known price);
    ``estimated`` marks usage the API did not report (a stream that broke off).
    """

    message_seq: int | None
    model: str
    response_id: str | None
    system_fingerprint: str | None
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    cost_micros: int | None
    created_at: datetime
    metadata: dict[str, Any] | None = None

    @property
    def cost_usd(self) -> Decimal | None:
        return None if self.cost_micros is None else Decimal(self.cost_micros) / 1_000_000


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """Usage summed over a conversation, an owner or everything, within a period."""

    requests: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    cost_micros: int
    #: responses whose model had no price (their cost is not in ``cost_micros``)
    unpriced: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def cost_usd(self) -> Decimal:
        return Decimal(self.cost_micros) / 1_000_000
