"""Statements on the conversations table: find, create, update, list and delete."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, bindparam, delete, insert, select, update

from chatledger.append_plan import utcnow
from chatledger.errors import ConversationExistsError, ConversationNotFoundError
from chatledger.rows import Loaded, NewConversation
from chatledger.store.mapping import CONVERSATION_COLUMNS, codec_of, stored_owner, to_loaded
from chatledger.store.schema import (
    budget_locks,
    completions,
    conversations,
    messages,
    reservations,
    summaries,
)

__all__ = [
    "BATCH_CONVERSATIONS",
    "BATCH_MESSAGES",
    "Swept",
    "delete_conversation",
    "delete_locked",
    "delete_owner_batch",
    "delete_pks",
    "find_conversation",
    "insert_conversation",
    "list_conversations",
    "load_conversation",
    "lock_conversation",
    "take_batch",
    "update_conversation",
]

_c = conversations.c
_BY_PK = select(*CONVERSATION_COLUMNS).where(_c.pk == bindparam("p_pk"))
_LOCK = (
    update(conversations).where(_c.pk == bindparam("p_pk")).values(updated_at=bindparam("p_now"))
)


_BY_KEY = select(*CONVERSATION_COLUMNS).where(
    _c.owner == bindparam("p_owner"), _c.id == bindparam("p_id")
)


def find_conversation(conn: Connection, conversation_id: str, owner: str | None) -> Loaded:
    """The conversation ``(owner, id)``; ``owner=None`` is the conversation with no owner.
    Another owner's conversation of that id is never looked at."""
    row = conn.execute(_BY_KEY, {"p_owner": stored_owner(owner), "p_id": conversation_id}).first()
    if row is None:
        raise ConversationNotFoundError(conversation_id)
    return to_loaded(row, codec_of(conn))


def load_conversation(conn: Connection, pk: int, shown_as: str) -> Loaded:
    """The row with key ``pk``; a handle's own conversation, never another one of its id."""
    row = conn.execute(_BY_PK, {"p_pk": pk}).first()
    if row is None:
        raise ConversationNotFoundError(shown_as)
    return to_loaded(row, codec_of(conn))


def lock_conversation(conn: Connection, pk: int, shown_as: str) -> None:
    """Take the per-conversation lock: the first statement of every locked write."""
    if conn.execute(_LOCK, {"p_pk": pk, "p_now": utcnow()}).rowcount == 0:
        raise ConversationNotFoundError(shown_as)


def insert_conversation(conn: Connection, new: NewConversation) -> int:
    """Insert an empty conversation; returns its key. Exists only when this owner has the id."""
    owner = stored_owner(new.owner)
    if conn.execute(_BY_KEY, {"p_owner": owner, "p_id": new.id}).first() is not None:
        raise ConversationExistsError(new.id)
    now = utcnow()
    result = conn.execute(
        insert(conversations).values(
            id=new.id,
            owner=owner,
            model=new.model,
            encoding=new.encoding,
            token_profile=new.token_profile,
            title=new.title,
            meta=codec_of(conn).encode_opt(new.meta),
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
    return int(result.inserted_primary_key[0])  # type: ignore[index]


def update_conversation(conn: Connection, pk: int, values: dict[str, Any], shown_as: str) -> Loaded:
    values = {**values, "updated_at": utcnow()}
    if values.get("meta") is not None:
        values["meta"] = codec_of(conn).encode(values["meta"])
    if conn.execute(update(conversations).where(_c.pk == pk).values(**values)).rowcount == 0:
        raise ConversationNotFoundError(shown_as)
    return load_conversation(conn, pk, shown_as)


def set_window_start(conn: Connection, pk: int, start: int) -> None:
    """Remember where the window just sent started (a hint: no lock, the last writer wins)."""
    conn.execute(update(conversations).where(conversations.c.pk == pk).values(window_start=start))


def list_conversations(
    conn: Connection, owner: str | None, limit: int, offset: int
) -> list[Loaded]:
    q = select(*CONVERSATION_COLUMNS)
    if owner is not None:  # a filter here: None lists every owner's (an administrator's view)
        q = q.where(_c.owner == owner)
    q = q.order_by(_c.updated_at.desc(), _c.pk.desc()).limit(limit).offset(offset)
    codec = codec_of(conn)
    return [to_loaded(r, codec) for r in conn.execute(q)]


def delete_pks(conn: Connection, pks: list[int], *, erase_usage: bool = False) -> int:
    """Delete conversations by key with their messages and summaries; returns how many.

    Their usage rows stay, unlinked and with their meta (which may quote replies) cleared:
    they are billing records, so deleting a conversation never resets its owner's spend.
    ``erase_usage`` deletes them instead (an owner's erasure)."""
    if not pks:
        return 0
    for table in (messages, summaries):
        conn.execute(delete(table).where(table.c.conversation_pk.in_(pks)))
    linked = completions.c.conversation_pk.in_(pks)
    if erase_usage:
        conn.execute(delete(completions).where(linked))
    else:
        conn.execute(update(completions).where(linked).values(conversation_pk=None, meta=None))
    return conn.execute(delete(conversations).where(_c.pk.in_(pks))).rowcount


def delete_conversation(conn: Connection, pk: int, shown_as: str) -> None:
    if delete_pks(conn, [pk]) == 0:
        raise ConversationNotFoundError(shown_as)


# --- retention in batches -----------------------------------------------------------------------

#: The most conversations one retention transaction deletes (also the longest IN list, within
#: every driver's parameter limit) ...
BATCH_CONVERSATIONS = 200
#: ... and the most messages it aims at: a conversation is never split across transactions, so
#: one longer than this is a batch of its own. 2,000 messages of 1-2 KB hold their locks for
#: about 20 ms on PostgreSQL (benchmarks/bench_scale.py).
BATCH_MESSAGES = 2_000


@dataclass(frozen=True, slots=True)
class Swept:
    """A batched delete's progress, carried from one transaction to the next: a value, so a
    batch whose transaction failed leaves no trace in it."""

    deleted: int = 0  # conversations deleted so far
    after: int = 0  # the last key looked at (a sweep that walks the keys)
    done: bool = False


def take_batch(conn: Connection, candidates: Select[Any]) -> list[int]:
    """The keys of the first ``candidates`` rows (``pk, message_count``) that fit one batch:
    at most :data:`BATCH_CONVERSATIONS`, and :data:`BATCH_MESSAGES` unless it is one."""
    taken: list[int] = []
    held = 0
    for pk, count in conn.execute(candidates.limit(BATCH_CONVERSATIONS)):
        if taken and held + count > BATCH_MESSAGES:
            break
        taken.append(int(pk))
        held += int(count)
    return taken


def delete_locked(
    conn: Connection, pks: list[int], still: ColumnElement[bool], *, erase_usage: bool = False
) -> int:
    """Lock the conversations ``pks`` that still match ``still``, then delete them whole.

    The lock is a locking read (``FOR UPDATE``: it also sees the newest commit in MySQL's
    REPEATABLE READ snapshot); SQLite, which has none, takes its write lock first with an
    ``UPDATE`` of the same rows, as every append does. An append that won the lock has
    committed its message, which is then deleted with the rest; one that waits finds no row
    and fails with ConversationNotFoundError. A conversation that became active since ``pks``
    was read no longer matches ``still`` and is kept."""
    if not pks:
        return 0
    mine = (_c.pk.in_(pks), still)
    if conn.dialect.name == "sqlite":  # an UPDATE on PostgreSQL would write every row twice
        conn.execute(update(conversations).where(*mine).values(updated_at=_c.updated_at))
    locked = select(_c.pk).where(*mine).order_by(_c.pk).with_for_update()
    return delete_pks(conn, list(conn.execute(locked).scalars()), erase_usage=erase_usage)


def delete_owner_batch(conn: Connection, owner: str, swept: Swept) -> Swept:
    """One transaction of an owner's erasure: a batch of its conversations (with their
    messages, summaries and usage rows); once none is left, a batch of its other usage rows;
    then its reservations and budget lock, and the sweep is done."""
    mine = _c.owner == owner
    pks = take_batch(conn, select(_c.pk, _c.message_count).where(mine).order_by(_c.id))
    if pks:
        deleted = delete_locked(conn, pks, mine, erase_usage=True)
        return replace(swept, deleted=swept.deleted + deleted)
    usage = completions.c
    # in the owner index's order: by pk, PostgreSQL walks every row once none is left
    left = select(usage.pk).where(usage.owner == owner).order_by(usage.created_at)
    rows = list(conn.execute(left.limit(BATCH_CONVERSATIONS)).scalars())
    if rows:
        conn.execute(delete(completions).where(usage.pk.in_(rows)))
        return swept
    for table in (reservations, budget_locks):
        conn.execute(delete(table).where(table.c.owner == owner))
    return replace(swept, done=True)
