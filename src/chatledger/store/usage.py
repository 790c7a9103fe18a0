"""Statements on the usage ledger: one row per response, and sums over them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select

from chatledger.append_plan import utcnow
from chatledger.encryption import PLAIN
from chatledger.rows import UsageRecord, UsageTotals
from chatledger.store.mapping import USAGE_COLUMNS, codec_of, to_usage
from chatledger.store.schema import completions, conversations

__all__ = ["find_usage", "insert_usage", "usage_records", "usage_totals"]

_u = completions.c
_INSERT = insert(completions)


def find_usage(conn: Connection, pk: int, key: str) -> UsageRecord | None:
    """The usage row an earlier record with this idempotency key stored."""
    row = conn.execute(
        select(*USAGE_COLUMNS).where(_u.conversation_pk == pk, _u.idempotency_key == key)
    ).first()
    return None if row is None else to_usage(row, codec_of(conn))


def insert_usage(
    conn: Connection, pk: int, seq: int | None, values: dict[str, Any], key: str | None
) -> UsageRecord:
    """Store one response's usage; ``values`` are the usage columns, ``meta`` as JSON text."""
    values = {**values, "message_seq": seq, "created_at": utcnow()}
    row = {
        **values,
        "meta": codec_of(conn).encode_opt(values.get("meta")),
        "conversation_pk": pk,
        "idempotency_key": key,
    }
    conn.execute(_INSERT, row)
    return to_usage(tuple(values.get(c.name) for c in USAGE_COLUMNS), PLAIN)


def usage_records(conn: Connection, pk: int, limit: int | None) -> list[UsageRecord]:
    q = select(*USAGE_COLUMNS).where(_u.conversation_pk == pk).order_by(_u.pk.desc())
    if limit is not None:
        q = q.limit(limit)
    codec = codec_of(conn)
    return [to_usage(r, codec) for r in reversed(conn.execute(q).all())]


def usage_totals(
    conn: Connection,
    pk: int | None,
    owner: str | None,
    since: datetime | None,
    until: datetime | None,
) -> UsageTotals:
    """Sums over the usage ledger for one conversation, one owner, or everything."""
    q = select(
        func.count(),
        func.coalesce(func.sum(_u.prompt_tokens), 0),
        func.coalesce(func.sum(_u.completion_tokens), 0),
        func.coalesce(func.sum(_u.cached_tokens), 0),
        func.coalesce(func.sum(_u.reasoning_tokens), 0),
        func.coalesce(func.sum(_u.cost_micros), 0),
        func.count(_u.pk) - func.count(_u.cost_micros),
    ).select_from(completions)
    if pk is not None:
        q = q.where(_u.conversation_pk == pk)
    if owner is not None:
        q = q.where(
            _u.conversation_pk.in_(select(conversations.c.pk).where(conversations.c.owner == owner))
        )
    if since is not None:
        q = q.where(_u.created_at >= since)
    if until is not None:
        q = q.where(_u.created_at < until)
    return UsageTotals(*(int(v) for v in conn.execute(q).one()))
