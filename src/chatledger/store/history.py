"""Statements that edit history: cut a conversation after a seq, copy its prefix to a fork,
and rewrite its pinned prefix. Each runs under the conversation lock an append takes."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, select, update

from chatledger.append_plan import utcnow
from chatledger.rows import Loaded, Prepared, StoredMessage
from chatledger.store.conversations import load_conversation, lock_conversation
from chatledger.store.mapping import codec_of
from chatledger.store.messages import read_messages
from chatledger.store.schema import completions, conversations, messages, summaries
from chatledger.tool_state import ToolCallState

__all__ = [
    "copy_prefix",
    "cut_after",
    "replace_message",
    "role_at",
    "round_start",
    "set_lineage",
    "state_at",
]

_c = conversations.c
_m = messages.c


def state_at(conn: Connection, pk: int, upto: int, prefix_seq: int) -> dict[str, Any]:
    """The conversation row's running state had its history ended at seq ``upto``: totals
    from that row, the tool calls still open replayed from the start of its round."""
    if upto == 0:
        return {
            "last_seq": 0,
            "token_total": 0,
            "message_count": 0,
            "last_round_seq": 0,
            "prefix_seq": 0,
            "tool_state": None,
        }
    last = read_messages(conn, pk, upto, upto + 1, None)[0]
    tools = ToolCallState()
    # a user message can only come when no call is open, so the round's start is a clean slate
    for m in read_messages(conn, pk, max(last.round_seq, 1), upto + 1, None):
        tools.feed(m.message, None, [], m.seq)
    return {
        "last_seq": upto,
        "token_total": last.cumulative_tokens,
        "message_count": upto,
        "last_round_seq": last.round_seq,
        "prefix_seq": min(prefix_seq, upto),
        "tool_state": tools.to_json(),
    }


def cut_after(conn: Connection, pk: int, shown_as: str, upto: int) -> list[StoredMessage]:
    """Remove every message after seq ``upto`` (oldest first in the result), with the
    summaries that cover any of them. Usage rows stay (they are what was billed), detached
    from the removed messages. The conversation row is locked first."""
    lock_conversation(conn, pk, shown_as)
    row = load_conversation(conn, pk, shown_as)
    if upto >= row.info.last_seq:
        return []
    removed = read_messages(conn, pk, upto + 1, None, None)
    state = state_at(conn, pk, upto, row.info.prefix_seq)
    conn.execute(delete(messages).where(_m.conversation_pk == pk, _m.seq > upto))
    conn.execute(
        delete(summaries).where(summaries.c.conversation_pk == pk, summaries.c.upto_seq > upto)
    )
    conn.execute(
        update(completions)
        .where(completions.c.conversation_pk == pk, completions.c.message_seq > upto)
        .values(message_seq=None)
    )
    conn.execute(
        update(conversations)
        .where(_c.pk == pk)
        .values(**state, revision=_c.revision + 1, updated_at=utcnow())
    )
    return removed


_COPIED = ("seq", "role", "data", "tokens", "cum_tokens", "round_seq", "created_at", "status")


def copy_prefix(conn: Connection, source: Loaded, target_pk: int, upto: int) -> None:
    """Copy messages ``1..upto`` of ``source`` to the empty conversation ``target_pk`` in one
    ``INSERT ... SELECT`` (no row passes through Python), with the summaries that cover only
    that prefix, and set the target's running state."""
    cols = [_m[c] for c in _COPIED]
    conn.execute(
        insert(messages).from_select(
            ["conversation_pk", *_COPIED, "meta", "idempotency_key"],
            select(bindparam("target", target_pk), *cols, _m.meta, _m.idempotency_key).where(
                _m.conversation_pk == source.pk, _m.seq <= upto
            ),
        )
    )
    s = summaries.c
    conn.execute(
        insert(summaries).from_select(
            ["conversation_pk", "upto_seq", "text", "tokens", "model", "created_at", "meta"],
            select(
                bindparam("target2", target_pk),
                s.upto_seq,
                s.text,
                s.tokens,
                s.model,
                s.created_at,
                s.meta,
            ).where(s.conversation_pk == source.pk, s.upto_seq <= upto),
        )
    )
    state = state_at(conn, source.pk, upto, source.info.prefix_seq)
    conn.execute(update(conversations).where(_c.pk == target_pk).values(**state))


def replace_message(conn: Connection, pk: int, shown_as: str, seq: int, new: Prepared) -> int:
    """Rewrite the message at ``seq`` in place (the pinned prefix: same role, same place);
    every later running total moves by the difference. Returns that difference."""
    lock_conversation(conn, pk, shown_as)
    old = read_messages(conn, pk, seq, seq + 1, None)[0]
    delta = new.tokens - old.tokens
    codec = codec_of(conn)
    conn.execute(
        update(messages)
        .where(_m.conversation_pk == pk, _m.seq == seq)
        .values(data=codec.encode(new.data), tokens=new.tokens)
    )
    if delta:
        conn.execute(
            update(messages)
            .where(_m.conversation_pk == pk, _m.seq >= seq)
            .values(cum_tokens=_m.cum_tokens + delta)
        )
    conn.execute(
        update(conversations)
        .where(_c.pk == pk)
        .values(token_total=_c.token_total + delta, revision=_c.revision + 1, updated_at=utcnow())
    )
    return delta


def round_start(conn: Connection, pk: int, n: int, prefix_seq: int, last_seq: int) -> int | None:
    """Seq of the ``n``-th newest user message after the prefix (None: fewer rounds)."""
    return conn.execute(
        select(_m.seq)
        .where(
            _m.conversation_pk == pk,
            _m.role == "user",
            _m.seq > prefix_seq,
            _m.seq <= last_seq,
        )
        .order_by(_m.seq.desc())
        .limit(1)
        .offset(n - 1)
    ).scalar()


def role_at(conn: Connection, pk: int, seq: int) -> str:
    role: str = conn.execute(
        select(_m.role).where(_m.conversation_pk == pk, _m.seq == seq)
    ).scalar_one()
    return role


def set_lineage(conn: Connection, pk: int, parent_id: str, forked_at: int) -> None:
    """Record where a fork came from: the parent's id and the last seq it shares with it."""
    conn.execute(
        update(conversations).where(_c.pk == pk).values(parent_id=parent_id, forked_at=forked_at)
    )
