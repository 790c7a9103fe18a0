"""Rows to values: one mapper per record type, and the codec each connection carries."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, Connection, Table

from chatledger.encryption import PLAIN, Codec
from chatledger.rows import ConversationInfo, Loaded, StoredMessage, UsageRecord
from chatledger.store.schema import NO_OWNER, completions, conversations, messages
from chatledger.tool_state import ToolCallState

__all__ = [
    "CONVERSATION_COLUMNS",
    "MESSAGE_COLUMNS",
    "USAGE_COLUMNS",
    "codec_of",
    "stored_owner",
    "to_loaded",
    "to_message",
    "to_usage",
]

#: the columns each mapper reads, in its order


def _columns(table: Table, names: str) -> tuple[Column[Any], ...]:
    return tuple(table.c[n] for n in names.split())


MESSAGE_COLUMNS = _columns(
    messages, "seq role data tokens cum_tokens round_seq created_at status meta idempotency_key"
)
CONVERSATION_COLUMNS = _columns(
    conversations,
    "pk id owner model encoding token_profile title meta created_at updated_at "
    "message_count token_total last_seq prefix_seq last_round_seq tool_state parent_id forked_at "
    "window_start revision",
)
USAGE_COLUMNS = _columns(
    completions,
    "message_seq model response_id system_fingerprint finish_reason prompt_tokens "
    "completion_tokens cached_tokens reasoning_tokens cost_micros created_at meta "
    "cache_write_tokens",
)


def stored_owner(owner: str | None) -> str:
    """An owner as stored: NO_OWNER ("") for none (see ``schema.NO_OWNER``)."""
    return NO_OWNER if owner is None else owner


def codec_of(conn: Connection) -> Codec:
    """The ledger's codec (encryption at rest, or none), carried by its engine's options."""
    codec = conn.get_execution_options().get("chatledger_codec", PLAIN)
    assert isinstance(codec, Codec)
    return codec


def _aware(dt: datetime) -> datetime:
    """SQLite and MySQL hand back naive datetimes; they were written as UTC."""
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def _json(codec: Codec, text: str | None) -> Any:
    return None if text is None else json.loads(codec.decode(text))


def to_message(r: Any, codec: Codec) -> StoredMessage:
    """A row of ``MESSAGE_COLUMNS`` as a :class:`StoredMessage`."""
    seq, role, data, tokens, cum, round_seq, created_at, status, meta, key = r
    return StoredMessage(
        seq=seq,
        role=role,
        message=json.loads(codec.decode(data)),
        tokens=tokens,
        cumulative_tokens=cum,
        round_seq=round_seq,
        created_at=_aware(created_at),
        status=status,
        metadata=_json(codec, meta),
        idempotency_key=key,
    )


def to_loaded(r: Any, codec: Codec) -> Loaded:
    """A row of ``CONVERSATION_COLUMNS`` as the :class:`Loaded` state a handle keeps."""
    (pk, cid, owner, model, encoding, profile, title, meta, created, updated) = r[:10]
    (count, total, last_seq, prefix_seq, last_round_seq, stored_state, parent, forked_at) = r[10:18]
    window_start, revision = r[18:20]
    tool_state = codec.decode_opt(stored_state)  # pending tool-call ids and names
    info = ConversationInfo(
        id=cid,
        owner=owner or None,  # NO_OWNER ("") is how "no owner" is stored
        model=model,
        encoding=encoding,
        title=title,
        metadata=_json(codec, meta),
        created_at=_aware(created),
        updated_at=_aware(updated),
        message_count=count,
        token_total=total,
        last_seq=last_seq,
        prefix_seq=prefix_seq,
        last_round_seq=last_round_seq,
        pending_tool_calls=tuple(ToolCallState.from_json(tool_state).pending),
        parent=parent,
        forked_at=forked_at,
        window_start=window_start,
        revision=revision,
    )
    return Loaded(pk, info, tool_state, profile)


def to_usage(r: Any, codec: Codec) -> UsageRecord:
    """A row of ``USAGE_COLUMNS`` as a :class:`UsageRecord`."""
    seq, model, rid, fingerprint, finish, prompt, completion, cached, reasoning, cost = r[:10]
    created_at, meta, written = r[10:13]
    return UsageRecord(
        seq,
        model,
        codec.decode_opt(rid),
        fingerprint,
        finish,
        prompt,
        completion,
        cached,
        reasoning,
        cost,
        _aware(created_at),
        _json(codec, meta),
        written,
    )
