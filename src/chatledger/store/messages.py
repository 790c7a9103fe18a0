"""Statements on the messages table: the locked append, reads by seq, and recounting."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal

from sqlalchemy import Connection, bindparam, insert, select, union_all, update

from chatledger.append_plan import PREFIX_ROLES, AppendPlan, batch_key, plan_append, utcnow
from chatledger.encryption import PLAIN, Codec
from chatledger.errors import IdempotencyConflictError, InvalidMessageError
from chatledger.rows import Appended, Prepared, State, StoredMessage
from chatledger.store.conversations import lock_conversation
from chatledger.store.mapping import MESSAGE_COLUMNS, codec_of, to_message
from chatledger.store.schema import conversations, messages, summaries
from chatledger.tokens import TokenCounter, system_text

__all__ = ["Stale", "append", "first_system_text", "read_messages", "recount"]


class Stale(Exception):
    """What the batch was counted against (the model, the open tool calls) changed since it was
    read; the caller refreshes, counts again and retries."""


_c = conversations.c
_m = messages.c
_STATE = select(
    _c.token_profile,
    _c.last_seq,
    _c.token_total,
    _c.message_count,
    _c.last_round_seq,
    _c.prefix_seq,
    _c.tool_state,
    _c.revision,
).where(_c.pk == bindparam("p_pk"))
_INSERT = insert(messages)
_SET_STATE = (
    update(conversations)
    .where(_c.pk == bindparam("p_pk"))
    .values(
        last_seq=bindparam("n_last_seq"),
        token_total=bindparam("n_token_total"),
        message_count=bindparam("n_message_count"),
        last_round_seq=bindparam("n_last_round_seq"),
        prefix_seq=bindparam("n_prefix_seq"),
        tool_state=bindparam("n_tool_state"),
        updated_at=bindparam("p_now"),
    )
)
# the same, only if nothing was appended (and the model not changed) since the handle read it
_SET_STATE_IF = _SET_STATE.where(
    _c.last_seq == bindparam("p_last_seq"),
    _c.revision == bindparam("p_revision"),
    _c.token_profile == bindparam("p_profile"),
)


# the columns an appended row carries, in order
_ROW_COLUMNS = (
    "conversation_pk",
    "seq",
    "role",
    "data",
    "tokens",
    "cum_tokens",
    "round_seq",
    "created_at",
    "status",
    "meta",
    "idempotency_key",
)
_PG_APPENDS: dict[int, Any] = {}
#: batches up to this size go in one statement on PostgreSQL (a larger one: its own INSERT)
_PG_ONE_STATEMENT = 8


def _pg_append(n: int) -> Any:
    """PostgreSQL: the conditional state update and the insert of ``n`` rows as one statement
    (a data-modifying CTE: one round trip, not two). The rows are inserted only if the update
    matched, so the rows it returns say whether the compare-and-set held (the driver's row
    count of such a statement is not reported)."""
    stmt = _PG_APPENDS.get(n)
    if stmt is None:
        state = _SET_STATE_IF.returning(_c.pk).cte("state")
        rows = [
            select(
                state.c.pk, *(bindparam(f"r{i}_{c}", type_=_m[c].type) for c in _ROW_COLUMNS[1:])
            )
            for i in range(n)
        ]
        source = rows[0] if n == 1 else union_all(*rows)
        stmt = _PG_APPENDS[n] = (
            insert(messages).from_select(list(_ROW_COLUMNS), source).returning(_m.seq)
        )
    return stmt


def _state_params(pk: int, plan: AppendPlan, codec: Codec) -> dict[str, Any]:
    a = plan.after
    return {
        "p_pk": pk,
        "p_now": plan.now,
        "n_last_seq": a.last_seq,
        "n_token_total": a.token_total,
        "n_message_count": a.message_count,
        "n_last_round_seq": a.last_round_seq,
        "n_prefix_seq": a.prefix_seq,
        "n_tool_state": codec.encode_opt(a.tool_state),  # pending tool-call ids and names
    }


def _encoded(rows: list[dict[str, Any]], codec: Codec) -> list[dict[str, Any]]:
    """Rows as stored: content encrypted, idempotency keys as keyed hashes (still unique, and
    found again by equality)."""
    if codec is PLAIN:
        return rows
    return [
        {
            **r,
            "data": codec.encode(r["data"]),
            "meta": codec.encode_opt(r["meta"]),
            "idempotency_key": codec.keyed_hash_opt(r["idempotency_key"]),
        }
        for r in rows
    ]


def _replay(
    conn: Connection, pk: int, key: str, batch: Sequence[Prepared]
) -> list[StoredMessage] | None:
    """What an earlier write with this idempotency key stored, or None if there was none.

    The same key with another batch (other messages, other metadata, more or fewer of them)
    is a conflict, never a silent replay. With encryption the keys are stored hashed: the
    records returned carry the caller's keys, as the first write's did."""
    codec = codec_of(conn)
    stored_key = codec.keyed_hash
    first = conn.execute(
        select(_m.seq).where(_m.conversation_pk == pk, _m.idempotency_key == stored_key(key))
    ).scalar()
    if first is None:
        return None
    rows = conn.execute(
        select(*MESSAGE_COLUMNS)
        .where(_m.conversation_pk == pk, _m.seq >= first, _m.seq <= first + len(batch))
        .order_by(_m.seq)
    ).all()
    stored = [to_message(r, codec) for r in rows]
    extra = stored[len(batch)] if len(stored) > len(batch) else None
    same = (
        len(stored) >= len(batch)
        and all(
            s.idempotency_key == stored_key(batch_key(key, i))
            and s.message == p.message
            and s.metadata == (None if p.meta is None else json.loads(p.meta))
            for i, (s, p) in enumerate(zip(stored, batch, strict=False))
        )
        and (extra is None or extra.idempotency_key != stored_key(batch_key(key, len(batch))))
    )
    if not same:
        raise IdempotencyConflictError(
            f"idempotency key {key!r} was already used for different messages"
        )
    return [
        replace(s, idempotency_key=batch_key(key, i)) for i, s in enumerate(stored[: len(batch)])
    ]


def append(
    conn: Connection,
    pk: int,
    shown_as: str,
    profile: str,
    counted_against: str | Literal[False] | None,
    batch: Sequence[Prepared],
    key: str | None,
    seen: State | None = None,
) -> Appended:
    """Append messages under the conversation lock: seq, totals and pairing checked together.

    With ``seen`` (the state the handle last read) the write is one conditional ``UPDATE`` of
    the conversation row (it both takes the lock and proves nothing changed) and one
    ``INSERT``; a reused idempotency key then fails on its unique index (IntegrityError) and
    the caller retries without ``seen``. Without it, or when the condition fails, the row is
    locked and read first, and a reused key returns what it stored.

    ``counted_against`` is the tool state the batch's tool results were counted with, or False
    when no count depended on it. Raises :class:`Stale` when the model or that state changed
    since, :class:`InvalidMessageError` when the messages do not continue the conversation
    (nothing is written then).
    """
    codec = codec_of(conn)
    if seen is not None and batch:
        plan = plan_append(pk, seen, batch, key)
        if not plan.problems:
            cond = {
                **_state_params(pk, plan, codec),
                "p_last_seq": seen.last_seq,
                "p_revision": seen.revision,
                "p_profile": profile,
            }
            rows = _encoded(plan.rows, codec)
            if conn.dialect.name == "postgresql" and len(rows) <= _PG_ONE_STATEMENT:
                for i, r in enumerate(rows):
                    cond.update({f"r{i}_{c}": r[c] for c in _ROW_COLUMNS[1:]})
                if len(conn.execute(_pg_append(len(rows)), cond).all()) == len(rows):
                    return Appended(plan.stored, plan.after)
            elif conn.execute(_SET_STATE_IF, cond).rowcount == 1:
                conn.execute(_INSERT, rows)
                return Appended(plan.stored, plan.after)
        # stale or refused on what the handle saw: decide on the row itself
    lock_conversation(conn, pk, shown_as)
    row = conn.execute(_STATE, {"p_pk": pk}).one()
    tool_state = codec.decode_opt(row.tool_state)
    if row.token_profile != profile or (
        counted_against is not False and tool_state != counted_against
    ):
        raise Stale()
    if key is not None:
        replayed = _replay(conn, pk, key, batch)
        if replayed is not None:
            return Appended(replayed)
    before = State(*row[1:6], tool_state, row.revision)
    plan = plan_append(pk, before, batch, key)
    if plan.problems:
        raise InvalidMessageError(plan.problems)
    if plan.rows:
        conn.execute(_INSERT, _encoded(plan.rows, codec))
    conn.execute(_SET_STATE, _state_params(pk, plan, codec))
    return Appended(plan.stored, plan.after)


def read_messages(
    conn: Connection,
    pk: int,
    start: int | None,
    stop: int | None,
    limit: int | None,
    newest: bool = False,
) -> list[StoredMessage]:
    """Messages with ``start <= seq < stop``, oldest first; ``newest`` takes the last ``limit``."""
    codec = codec_of(conn)
    q = select(*MESSAGE_COLUMNS).where(_m.conversation_pk == pk)
    if start is not None:
        q = q.where(_m.seq >= start)
    if stop is not None:
        q = q.where(_m.seq < stop)
    q = q.order_by(_m.seq.desc() if newest else _m.seq)
    if limit is not None:
        q = q.limit(limit)
    rows = conn.execute(q).all()
    return [to_message(r, codec) for r in (reversed(rows) if newest else rows)]


def recount(conn: Connection, pk: int, counter: TokenCounter) -> None:
    """Re-count every stored message for a new model's rules (a model change, done once)."""
    conn.execute(update(conversations).where(_c.pk == pk).values(updated_at=utcnow()))
    rows = conn.execute(
        select(_m.seq, _m.data).where(_m.conversation_pk == pk).order_by(_m.seq)
    ).all()
    cum = 0
    params = []
    codec = codec_of(conn)
    counts = counter.messages([json.loads(codec.decode(r.data)) for r in rows])
    for r, tokens in zip(rows, counts, strict=True):
        cum += tokens
        params.append({"p_seq": r.seq, "p_tokens": tokens, "p_cum": cum})
    if params:
        conn.execute(
            update(messages)
            .where(_m.conversation_pk == pk, _m.seq == bindparam("p_seq"))
            .values(tokens=bindparam("p_tokens"), cum_tokens=bindparam("p_cum")),
            params,
        )
    for s in conn.execute(
        select(summaries.c.pk, summaries.c.text).where(summaries.c.conversation_pk == pk)
    ).all():
        conn.execute(
            update(summaries)
            .where(summaries.c.pk == s.pk)
            .values(tokens=counter.message({"role": "system", "content": codec.decode(s.text)}))
        )
    conn.execute(
        update(conversations)
        .where(_c.pk == pk)
        .values(
            model=counter.model,
            encoding=counter.encoding_name,
            token_profile=counter.profile,
            token_total=cum,
            revision=_c.revision + 1,
        )
    )


def first_system_text(conn: Connection, pk: int) -> str | None:
    """Text of the first system or developer message: the one tool definitions join."""
    data = conn.execute(
        select(_m.data)
        .where(_m.conversation_pk == pk, _m.role.in_(PREFIX_ROLES))
        .order_by(_m.seq)
        .limit(1)
    ).scalar()
    if data is None:
        return None
    return system_text([json.loads(codec_of(conn).decode(data))])
