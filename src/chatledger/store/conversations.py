"""Statements on the conversations table: find, create, update, list and delete."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, select, update

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
    "delete_conversation",
    "delete_owner",
    "delete_pks",
    "find_conversation",
    "insert_conversation",
    "list_conversations",
    "load_conversation",
    "lock_conversation",
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


def delete_pks(conn: Connection, pks: list[int]) -> int:
    """Delete conversations by key with their messages and summaries; returns how many.

    Their usage rows stay, unlinked and with their meta (which may quote replies) cleared:
    they are billing records, so deleting a conversation never resets its owner's spend."""
    if not pks:
        return 0
    for table in (messages, summaries):
        conn.execute(delete(table).where(table.c.conversation_pk.in_(pks)))
    conn.execute(
        update(completions)
        .where(completions.c.conversation_pk.in_(pks))
        .values(conversation_pk=None, meta=None)
    )
    return conn.execute(delete(conversations).where(_c.pk.in_(pks))).rowcount


def delete_conversation(conn: Connection, pk: int, shown_as: str) -> None:
    if delete_pks(conn, [pk]) == 0:
        raise ConversationNotFoundError(shown_as)


def delete_owner(conn: Connection, owner: str) -> int:
    """Delete every conversation of an owner, with its messages and summaries, and all of the
    owner's usage rows, reservations and budget lock (erasure)."""
    pks = list(conn.execute(select(_c.pk).where(_c.owner == owner)).scalars())
    deleted = 0
    for i in range(0, len(pks), 500):  # keep IN lists within every driver's parameter limit
        deleted += delete_pks(conn, pks[i : i + 500])
    for table in (completions, reservations, budget_locks):
        conn.execute(delete(table).where(table.c.owner == owner))
    return deleted
