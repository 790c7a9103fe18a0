"""Statements a window reads, in one connection, and the summaries it writes."""

from __future__ import annotations

from functools import partial
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, union_all

from chatledger.append_plan import utcnow
from chatledger.errors import ConversationNotFoundError
from chatledger.rows import Entry, Lookback, Snapshot
from chatledger.store.conversations import lock_conversation
from chatledger.store.mapping import (
    CONVERSATION_COLUMNS,
    MESSAGE_COLUMNS,
    codec_of,
    to_loaded,
    to_message,
)
from chatledger.store.messages import read_messages
from chatledger.store.schema import conversations, messages, summaries

__all__ = ["save_summary", "window_snapshot"]

_c = conversations.c
_m = messages.c
_W_CONV = select(*CONVERSATION_COLUMNS).where(_c.pk == bindparam("p_pk"))
_W_SUMMARY = (
    select(summaries.c.upto_seq, summaries.c.text)
    .where(
        summaries.c.conversation_pk == bindparam("p_pk"),
        summaries.c.upto_seq <= bindparam("p_last"),
        summaries.c.upto_seq > bindparam("p_prefix"),
    )
    .order_by(summaries.c.upto_seq.desc(), summaries.c.pk.desc())
    .limit(1)
)
# the prefix and the newest rows, in one statement (two primary-key ranges)
_W_ROWS = union_all(
    select(*MESSAGE_COLUMNS).where(
        _m.conversation_pk == bindparam("p_pk"), _m.seq <= bindparam("p_prefix")
    ),
    select(*MESSAGE_COLUMNS).where(
        _m.conversation_pk == bindparam("p_pk"),
        _m.seq >= bindparam("p_floor"),
        _m.seq <= bindparam("p_last"),
    ),
)
_W_META = (
    select(_m.seq, _m.role, _m.tokens, _m.round_seq)
    .where(
        _m.conversation_pk == bindparam("p_pk"),
        _m.seq >= bindparam("p_floor"),
        _m.seq <= bindparam("p_last"),
    )
    .order_by(_m.seq)
)
# the conversation row with the budget's cut point (round and seq of the first row whose running
# total reaches total - lookback tokens) and the n-th newest round, in the row's own read: one
# statement fewer than reading them after it
_FIRST_AT_TOKENS = (
    select(_m.round_seq)
    .where(_m.conversation_pk == _c.pk, _m.cum_tokens >= _c.token_total - bindparam("p_tokens"))
    .order_by(_m.cum_tokens)
    .limit(1)
    .scalar_subquery()
)
_NTH_ROUND = (
    select(_m.seq)
    .where(
        _m.conversation_pk == _c.pk,
        _m.role == "user",
        _m.seq > _c.prefix_seq,
        _m.seq <= _c.last_seq,
    )
    .order_by(_m.seq.desc())
    .limit(1)
    .offset(bindparam("p_offset"))
    .scalar_subquery()
)
_W_CONV_TOKENS = select(*CONVERSATION_COLUMNS, _FIRST_AT_TOKENS).where(_c.pk == bindparam("p_pk"))
_W_CONV_ROUNDS = select(*CONVERSATION_COLUMNS, _NTH_ROUND).where(_c.pk == bindparam("p_pk"))
_W_CONV_BOTH = select(*CONVERSATION_COLUMNS, _FIRST_AT_TOKENS, _NTH_ROUND).where(
    _c.pk == bindparam("p_pk")
)
_N_CONV = len(CONVERSATION_COLUMNS)
_W_CUM_AT = select(_m.cum_tokens).where(
    _m.conversation_pk == bindparam("p_pk"), _m.seq == bindparam("p_seq")
)


def window_snapshot(
    conn: Connection,
    pk: int,
    shown_as: str,
    lookback: Lookback | None,
    with_summary: bool,
) -> Snapshot:
    """Read what the strategies need: the prefix, the summary and the newest history's
    metadata (seq, role, tokens, round), as far back as ``lookback`` reaches and no further.

    With a bounded lookback the newest rows come with their content, so the window costs
    two statements (three with a summary): the conversation row with the cut point (scalar
    subqueries on the row's own totals), then the rows.
    """
    codec = codec_of(conn)
    tokens = lookback.tokens if lookback is not None else None
    rounds = lookback.rounds if lookback is not None else None
    if tokens is not None and rounds is not None:
        row = conn.execute(
            _W_CONV_BOTH, {"p_pk": pk, "p_tokens": tokens, "p_offset": rounds - 1}
        ).first()
    elif tokens is not None:
        row = conn.execute(_W_CONV_TOKENS, {"p_pk": pk, "p_tokens": tokens}).first()
    elif rounds is not None:
        row = conn.execute(_W_CONV_ROUNDS, {"p_pk": pk, "p_offset": rounds - 1}).first()
    else:
        row = conn.execute(_W_CONV, {"p_pk": pk}).first()
    if row is None:
        raise ConversationNotFoundError(shown_as)
    loaded = to_loaded(row[:_N_CONV], codec)
    info = loaded.info
    last, prefix_seq, total = info.last_seq, info.prefix_seq, info.token_total
    params: dict[str, Any] = {"p_pk": pk, "p_last": last, "p_prefix": prefix_seq}
    reads = 1
    summary: tuple[int, str] | None = None
    if with_summary:
        s = conn.execute(_W_SUMMARY, params).first()
        reads += 1
        if s is not None:
            summary = (s.upto_seq, codec.decode(s.text))

    floor = prefix_seq + 1
    if lookback is not None and last > prefix_seq:
        floors: list[int] = []
        extra = list(row[_N_CONV:])
        if tokens is not None:
            round_seq = extra.pop(0)
            if round_seq is not None:
                floors.append(round_seq if round_seq > prefix_seq else floor)
            else:
                floors.append(last + 1)
        if rounds is not None:
            nth = extra.pop(0)
            floors.append(floor if nth is None else nth)
        if floors:
            floor = max(floor, min(floors))

    rows: list[Any] | None = None
    if lookback is not None:
        got = sorted(conn.execute(_W_ROWS, {**params, "p_floor": floor}).all(), key=lambda r: r[0])
        reads += len(got)
        prefix = [to_message(r, codec) for r in got if r[0] <= prefix_seq]
        rows = [r for r in got if r[0] >= floor]
        entries = [Entry(r[0], r[1], r[3], r[5]) for r in rows]
    else:
        prefix = read_messages(conn, pk, 1, prefix_seq + 1, None) if prefix_seq else []
        entries = [
            Entry(r.seq, r.role, r.tokens, r.round_seq)
            for r in conn.execute(_W_META, {**params, "p_floor": floor})
        ]
        reads += len(prefix) + len(entries)
    prefix_cum = prefix[-1].cumulative_tokens if prefix else 0
    # with summaries in play the tail starts after what the summary covers; else at the floor
    start = ((summary[0] if summary else prefix_seq) + 1) if with_summary else floor
    if start >= floor:
        start_tokens = sum(e.tokens for e in entries if e.seq >= start)
    elif start == prefix_seq + 1:
        start_tokens = total - prefix_cum
    else:
        before = conn.execute(_W_CUM_AT, {"p_pk": pk, "p_seq": start - 1}).scalar_one()
        reads += 1
        start_tokens = total - before
    return Snapshot(
        loaded,
        prefix,
        summary,
        entries,
        start,
        start_tokens,
        reads,
        rows,
        partial(to_message, codec=codec),
    )


def save_summary(
    conn: Connection,
    pk: int,
    shown_as: str,
    upto_seq: int,
    text: str,
    tokens: int,
    model: str | None,
) -> tuple[int, str]:
    """Store a summary unless a summary reaching as far already exists (another worker
    summarised meanwhile); returns the summary now newest."""
    lock_conversation(conn, pk, shown_as)
    newest = conn.execute(
        select(summaries.c.upto_seq, summaries.c.text)
        .where(summaries.c.conversation_pk == pk)
        .order_by(summaries.c.upto_seq.desc(), summaries.c.pk.desc())
        .limit(1)
    ).first()
    codec = codec_of(conn)
    if newest is not None and newest.upto_seq >= upto_seq:
        return newest.upto_seq, codec.decode(newest.text)
    conn.execute(
        insert(summaries).values(
            conversation_pk=pk,
            upto_seq=upto_seq,
            text=codec.encode(text),
            tokens=tokens,
            model=model,
            created_at=utcnow(),
        )
    )
    return upto_seq, text
