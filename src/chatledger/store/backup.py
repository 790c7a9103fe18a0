"""Statements of a backup: page through conversations in a fixed order, read one whole
conversation, and write one whole conversation (its row, messages, summaries and usage) with
the values it had, not the ones an append would give it (timestamps, keys, statuses).

The order is ``(owner, id)`` compared byte by byte (code point order), the same on every
database, so that exports of one ledger held in SQLite, PostgreSQL or MariaDB are identical:
SQLite and the MySQL tables (``utf8mb4_bin``) compare that way already; PostgreSQL is told
``COLLATE "C"`` (which its unique index may not serve: a page is then a sorted scan).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, bindparam, insert, or_, select, update

from chatledger.encryption import PLAIN
from chatledger.rows import Loaded, NewConversation, Prepared, State, StoredMessage, UsageRecord
from chatledger.store.conversations import find_conversation, load_conversation
from chatledger.store.limits import check_messages
from chatledger.store.locks import read_snapshot
from chatledger.store.mapping import (
    USAGE_COLUMNS,
    _aware,
    _json,
    codec_of,
    stored_owner,
    to_usage,
)
from chatledger.store.messages import read_messages
from chatledger.store.schema import completions, conversations, messages, summaries

__all__ = [
    "USAGE_EXTRAS",
    "ConversationDump",
    "Restored",
    "SummaryRecord",
    "clear_lineage",
    "conversation_keys",
    "exists",
    "find_dump",
    "keys_of_ids",
    "read_conversation",
    "write_conversation",
]

_c = conversations.c
_s = summaries.c
_u = completions.c


@dataclass(frozen=True, slots=True)
class SummaryRecord:
    """One stored summary: it covers the messages up to ``upto_seq``."""

    upto_seq: int
    text: str
    tokens: int
    model: str | None
    created_at: datetime
    metadata: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class ConversationDump:
    """A whole conversation as stored (content decrypted; idempotency keys as stored, which
    is a keyed hash in an encrypted ledger)."""

    loaded: Loaded
    messages: list[StoredMessage]
    summaries: list[SummaryRecord]
    #: usage rows, oldest first, each with its idempotency key as stored and the values of
    #: ``USAGE_EXTRAS``
    usage: list[tuple[UsageRecord, str | None, dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class Restored:
    """A conversation to write as it was: the row's values, message rows as ``plan_append``
    plans them (content not yet encoded), summaries and usage rows as column values."""

    new: NewConversation
    created_at: datetime
    updated_at: datetime
    parent_id: str | None
    forked_at: int | None
    window_start: int | None
    state: State
    messages: list[dict[str, Any]]
    summaries: list[dict[str, Any]]
    usage: list[dict[str, Any]]
    #: the messages as checked and counted (for the server's packet limit)
    batch: list[Prepared]


def _ordered(conn: Connection, column: Any) -> Any:
    """``column`` compared in code point order, as on SQLite and the binary MySQL collation."""
    return column.collate("C") if conn.dialect.name == "postgresql" else column


def conversation_keys(
    conn: Connection, owner: str | None, after: tuple[str, str] | None, limit: int
) -> list[tuple[str, str, int]]:
    """One page of ``(stored owner, id, pk)`` in ``(owner, id)`` order, after ``after``
    (keyset pagination: each page is one bounded query, whatever the table holds).
    ``owner=None`` is every owner."""
    o, i = _ordered(conn, _c.owner), _ordered(conn, _c.id)
    q = select(_c.owner, _c.id, _c.pk)
    if owner is not None:
        q = q.where(_c.owner == stored_owner(owner))
    if after is not None:
        past: ColumnElement[bool] = or_(o > after[0], and_(_c.owner == after[0], i > after[1]))
        q = q.where(past)
    rows = conn.execute(q.order_by(o, i).limit(limit)).all()
    return [(r.owner, r.id, r.pk) for r in rows]


def keys_of_ids(
    conn: Connection, ids: Sequence[str], owner: str | None
) -> list[tuple[str, str, int]]:
    """``(stored owner, id, pk)`` of the conversations with these ids (of ``owner``, or of
    every owner when None), in no particular order."""
    out: list[tuple[str, str, int]] = []
    for start in range(0, len(ids), 500):  # IN lists within every driver's parameter limit
        q = select(_c.owner, _c.id, _c.pk).where(_c.id.in_(ids[start : start + 500]))
        if owner is not None:
            q = q.where(_c.owner == stored_owner(owner))
        out.extend((r.owner, r.id, r.pk) for r in conn.execute(q))
    return out


_EXISTS = select(_c.pk).where(_c.owner == bindparam("p_owner"), _c.id == bindparam("p_id"))


def exists(conn: Connection, conversation_id: str, owner: str | None) -> bool:
    found = conn.execute(_EXISTS, {"p_owner": stored_owner(owner), "p_id": conversation_id})
    return found.first() is not None


# built once, with bind parameters (a conversation is read per line of an export)
_SUMMARIES = (
    select(_s.upto_seq, _s.text, _s.tokens, _s.model, _s.created_at, _s.meta)
    .where(_s.conversation_pk == bindparam("p_pk"))
    .order_by(_s.upto_seq, _s.pk)
)
#: usage columns a backup keeps that :class:`UsageRecord` may not carry (newer revisions)
USAGE_EXTRAS = tuple(
    name
    for name in ("cache_write_tokens",)
    if name in _u and name not in {c.name for c in USAGE_COLUMNS}
)
_USAGE = (
    select(*USAGE_COLUMNS, *(_u[name] for name in USAGE_EXTRAS), _u.idempotency_key)
    .where(_u.conversation_pk == bindparam("p_pk"))
    .order_by(_u.pk)
)


def read_conversation(conn: Connection, pk: int, *, snapshot: bool = False) -> ConversationDump:
    """The conversation ``pk`` whole: its row, every message, its summaries and usage rows.
    ``snapshot``: read it all in one snapshot (the first statement of a connection's read),
    so that a write committed meanwhile is wholly in it or wholly not."""
    if snapshot:
        read_snapshot(conn)
    codec = codec_of(conn)
    loaded = load_conversation(conn, pk, str(pk))
    found = conn.execute(_SUMMARIES, {"p_pk": pk}).all()
    kept = [
        SummaryRecord(
            r.upto_seq,
            codec.decode(r.text),
            r.tokens,
            r.model,
            _aware(r.created_at),
            _json(codec, r.meta),
        )
        for r in found
    ]
    rows = conn.execute(_USAGE, {"p_pk": pk}).all()
    n = len(USAGE_COLUMNS)
    usage = [
        (to_usage(r[:n], codec), r[-1], dict(zip(USAGE_EXTRAS, r[n:-1], strict=True))) for r in rows
    ]
    return ConversationDump(loaded, read_messages(conn, pk, None, None, None), kept, usage)


def find_dump(conn: Connection, conversation_id: str, owner: str | None) -> ConversationDump:
    """:func:`read_conversation` by ``(owner, id)``; ConversationNotFoundError if none."""
    return read_conversation(conn, find_conversation(conn, conversation_id, owner).pk)


_NEW_CONVERSATION = insert(conversations)
_NEW_MESSAGES = insert(messages)


def write_conversation(conn: Connection, r: Restored) -> int:
    """Insert a whole conversation; returns its key. The caller has checked that ``(owner,
    id)`` is free in this transaction (the unique index refuses a racing import). Content is
    encrypted with the ledger's codec; idempotency keys are written as given (the caller gave
    them in their stored form)."""
    codec = codec_of(conn)
    check_messages(conn, r.batch)  # what the server would refuse, before any insert
    new, s = r.new, r.state
    extra = {"window_start": r.window_start} if "window_start" in _c else {}
    # parameters, not .values(): the statement is compiled once, not once per conversation
    result = conn.execute(
        _NEW_CONVERSATION,
        {
            **extra,
            "id": new.id,
            "owner": stored_owner(new.owner),
            "model": new.model,
            "encoding": new.encoding,
            "token_profile": new.token_profile,
            "title": new.title,
            "meta": codec.encode_opt(new.meta),
            "created_at": r.created_at,
            "updated_at": r.updated_at,
            "message_count": s.message_count,
            "token_total": s.token_total,
            "last_seq": s.last_seq,
            "last_round_seq": s.last_round_seq,
            "prefix_seq": s.prefix_seq,
            "tool_state": codec.encode_opt(s.tool_state),
            "parent_id": r.parent_id,
            "forked_at": r.forked_at,
        },
    )
    pk = int(result.inserted_primary_key[0])  # type: ignore[index]
    if r.messages:
        if codec is PLAIN:
            rows = [{**m, "conversation_pk": pk} for m in r.messages]
        else:
            rows = [
                {
                    **m,
                    "conversation_pk": pk,
                    "data": codec.encode(m["data"]),
                    "meta": codec.encode_opt(m["meta"]),
                }
                for m in r.messages
            ]
        conn.execute(_NEW_MESSAGES, rows)
    if r.summaries:
        conn.execute(
            insert(summaries),
            [
                {
                    **x,
                    "conversation_pk": pk,
                    "text": codec.encode(x["text"]),
                    "meta": codec.encode_opt(x["meta"]),
                }
                for x in r.summaries
            ],
        )
    if r.usage:
        conn.execute(
            insert(completions),
            [
                {
                    **{k: v for k, v in u.items() if k in _u},
                    "conversation_pk": pk,
                    "owner": stored_owner(new.owner),
                    "response_id": codec.encode_id_opt(u["response_id"], 255),
                    "meta": codec.encode_opt(u["meta"]),
                }
                for u in r.usage
            ],
        )
    return pk


def clear_lineage(conn: Connection, conversation_id: str, owner: str | None) -> None:
    """Forget where a conversation was forked from (its parent is not in this ledger)."""
    conn.execute(
        update(conversations)
        .where(_c.owner == stored_owner(owner), _c.id == conversation_id)
        .values(parent_id=None, forked_at=None)
    )
