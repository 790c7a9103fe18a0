"""The value types shared by the store and the layers above it.

The public ones (``StoredMessage``, ``ConversationInfo``, ``UsageRecord``, ``UsageTotals``) are
what calls return. The rest carry a write or a read between the I/O-free planning code and the
store, so that neither has to import the other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

__all__ = [
    "Appended",
    "ConversationInfo",
    "Entry",
    "Loaded",
    "Lookback",
    "NewConversation",
    "Prepared",
    "Snapshot",
    "State",
    "StoredMessage",
    "UsageRecord",
    "UsageTotals",
]


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
    #: a fork's parent conversation (its id) and the last seq they share; None otherwise
    parent: str | None = None
    forked_at: int | None = None
    #: where the window last sent started (kept for strategies that hold it still)
    window_start: int | None = None
    #: bumped by every edit of the history (not by appends): with ``last_seq``, a version
    revision: int = 0


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
    #: prompt tokens written to the provider's cache, where it reports them (None: not said)
    cache_write_tokens: int | None = None

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


@dataclass(frozen=True, slots=True)
class Entry:
    """One stored message as strategies see it: no content, just its place and cost."""

    seq: int
    role: str
    tokens: int
    #: seq of the user message that opened its round (0 before the first user message)
    round_seq: int


@dataclass(frozen=True, slots=True)
class Lookback:
    """How much of the newest history a strategy may keep, so that only that much is read.

    ``tokens``: at most this many tokens of tail; ``rounds``: at most this many rounds. Both
    None means unbounded: the whole history after the prefix is read (the default for a
    strategy that does not say).
    """

    tokens: int | None = None
    rounds: int | None = None
    #: needs nothing of its own: reads what the other strategies of the chain read (a
    #: strategy that rewrites kept messages and never cuts)
    passive: bool = False

    @property
    def unbounded(self) -> bool:
        return self.tokens is None and self.rounds is None


@dataclass(frozen=True, slots=True)
class Prepared:
    """A message checked, serialised and counted before the transaction opens."""

    message: dict[str, Any]
    data: str
    tokens: int
    meta: str | None = None
    status: str | None = None


@dataclass(frozen=True, slots=True)
class NewConversation:
    """A conversation row to insert, checked and with its counting profile chosen."""

    id: str
    owner: str | None
    model: str
    encoding: str
    token_profile: str
    title: str | None
    meta: str | None


@dataclass(frozen=True, slots=True)
class State:
    """A conversation's running state as a handle last saw it (the row's append columns)."""

    last_seq: int
    token_total: int
    message_count: int
    last_round_seq: int
    prefix_seq: int
    tool_state: str | None
    #: the conversation's edit revision (see ConversationInfo.revision)
    revision: int = 0


@dataclass(frozen=True, slots=True)
class Appended:
    """What an append stored, and the conversation's state right after it (None: a replay)."""

    stored: list[StoredMessage]
    state: State | None = None

    @property
    def replayed(self) -> bool:
        return self.state is None


@dataclass(frozen=True, slots=True)
class Loaded:
    """A conversation row as a handle keeps it."""

    pk: int
    info: ConversationInfo
    tool_state: str | None
    token_profile: str = ""

    @property
    def state(self) -> State:
        i = self.info
        return State(
            i.last_seq,
            i.token_total,
            i.message_count,
            i.last_round_seq,
            i.prefix_seq,
            self.tool_state,
            i.revision,
        )


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a window is built from, read in one connection with every range bounded by the
    conversation row's ``last_seq`` (messages appended meanwhile wait for the next turn)."""

    loaded: Loaded
    prefix: list[StoredMessage]
    summary: tuple[int, str] | None
    entries: list[Entry]
    start: int
    start_tokens: int
    rows_read: int
    #: the raw rows behind ``entries`` when the lookback was bounded (decoded on demand)
    rows: Sequence[Any] | None = None
    decode: Callable[[Any], StoredMessage] | None = None

    def tail(self, start: int) -> list[StoredMessage] | None:
        """The stored messages from ``start`` on, if this snapshot read them already."""
        if self.rows is None or self.decode is None:
            return None
        decode = self.decode
        return [decode(r) for r in self.rows if r[0] >= start]
