"""What the store hands back: stored messages and conversation summaries, as plain values."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["ConversationInfo", "StoredMessage"]


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
