"""Every statement chatledger runs, as functions of a SQLAlchemy ``Connection``.

The sync ledger calls them directly and the async ledger through ``AsyncConnection.run_sync``,
so both execute the very same statements and checks: a fix lands once.

Writes to a conversation start with an ``UPDATE`` of its row. That one statement is the
per-conversation lock on every backend: a row lock on PostgreSQL and InnoDB, the database
write lock on SQLite (taken before any read, so two writers queue on the busy timeout instead
of failing with a stale snapshot). Under it, ``seq`` is assigned gap-free and the running
totals stay consistent with the rows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import (
    Connection,
    Row,
    Table,
    bindparam,
    delete,
    func,
    insert,
    select,
    tuple_,
    union_all,
    update,
)

from chatledger import tokens as _tokens
from chatledger.encryption import PLAIN, Codec
from chatledger.errors import (
    ConversationExistsError,
    ConversationNotFoundError,
    IdempotencyConflictError,
    InvalidMessageError,
    Problem,
)
from chatledger.messages import ToolCallState
from chatledger.records import ConversationInfo, StoredMessage, UsageRecord, UsageTotals
from chatledger.store.schema import (
    SCHEMA_VERSION,
    completions,
    conversations,
    messages,
    metadata,
    summaries,
    version_table,
)
from chatledger.strategies.base import Entry, Lookback
from chatledger.tokens import TokenCounter

__all__ = [
    "Appended",
    "Loaded",
    "NewConversation",
    "Prepared",
    "Snapshot",
    "Stale",
    "State",
    "append",
    "create_conversation",
    "delete_conversation",
    "delete_idle",
    "delete_owner",
    "ensure_schema",
    "find_conversation",
    "list_conversations",
    "read_records",
    "record_reply",
    "recount",
    "rotate_batch",
    "save_summary",
    "update_conversation",
    "usage_records",
    "usage_totals",
    "window_snapshot",
]

_PREFIX_ROLES = ("system", "developer")


def utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(dt: datetime) -> datetime:
    """SQLite and MySQL hand back naive datetimes; they were written as UTC."""
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _codec(conn: Connection) -> Codec:
    """The ledger's codec (encryption at rest, or none), carried by its engine's options."""
    codec = conn.get_execution_options().get("chatledger_codec", PLAIN)
    assert isinstance(codec, Codec)
    return codec


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
    id: str
    owner: str | None
    model: str
    encoding: str
    token_profile: str
    title: str | None
    meta: str | None


class Stale(Exception):
    """What the batch was counted against (the model, the open tool calls) changed since it was
    read; the caller refreshes, counts again and retries."""


@dataclass(frozen=True, slots=True)
class State:
    """A conversation's running state as a handle last saw it (the row's append columns)."""

    last_seq: int
    token_total: int
    message_count: int
    last_round_seq: int
    prefix_seq: int
    tool_state: str | None


@dataclass(frozen=True, slots=True)
class Appended:
    """What an append stored, and the conversation's tool state after it."""

    stored: list[StoredMessage]
    tool_state: str | None
    replayed: bool = False
    #: the conversation's state right after this write (None for a replay)
    state: State | None = None


@dataclass(frozen=True, slots=True)
class Loaded:
    """A conversation row as a handle keeps it."""

    pk: int
    info: ConversationInfo
    tool_state: str | None


# --- schema -----------------------------------------------------------------------------------


def ensure_schema(conn: Connection, *, create: bool) -> None:
    """Create the tables if asked, then check the recorded schema version."""
    from chatledger.errors import SchemaVersionError

    if create:
        metadata.create_all(conn, checkfirst=True)
    try:
        found = conn.execute(select(version_table.c.version_num)).scalars().all()
    except Exception as exc:  # the table is missing: tables were not created
        raise SchemaVersionError(
            "no chatledger schema in this database; create it with create_tables=True"
        ) from exc
    if not found:
        conn.execute(insert(version_table).values(version_num=SCHEMA_VERSION))
    elif found != [SCHEMA_VERSION]:
        raise SchemaVersionError(
            f"database schema is at revision {', '.join(found)}, this chatledger uses "
            f"{SCHEMA_VERSION}"
        )


# --- conversations ----------------------------------------------------------------------------


def _info(row: Row[Any], codec: Codec = PLAIN) -> ConversationInfo:
    state = ToolCallState.from_json(row.tool_state)
    return ConversationInfo(
        id=row.id,
        owner=row.owner,
        model=row.model,
        encoding=row.encoding,
        title=row.title,
        metadata=_loads(codec.decode_opt(row.meta)),
        created_at=_aware(row.created_at),
        updated_at=_aware(row.updated_at),
        message_count=row.message_count,
        token_total=row.token_total,
        last_seq=row.last_seq,
        prefix_seq=row.prefix_seq,
        last_round_seq=row.last_round_seq,
        pending_tool_calls=tuple(state.pending),
    )


def _loaded(row: Row[Any], codec: Codec = PLAIN) -> Loaded:
    return Loaded(row.pk, _info(row, codec), row.tool_state)


def find_conversation(conn: Connection, conversation_id: str, owner: str | None) -> Loaded:
    """The conversation's row; not found also when it belongs to another owner."""
    row = conn.execute(select(conversations).where(conversations.c.id == conversation_id)).first()
    if row is None or (owner is not None and row.owner != owner):
        raise ConversationNotFoundError(conversation_id)
    return _loaded(row, _codec(conn))


def create_conversation(
    conn: Connection, new: NewConversation, first: Sequence[Prepared]
) -> Loaded:
    """Insert a conversation and its opening messages in one transaction."""
    now = utcnow()
    exists = conn.execute(select(conversations.c.pk).where(conversations.c.id == new.id)).first()
    if exists is not None:
        raise ConversationExistsError(new.id)
    result = conn.execute(
        insert(conversations).values(
            id=new.id,
            owner=new.owner,
            model=new.model,
            encoding=new.encoding,
            token_profile=new.token_profile,
            title=new.title,
            meta=_codec(conn).encode_opt(new.meta),
            created_at=now,
            updated_at=now,
            message_count=0,
            token_total=0,
            last_seq=0,
            last_round_seq=0,
            prefix_seq=0,
            tool_state=None,
        )
    )
    pk = int(result.inserted_primary_key[0])  # type: ignore[index]
    if first:
        append(conn, pk, new.token_profile, False, first, None)
    return _loaded(
        conn.execute(select(conversations).where(conversations.c.pk == pk)).one(), _codec(conn)
    )


def update_conversation(conn: Connection, pk: int, values: dict[str, Any]) -> Loaded:
    values = {**values, "updated_at": utcnow()}
    if values.get("meta") is not None:
        values["meta"] = _codec(conn).encode(values["meta"])
    n = conn.execute(update(conversations).where(conversations.c.pk == pk).values(**values))
    if n.rowcount == 0:
        raise ConversationNotFoundError(str(pk))
    return _loaded(
        conn.execute(select(conversations).where(conversations.c.pk == pk)).one(), _codec(conn)
    )


def list_conversations(
    conn: Connection, owner: str | None, limit: int, offset: int
) -> list[ConversationInfo]:
    q = select(conversations)
    if owner is not None:
        q = q.where(conversations.c.owner == owner)
    q = q.order_by(conversations.c.updated_at.desc(), conversations.c.pk.desc())
    codec = _codec(conn)
    return [_info(r, codec) for r in conn.execute(q.limit(limit).offset(offset))]


def _delete_pks(conn: Connection, pks: list[int]) -> int:
    if not pks:
        return 0
    for table in (messages, summaries, completions):
        conn.execute(delete(table).where(table.c.conversation_pk.in_(pks)))
    return conn.execute(delete(conversations).where(conversations.c.pk.in_(pks))).rowcount


def delete_conversation(conn: Connection, conversation_id: str, owner: str | None) -> None:
    _delete_pks(conn, [find_conversation(conn, conversation_id, owner).pk])


def delete_owner(conn: Connection, owner: str) -> int:
    """Delete every conversation of an owner, with its messages, summaries and usage."""
    pks = list(
        conn.execute(select(conversations.c.pk).where(conversations.c.owner == owner)).scalars()
    )
    deleted = 0
    for i in range(0, len(pks), 500):  # keep IN lists within every driver's parameter limit
        deleted += _delete_pks(conn, pks[i : i + 500])
    return deleted


# --- messages ---------------------------------------------------------------------------------


def _record(row: Row[Any], codec: Codec = PLAIN) -> StoredMessage:
    return StoredMessage(
        seq=row.seq,
        role=row.role,
        message=json.loads(codec.decode(row.data)),
        tokens=row.tokens,
        cumulative_tokens=row.cum_tokens,
        round_seq=row.round_seq,
        created_at=_aware(row.created_at),
        status=row.status,
        metadata=_loads(codec.decode_opt(row.meta)),
        idempotency_key=row.idempotency_key,
    )


def _batch_key(key: str, i: int) -> str:
    return key if i == 0 else f"{key}#{i}"


def _replay(
    conn: Connection, pk: int, key: str, batch: Sequence[Prepared]
) -> list[StoredMessage] | None:
    """What an earlier write with this idempotency key stored, or None if there was none."""
    first = conn.execute(
        select(messages.c.seq).where(
            messages.c.conversation_pk == pk, messages.c.idempotency_key == key
        )
    ).scalar()
    if first is None:
        return None
    rows = conn.execute(
        select(messages)
        .where(
            messages.c.conversation_pk == pk,
            messages.c.seq >= first,
            messages.c.seq < first + len(batch),
        )
        .order_by(messages.c.seq)
    ).all()
    stored = [_record(r, _codec(conn)) for r in rows]
    same = len(stored) == len(batch) and all(
        s.idempotency_key == _batch_key(key, i) and s.message == p.message
        for i, (s, p) in enumerate(zip(stored, batch, strict=False))
    )
    if not same:
        raise IdempotencyConflictError(
            f"idempotency key {key!r} was already used for different messages"
        )
    return stored


_c = conversations.c
_LOCK = (
    update(conversations).where(_c.pk == bindparam("p_pk")).values(updated_at=bindparam("p_now"))
)
_STATE = select(
    _c.model,
    _c.token_profile,
    _c.last_seq,
    _c.token_total,
    _c.message_count,
    _c.last_round_seq,
    _c.prefix_seq,
    _c.tool_state,
).where(_c.pk == bindparam("p_pk"))
_INSERT_MESSAGES = insert(messages)
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
    _c.last_seq == bindparam("p_last_seq"), _c.token_profile == bindparam("p_profile")
)


@dataclass(slots=True)
class _Planned:
    rows: list[dict[str, Any]]
    stored: list[StoredMessage]
    state: dict[str, Any]
    problems: list[Problem]


def _plan(
    pk: int, before: State, batch: Sequence[Prepared], key: str | None, codec: Codec = PLAIN
) -> _Planned:
    """Seqs, running totals, rounds and pairing for ``batch`` after ``before``: no I/O."""
    now = utcnow()
    tools = ToolCallState.from_json(before.tool_state)
    problems: list[Problem] = []
    seq, cum = before.last_seq, before.token_total
    round_seq, prefix_seq = before.last_round_seq, before.prefix_seq
    rows: list[dict[str, Any]] = []
    out: list[StoredMessage] = []
    for i, p in enumerate(batch):
        role = p.message["role"]
        tools.feed(p.message, i, problems, seq + 1)
        seq += 1
        cum += p.tokens
        if role == "user":
            round_seq = seq
        if prefix_seq == seq - 1 and role in _PREFIX_ROLES:
            prefix_seq = seq
        ikey = None if key is None else _batch_key(key, i)
        rows.append(
            {
                "conversation_pk": pk,
                "seq": seq,
                "role": role,
                "data": codec.encode(p.data),
                "tokens": p.tokens,
                "cum_tokens": cum,
                "round_seq": round_seq,
                "created_at": now,
                "status": p.status,
                "meta": codec.encode_opt(p.meta),
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
                metadata=_loads(p.meta),
                idempotency_key=ikey,
            )
        )
    state = {
        "p_pk": pk,
        "p_now": now,
        "n_last_seq": seq,
        "n_token_total": cum,
        "n_message_count": before.message_count + len(rows),
        "n_last_round_seq": round_seq,
        "n_prefix_seq": prefix_seq,
        "n_tool_state": tools.to_json(),
    }
    return _Planned(rows, out, state, problems)


def append(
    conn: Connection,
    pk: int,
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
    if seen is not None and batch:
        planned = _plan(pk, seen, batch, key, _codec(conn))
        if not planned.problems:
            done = conn.execute(
                _SET_STATE_IF,
                {**planned.state, "p_last_seq": seen.last_seq, "p_profile": profile},
            )
            if done.rowcount == 1:
                conn.execute(_INSERT_MESSAGES, planned.rows)
                return _appended(planned)
        # stale or refused on what the handle saw: decide on the row itself
    locked = conn.execute(_LOCK, {"p_pk": pk, "p_now": utcnow()})
    if locked.rowcount == 0:
        raise ConversationNotFoundError(str(pk))
    conv = conn.execute(_STATE, {"p_pk": pk}).one()
    if conv.token_profile != profile or (
        counted_against is not False and conv.tool_state != counted_against
    ):
        raise Stale()
    if key is not None:
        replayed = _replay(conn, pk, key, batch)
        if replayed is not None:
            return Appended(replayed, conv.tool_state, replayed=True)
    before = State(
        conv.last_seq,
        conv.token_total,
        conv.message_count,
        conv.last_round_seq,
        conv.prefix_seq,
        conv.tool_state,
    )
    planned = _plan(pk, before, batch, key, _codec(conn))
    if planned.problems:
        raise InvalidMessageError(planned.problems)
    if planned.rows:
        conn.execute(_INSERT_MESSAGES, planned.rows)
    conn.execute(_SET_STATE, planned.state)
    return _appended(planned)


def _appended(planned: _Planned) -> Appended:
    st = planned.state
    after = State(
        st["n_last_seq"],
        st["n_token_total"],
        st["n_message_count"],
        st["n_last_round_seq"],
        st["n_prefix_seq"],
        st["n_tool_state"],
    )
    return Appended(planned.stored, st["n_tool_state"], state=after)


def read_records(
    conn: Connection,
    pk: int,
    start: int | None,
    stop: int | None,
    limit: int | None,
    newest: bool = False,
) -> list[StoredMessage]:
    """Messages with ``start <= seq < stop``, oldest first; ``newest`` takes the last ``limit``."""
    codec = _codec(conn)
    q = select(messages).where(messages.c.conversation_pk == pk)
    if start is not None:
        q = q.where(messages.c.seq >= start)
    if stop is not None:
        q = q.where(messages.c.seq < stop)
    if newest:
        q = q.order_by(messages.c.seq.desc())
        if limit is not None:
            q = q.limit(limit)
        return [_record(r, codec) for r in reversed(conn.execute(q).all())]
    q = q.order_by(messages.c.seq)
    if limit is not None:
        q = q.limit(limit)
    return [_record(r, codec) for r in conn.execute(q)]


def recount(conn: Connection, pk: int, counter: TokenCounter) -> None:
    """Re-count every stored message for a new model's rules (a model change, done once)."""
    conn.execute(update(conversations).where(conversations.c.pk == pk).values(updated_at=utcnow()))
    rows = conn.execute(
        select(messages.c.seq, messages.c.data)
        .where(messages.c.conversation_pk == pk)
        .order_by(messages.c.seq)
    ).all()
    cum = 0
    params = []
    codec = _codec(conn)
    counts = counter.messages([json.loads(codec.decode(r.data)) for r in rows])
    for r, tokens in zip(rows, counts, strict=True):
        cum += tokens
        params.append({"p_seq": r.seq, "p_tokens": tokens, "p_cum": cum})
    if params:
        conn.execute(
            update(messages)
            .where(messages.c.conversation_pk == pk, messages.c.seq == bindparam("p_seq"))
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
        .where(conversations.c.pk == pk)
        .values(
            model=counter.model,
            encoding=counter.encoding_name,
            token_profile=counter.profile,
            token_total=cum,
        )
    )


def system_text(conn: Connection, pk: int) -> str | None:
    """Text of the first system or developer message: the one tool definitions join."""
    data = conn.execute(
        select(messages.c.data)
        .where(messages.c.conversation_pk == pk, messages.c.role.in_(_PREFIX_ROLES))
        .order_by(messages.c.seq)
        .limit(1)
    ).scalar()
    if data is None:
        return None
    return _tokens.system_text([json.loads(_codec(conn).decode(data))])


def count_rows(conn: Connection, pk: int) -> int:
    return int(
        conn.execute(
            select(func.count()).select_from(messages).where(messages.c.conversation_pk == pk)
        ).scalar_one()
    )


# --- windows and summaries --------------------------------------------------------------------


_m = messages.c
_ROW_COLS = (
    _m.seq,
    _m.role,
    _m.data,
    _m.tokens,
    _m.cum_tokens,
    _m.round_seq,
    _m.created_at,
    _m.status,
    _m.meta,
    _m.idempotency_key,
)
_W_CONV = select(conversations).where(_c.pk == bindparam("p_pk"))
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
# the budget's cut point: one step down the (conversation_pk, cum_tokens) index
_W_FLOOR_TOKENS = (
    select(_m.seq, _m.round_seq)
    .where(_m.conversation_pk == bindparam("p_pk"), _m.cum_tokens >= bindparam("p_threshold"))
    .order_by(_m.cum_tokens)
    .limit(1)
)
_W_FLOOR_ROUNDS = (
    select(_m.seq)
    .where(
        _m.conversation_pk == bindparam("p_pk"),
        _m.role == "user",
        _m.seq > bindparam("p_prefix"),
        _m.seq <= bindparam("p_last"),
    )
    .order_by(_m.seq.desc())
    .limit(1)
    .offset(bindparam("p_offset"))
)
# the prefix and the newest rows, in one statement (two primary-key ranges)
_W_ROWS = union_all(
    select(*_ROW_COLS).where(
        _m.conversation_pk == bindparam("p_pk"), _m.seq <= bindparam("p_prefix")
    ),
    select(*_ROW_COLS).where(
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
_W_CUM_AT = select(_m.cum_tokens).where(
    _m.conversation_pk == bindparam("p_pk"), _m.seq == bindparam("p_seq")
)


def _from_tuple(r: Any, codec: Codec) -> StoredMessage:
    seq, role, data, tokens, cum, round_seq, created_at, status, meta, key = r
    return StoredMessage(
        seq=seq,
        role=role,
        message=json.loads(codec.decode(data)),
        tokens=tokens,
        cumulative_tokens=cum,
        round_seq=round_seq,
        created_at=created_at if created_at.tzinfo is not None else created_at.replace(tzinfo=UTC),
        status=status,
        metadata=None if meta is None else json.loads(codec.decode(meta)),
        idempotency_key=key,
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
    #: the rows behind ``entries``, read with their content when the lookback was bounded
    rows: list[Any] | None = None
    codec: Codec = PLAIN

    def tail(self, start: int) -> list[StoredMessage] | None:
        """The stored messages from ``start`` on, if this snapshot read them already."""
        if self.rows is None:
            return None
        return [_from_tuple(r, self.codec) for r in self.rows if r[0] >= start]


def window_snapshot(
    conn: Connection,
    pk: int,
    lookback: Lookback | None,
    with_summary: bool,
) -> Snapshot:
    """Read what the strategies need: the prefix, the summary and the newest history's
    metadata (seq, role, tokens, round), as far back as ``lookback`` reaches and no further.

    With a bounded lookback the newest rows come with their content, so the window costs
    three statements (four with a summary): the conversation row, the cut point, the rows.
    """
    codec = _codec(conn)
    row = conn.execute(_W_CONV, {"p_pk": pk}).one()
    loaded = _loaded(row, codec)
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
        if lookback.tokens is not None:
            j = conn.execute(
                _W_FLOOR_TOKENS, {"p_pk": pk, "p_threshold": total - lookback.tokens}
            ).first()
            reads += 1
            if j is not None:
                floors.append(j.round_seq if j.round_seq > prefix_seq else floor)
            else:
                floors.append(last + 1)
        if lookback.rounds is not None:
            nth = conn.execute(
                _W_FLOOR_ROUNDS, {**params, "p_offset": lookback.rounds - 1}
            ).scalar()
            reads += 1
            floors.append(floor if nth is None else nth)
        floor = max(floor, min(floors))

    rows: list[Any] | None = None
    if lookback is not None:
        got = sorted(conn.execute(_W_ROWS, {**params, "p_floor": floor}).all(), key=lambda r: r[0])
        reads += len(got)
        prefix = [_from_tuple(r, codec) for r in got if r[0] <= prefix_seq]
        rows = [r for r in got if r[0] >= floor]
        entries = [Entry(r[0], r[1], r[3], r[5]) for r in rows]
    else:
        prefix = read_records(conn, pk, 1, prefix_seq + 1, None) if prefix_seq else []
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
    return Snapshot(loaded, prefix, summary, entries, start, start_tokens, reads, rows, codec)


def save_summary(
    conn: Connection, pk: int, upto_seq: int, text: str, tokens: int, model: str | None
) -> tuple[int, str]:
    """Store a summary unless a summary reaching as far already exists (another worker
    summarised meanwhile); returns the summary now newest."""
    conn.execute(update(conversations).where(conversations.c.pk == pk).values(updated_at=utcnow()))
    newest = conn.execute(
        select(summaries.c.upto_seq, summaries.c.text)
        .where(summaries.c.conversation_pk == pk)
        .order_by(summaries.c.upto_seq.desc(), summaries.c.pk.desc())
        .limit(1)
    ).first()
    codec = _codec(conn)
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


# --- the usage ledger -------------------------------------------------------------------------


def _usage_record(row: Row[Any], codec: Codec = PLAIN) -> UsageRecord:
    return UsageRecord(
        message_seq=row.message_seq,
        model=row.model,
        response_id=row.response_id,
        system_fingerprint=row.system_fingerprint,
        finish_reason=row.finish_reason,
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        cached_tokens=row.cached_tokens,
        reasoning_tokens=row.reasoning_tokens,
        cost_micros=row.cost_micros,
        created_at=_aware(row.created_at),
        metadata=_loads(codec.decode_opt(row.meta)),
    )


def record_reply(
    conn: Connection,
    pk: int,
    profile: str,
    counted_against: str | Literal[False] | None,
    batch: Sequence[Prepared],
    key: str | None,
    usage: dict[str, Any],
    seen: State | None = None,
) -> tuple[Appended | None, UsageRecord]:
    """Store a reply's message and its usage row in one transaction (idempotent by ``key``)."""
    if batch:
        done: Appended | None = append(conn, pk, profile, counted_against, batch, key, seen)
        assert done is not None
        seq: int | None = done.stored[-1].seq
    else:
        done, seq = None, None
        conn.execute(
            update(conversations).where(conversations.c.pk == pk).values(updated_at=utcnow())
        )
    codec = _codec(conn)
    if key is not None and (done is None or done.replayed):
        existing = conn.execute(
            select(completions).where(
                completions.c.conversation_pk == pk, completions.c.idempotency_key == key
            )
        ).first()
        if existing is not None:
            return done, _usage_record(existing, codec)
    now = utcnow()
    values = {
        **usage,
        "meta": codec.encode_opt(usage.get("meta")),
        "conversation_pk": pk,
        "message_seq": seq,
        "created_at": now,
        "idempotency_key": key,
    }
    conn.execute(_INSERT_COMPLETION, values)
    return done, UsageRecord(
        message_seq=seq,
        model=usage["model"],
        response_id=usage.get("response_id"),
        system_fingerprint=usage.get("system_fingerprint"),
        finish_reason=usage.get("finish_reason"),
        prompt_tokens=usage["prompt_tokens"],
        completion_tokens=usage["completion_tokens"],
        cached_tokens=usage["cached_tokens"],
        reasoning_tokens=usage["reasoning_tokens"],
        cost_micros=usage.get("cost_micros"),
        created_at=now,
        metadata=_loads(usage.get("meta")),
    )


_INSERT_COMPLETION = insert(completions)


def usage_records(conn: Connection, pk: int, limit: int | None) -> list[UsageRecord]:
    q = (
        select(completions)
        .where(completions.c.conversation_pk == pk)
        .order_by(completions.c.pk.desc())
    )
    if limit is not None:
        q = q.limit(limit)
    codec = _codec(conn)
    return [_usage_record(r, codec) for r in reversed(conn.execute(q).all())]


def usage_totals(
    conn: Connection,
    pk: int | None,
    owner: str | None,
    since: datetime | None,
    until: datetime | None,
) -> UsageTotals:
    """Sums over the usage ledger for one conversation, one owner, or everything."""
    c = completions.c
    q = select(
        func.count(),
        func.coalesce(func.sum(c.prompt_tokens), 0),
        func.coalesce(func.sum(c.completion_tokens), 0),
        func.coalesce(func.sum(c.cached_tokens), 0),
        func.coalesce(func.sum(c.reasoning_tokens), 0),
        func.coalesce(func.sum(c.cost_micros), 0),
        func.count(c.pk) - func.count(c.cost_micros),
    ).select_from(completions)
    if pk is not None:
        q = q.where(c.conversation_pk == pk)
    if owner is not None:
        q = q.where(
            c.conversation_pk.in_(select(conversations.c.pk).where(conversations.c.owner == owner))
        )
    if since is not None:
        q = q.where(c.created_at >= since)
    if until is not None:
        q = q.where(c.created_at < until)
    row = conn.execute(q).one()
    return UsageTotals(*(int(v) for v in row))


# --- retention and key rotation ---------------------------------------------------------------


def delete_idle(conn: Connection, cutoff: datetime, owner: str | None) -> int:
    """Delete conversations last active before ``cutoff`` (only ``owner``'s when given)."""
    q = select(conversations.c.pk).where(conversations.c.updated_at < cutoff)
    if owner is not None:
        q = q.where(conversations.c.owner == owner)
    pks = list(conn.execute(q).scalars())
    deleted = 0
    for i in range(0, len(pks), 500):
        deleted += _delete_pks(conn, pks[i : i + 500])
    return deleted


_ENCRYPTED: dict[str, tuple[Table, tuple[str, ...], tuple[str, ...]]] = {
    "messages": (messages, ("conversation_pk", "seq"), ("data", "meta")),
    "summaries": (summaries, ("pk",), ("text",)),
    "completions": (completions, ("pk",), ("meta",)),
    "conversations": (conversations, ("pk",), ("meta",)),
}
ENCRYPTED_TABLES = tuple(_ENCRYPTED)


def rotate_batch(
    conn: Connection, name: str, after: tuple[Any, ...] | None, batch: int
) -> tuple[int, tuple[Any, ...] | None]:
    """Re-encrypt the next ``batch`` rows of one table after key ``after``; returns how many
    rows were read and the key to continue from."""
    table, keys, cols = _ENCRYPTED[name]
    key_cols = [table.c[k] for k in keys]
    q = select(*key_cols, *(table.c[c] for c in cols)).order_by(*key_cols).limit(batch)
    if after is not None:
        q = q.where(tuple_(*key_cols) > tuple_(*after))
    rows = conn.execute(q).all()
    codec = _codec(conn)
    for r in rows:
        values = {c: codec.rotate(getattr(r, c)) for c in cols if getattr(r, c) is not None}
        if values:
            cond = [table.c[k] == getattr(r, k) for k in keys]
            conn.execute(update(table).where(*cond).values(**values))
    last = tuple(getattr(rows[-1], k) for k in keys) if rows else None
    return len(rows), last
