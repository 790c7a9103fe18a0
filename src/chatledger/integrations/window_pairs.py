"""What every framework adapter reads and repairs: a window with each message's stored
metadata (the framework's own fields live there), and closers for tool calls a failed run left
open. Framework-free, so each adapter imports it without the others' packages."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from chatledger.conversation import AsyncConversation, Conversation
from chatledger.errors import PendingToolCallsError
from chatledger.rows import StoredMessage
from chatledger.window import StrategyArg

__all__ = [
    "UNANSWERED",
    "Pair",
    "awindow_pairs",
    "close_unanswered",
    "message_digest",
    "stored_pairs",
    "window_pairs",
]

#: a stored message and its metadata
Pair = tuple[dict[str, Any], dict[str, Any] | None]
#: the content of a tool message closing a call that never got its result
UNANSWERED = "[no result was recorded for this tool call]"


def message_digest(message: Mapping[str, Any]) -> str:
    """What tells an edited message from the one an adapter's kept fields were written with
    (the store leaves out a null ``content``, so nulls do not count)."""
    fields = {k: v for k, v in message.items() if v is not None}
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stored_pairs(records: Sequence[StoredMessage]) -> list[Pair]:
    """Stored messages with their metadata."""
    return [(r.message, r.metadata) for r in records]


def window_pairs(conv: Conversation, strategy: StrategyArg) -> list[Pair]:
    """The window with each message's metadata (``Window.rows``); while tool calls wait for
    results there is no window: the pinned prefix and the round they are in."""
    try:
        w = conv.window(strategy, explain=True)
    except PendingToolCallsError:
        info = conv.info
        opened = conv.records(stop=info.prefix_seq + 1) if info.prefix_seq else []
        tail = conv.records(start=max(info.last_round_seq, info.prefix_seq + 1))
        return stored_pairs([*opened, *tail])
    return [(m, r.metadata if r is not None else None) for m, r in w.rows()]


async def awindow_pairs(conv: AsyncConversation, strategy: StrategyArg) -> list[Pair]:
    """The async twin of :func:`window_pairs`."""
    try:
        w = await conv.window(strategy, explain=True)
    except PendingToolCallsError:
        info = conv.info
        opened = await conv.records(stop=info.prefix_seq + 1) if info.prefix_seq else []
        tail = await conv.records(start=max(info.last_round_seq, info.prefix_seq + 1))
        return stored_pairs([*opened, *tail])
    return [(m, r.metadata if r is not None else None) for m, r in w.rows()]


def close_unanswered(pending: Sequence[str], pairs: list[Pair]) -> list[Pair]:
    """``pairs`` with tool messages closing the calls still open (a run that failed inside a
    tool) ahead of the first message that is not a tool result, as the API requires; the
    closers carry no metadata, so the framework reads them as plain tool results."""
    lead = 0
    while lead < len(pairs) and pairs[lead][0].get("role") == "tool":
        lead += 1
    if not pending or lead == len(pairs):
        return pairs
    answered = {m.get("tool_call_id") for m, _ in pairs[:lead]}
    closers: list[Pair] = [
        ({"role": "tool", "tool_call_id": c, "content": UNANSWERED}, None)
        for c in pending
        if c not in answered
    ]
    return [*pairs[:lead], *closers, *pairs[lead:]]
