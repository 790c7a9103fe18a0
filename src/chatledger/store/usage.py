"""Statements on the usage ledger (one row per response, and sums over them) and on spend in
flight (reservations: what a request may still cost, held from its budget check until its
reply is recorded, it fails, or the reservation expires)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Connection, cast, delete, func, insert, select, union_all

from chatledger.append_plan import utcnow
from chatledger.encryption import PLAIN
from chatledger.rows import UsageRecord, UsageTotals
from chatledger.store.mapping import USAGE_COLUMNS, codec_of, stored_owner, to_usage
from chatledger.store.schema import completions, reservations

__all__ = [
    "find_usage",
    "insert_usage",
    "purge",
    "release",
    "reserve",
    "spent_and_held",
    "usage_records",
    "usage_totals",
]

_u = completions.c
_INSERT = insert(completions)


def find_usage(conn: Connection, pk: int, key: str) -> UsageRecord | None:
    """The usage row an earlier record with this idempotency key stored."""
    codec = codec_of(conn)
    row = conn.execute(
        select(*USAGE_COLUMNS).where(
            _u.conversation_pk == pk, _u.idempotency_key == codec.keyed_hash(key)
        )
    ).first()
    return None if row is None else to_usage(row, codec)


_INT_MAX = 2**31 - 1
_SIZED = {"model": 128, "response_id": 255, "system_fingerprint": 255, "finish_reason": 32}


def _fit(values: dict[str, Any]) -> dict[str, Any]:
    """A response's own fields made to fit their columns, whatever the server sent: a NUL
    (which PostgreSQL refuses) dropped, strings cut to the column, counts within INTEGER. A
    billed response is always recorded, and never depends on the SQL mode for truncation."""
    out = dict(values)
    for name, size in _SIZED.items():
        v = out.get(name)
        if v is not None:
            out[name] = str(v).replace("\x00", "")[:size]
    for name in ("prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens"):
        out[name] = min(int(out.get(name) or 0), _INT_MAX)
    if out.get("cache_write_tokens") is not None:
        out["cache_write_tokens"] = min(int(out["cache_write_tokens"]), _INT_MAX)
    return out


def insert_usage(
    conn: Connection,
    pk: int,
    seq: int | None,
    values: dict[str, Any],
    key: str | None,
    *,
    owner: str | None,
) -> UsageRecord:
    """Store one response's usage; ``values`` are the usage columns, ``meta`` as JSON text.
    The row carries the owner, so it still counts for them once the conversation is gone."""
    values = {**_fit(values), "message_seq": seq, "created_at": utcnow()}
    codec = codec_of(conn)
    row = {
        **values,
        "meta": codec.encode_opt(values.get("meta")),
        "response_id": codec.encode_id_opt(values.get("response_id"), 255),
        "conversation_pk": pk,
        "owner": stored_owner(owner),
        "idempotency_key": codec.keyed_hash_opt(key),
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
    if owner is not None:  # also the rows of the owner's deleted conversations
        q = q.where(_u.owner == owner)
    if since is not None:
        q = q.where(_u.created_at >= since)
    if until is not None:
        q = q.where(_u.created_at < until)
    return UsageTotals(*(int(v) for v in conn.execute(q).one()))


_r = reservations.c


def spent_and_held(
    conn: Connection,
    pk: int | None,
    owner: str | None,
    since: datetime | None,
    now: datetime,
) -> tuple[int, int]:
    """Tokens and micro-dollars a budget counts for one conversation or one owner: what the
    usage ledger holds since ``since``, plus every unexpired reservation (a request reserved
    before the period began is billed within it).

    One statement, so one snapshot: a reply recorded meanwhile (its usage row in and its
    reservation out, in one transaction) counts exactly once. Two statements would, under READ
    COMMITTED, see neither when the record commits between them."""
    spent = select(
        (cast(_u.prompt_tokens, BigInteger) + _u.completion_tokens).label("tokens"),
        _u.cost_micros.label("micros"),
    )
    held = select(_r.tokens.label("tokens"), _r.cost_micros.label("micros")).where(
        _r.expires_at > now
    )
    if pk is not None:
        spent, held = spent.where(_u.conversation_pk == pk), held.where(_r.conversation_pk == pk)
    if owner is not None:
        spent, held = spent.where(_u.owner == owner), held.where(_r.owner == owner)
    if since is not None:
        spent = spent.where(_u.created_at >= since)
    both = union_all(spent, held).subquery()
    tokens, micros = conn.execute(
        select(func.coalesce(func.sum(both.c.tokens), 0), func.coalesce(func.sum(both.c.micros), 0))
    ).one()
    return int(tokens), int(micros)


def purge(conn: Connection, pk: int | None, owner: str | None, now: datetime) -> None:
    """Delete expired reservations of one conversation or one owner (the scope whose lock the
    caller holds), found by a plain read and deleted by key: a range DELETE would lock the
    live reservation past the range, and deadlock with a record settling it (MySQL)."""
    scope = _r.conversation_pk == pk if pk is not None else _r.owner == owner
    stale = list(
        conn.execute(select(_r.pk).where(scope, _r.expires_at <= now).limit(500)).scalars()
    )
    if stale:
        conn.execute(delete(reservations).where(_r.pk.in_(stale), _r.expires_at <= now))


def reserve(
    conn: Connection,
    owner: str | None,
    pk: int,
    tokens: int,
    micros: int | None,
    now: datetime,
    expires: datetime,
) -> int:
    """Hold a request's maximum spend; returns the reservation's key, for :func:`release`."""
    result = conn.execute(
        insert(reservations).values(
            owner=stored_owner(owner),
            conversation_pk=pk,
            tokens=tokens,
            cost_micros=micros,
            created_at=now,
            expires_at=expires,
        )
    )
    return int(result.inserted_primary_key[0])  # type: ignore[index]


def release(conn: Connection, reservation: int) -> None:
    """Drop a reservation: its reply was recorded (in the same transaction), or it failed."""
    conn.execute(delete(reservations).where(_r.pk == reservation))
