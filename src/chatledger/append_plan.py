"""Planning an append: seqs, running totals, round markers, the prefix end and tool pairing.

Pure: the store calls it inside the transaction with the state it locked, and the handle calls
it with the state it last saw, so both paths apply the same rules to the same numbers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from chatledger.errors import Problem
from chatledger.rows import Prepared, State, StoredMessage
from chatledger.tool_state import ToolCallState

__all__ = ["PREFIX_ROLES", "AppendPlan", "batch_key", "plan_append", "utcnow"]

PREFIX_ROLES = ("system", "developer")


def utcnow() -> datetime:
    return datetime.now(UTC)


def batch_key(key: str, i: int) -> str:
    """The stored idempotency key of the ``i``-th message of a keyed batch.

    Caller keys may not contain ``\\x1f`` (a control character), so ``k\\x1f1`` can never be
    a caller's key, and no caller key collides with another batch's internal one.
    """
    return key if i == 0 else f"{key}\x1f{i}"


@dataclass(slots=True)
class AppendPlan:
    """What an append writes: message rows (content not yet encoded), the records it returns,
    the conversation's state after it, and any problem that forbids it."""

    rows: list[dict[str, Any]]
    stored: list[StoredMessage]
    after: State
    now: datetime
    problems: list[Problem]


def plan_append(pk: int, before: State, batch: Sequence[Prepared], key: str | None) -> AppendPlan:
    """Seqs, running totals, rounds and pairing for ``batch`` after ``before``: no I/O."""
    now = utcnow()
    tools = ToolCallState.from_json(before.tool_state)
    problems: list[Problem] = []
    seq, cum = before.last_seq, before.token_total
    round_seq, prefix_seq = before.last_round_seq, before.prefix_seq
    rows: list[dict[str, Any]] = []
    out: list[StoredMessage] = []
    for i, p in enumerate(batch):
        msg = p.message
        role = msg["role"]
        if tools.calls or role == "tool" or "tool_calls" in msg:
            # with no call open, any other message leaves the pairing as it is (a long
            # history is mostly such messages)
            tools.feed(msg, i, problems, seq + 1)
        seq += 1
        cum += p.tokens
        if role == "user":
            round_seq = seq
        if prefix_seq == seq - 1 and role in PREFIX_ROLES:
            prefix_seq = seq
        ikey = None if key is None else batch_key(key, i)
        rows.append(
            {
                "conversation_pk": pk,
                "seq": seq,
                "role": role,
                "data": p.data,
                "tokens": p.tokens,
                "cum_tokens": cum,
                "round_seq": round_seq,
                "created_at": now,
                "status": p.status,
                "meta": p.meta,
                "idempotency_key": ikey,
            }
        )
        out.append(
            StoredMessage(
                seq=seq,
                role=role,
                message=p.message,
                tokens=p.tokens,
                cumulative_tokens=cum,
                round_seq=round_seq,
                created_at=now,
                status=p.status,
                metadata=None if p.meta is None else json.loads(p.meta),
                idempotency_key=ikey,
            )
        )
    after = State(
        seq,
        cum,
        before.message_count + len(rows),
        round_seq,
        prefix_seq,
        tools.to_json(),
        before.revision,
    )
    return AppendPlan(rows, out, after, now, problems)
