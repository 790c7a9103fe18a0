"""The backup format: one pydantic model per JSON line, and how a line is written.

A backup is a header line (:class:`BackupHeader`) and one :class:`ConversationLine` per
conversation. Lines are written by :func:`render`, not by pydantic's serialiser, so that every
export of the same data is the same bytes: keys in the order of the models, times in UTC with
microseconds (``2026-01-02T03:04:05.000006Z``), JSON compact and not ASCII-escaped. Message
dicts and metadata keep the key order they were stored with (they are stored as text).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from chatledger.store.backup import ConversationDump

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "BackupHeader",
    "ConversationLine",
    "FinetuneLine",
    "ImportReport",
    "MessageLine",
    "Refusal",
    "Repair",
    "SummaryLine",
    "UsageLine",
    "as_conversation",
    "dumps",
    "from_dump",
    "render",
    "ts",
]

FORMAT_NAME = "chatledger-backup"
FORMAT_VERSION = 1
_INT = 2**31 - 1
_BIG = 2**63 - 1
M = TypeVar("M", bound=BaseModel)

# ---------------------------------------------------------------------------- the format


class _Line(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


_Id = Annotated[str, StringConstraints(min_length=1, max_length=255)]
_Name = Annotated[str, StringConstraints(min_length=1, max_length=128)]
_Short = Annotated[str, StringConstraints(max_length=32)]
_Long = Annotated[str, StringConstraints(max_length=255)]
_Count = Annotated[int, Field(ge=0, le=_INT)]
_Seq = Annotated[int, Field(ge=1, le=_INT)]
_Meta = dict[str, Any] | None


class BackupHeader(_Line):
    """The first line of a backup: what it is, and which version of the format."""

    format: Literal["chatledger-backup"]
    version: Annotated[int, Field(ge=1)]


class MessageLine(_Line):
    """One message: the API dict as stored, and what the ledger keeps beside it."""

    seq: _Seq
    message: dict[str, Any]
    created_at: AwareDatetime
    status: _Short | None = None
    metadata: _Meta = None
    #: as stored: the caller's key (``key\\x1fN`` for the N-th message of a keyed batch), or
    #: its keyed hash (``hk1:...``) in an encrypted ledger
    idempotency_key: _Long | None = None


class SummaryLine(_Line):
    """A stored summary of the messages up to ``upto_seq``."""

    upto_seq: _Count
    text: Annotated[str, StringConstraints(min_length=1)]
    #: its tokens as the window carries it (its strategy's template and role), as counted
    tokens: _Count
    model: _Name | None = None
    created_at: AwareDatetime
    metadata: _Meta = None


class UsageLine(_Line):
    """One usage row (a billed response), figures as recorded."""

    message_seq: _Seq | None = None
    model: _Name
    response_id: _Long | None = None
    system_fingerprint: _Long | None = None
    finish_reason: _Short | None = None
    prompt_tokens: _Count = 0
    completion_tokens: _Count = 0
    cached_tokens: _Count = 0
    reasoning_tokens: _Count = 0
    cache_write_tokens: _Count | None = None
    cost_micros: Annotated[int, Field(ge=-_BIG, le=_BIG)] | None = None
    created_at: AwareDatetime
    metadata: _Meta = None
    idempotency_key: _Long | None = None


class ConversationLine(_Line):
    """One conversation, whole. ``parent``/``forked_at``: the conversation (of the same owner)
    it was forked from, and the last seq they share."""

    id: _Id
    owner: _Id | None = None
    model: _Name
    title: Annotated[str, StringConstraints(max_length=1024)] | None = None
    metadata: _Meta = None
    created_at: AwareDatetime
    updated_at: AwareDatetime
    parent: _Id | None = None
    forked_at: _Count | None = None
    #: where the window last sent started (strategies that hold it still read it)
    window_start: _Count | None = None
    messages: list[MessageLine]
    summaries: list[SummaryLine] = []
    usage: list[UsageLine] = []


class FinetuneLine(BaseModel):
    """A fine-tuning line: ``messages`` (and ``tools``, which a ledger does not store); other
    keys that tools add are ignored. ``id`` names the conversation when present."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    messages: list[dict[str, Any]]
    tools: list[Any] | None = None
    id: _Id | None = None


# ---------------------------------------------------------------------------- the import report


@dataclass(frozen=True, slots=True)
class Refusal:
    """A line that was not imported, and why (one line of text)."""

    line: int
    conversation_id: str | None
    reason: str

    def __str__(self) -> str:
        who = f" ({self.conversation_id})" if self.conversation_id else ""
        return f"line {self.line}{who}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Repair:
    """A change made to a conversation so that it could be imported."""

    line: int
    conversation_id: str
    change: str

    def __str__(self) -> str:
        return f"line {self.line} ({self.conversation_id}): {self.change}"


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What an import did: conversations written, found already present and identical,
    refused (nothing of them written), and the repairs made."""

    imported: int = 0
    unchanged: int = 0
    refused: list[Refusal] = field(default_factory=list)
    repaired: list[Repair] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every line was imported or already present."""
        return not self.refused


# ---------------------------------------------------------------------------- rendering


def ts(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def render(c: ConversationLine) -> str:
    """A conversation as its backup line: keys in the order of the models, times in UTC."""
    return dumps(
        {
            "id": c.id,
            "owner": c.owner,
            "model": c.model,
            "title": c.title,
            "metadata": c.metadata,
            "created_at": ts(c.created_at),
            "updated_at": ts(c.updated_at),
            "parent": c.parent,
            "forked_at": c.forked_at,
            "window_start": c.window_start,
            "messages": [
                {
                    "seq": m.seq,
                    "message": m.message,
                    "created_at": ts(m.created_at),
                    "status": m.status,
                    "metadata": m.metadata,
                    "idempotency_key": m.idempotency_key,
                }
                for m in c.messages
            ],
            "summaries": [
                {
                    "upto_seq": s.upto_seq,
                    "text": s.text,
                    "tokens": s.tokens,
                    "model": s.model,
                    "created_at": ts(s.created_at),
                    "metadata": s.metadata,
                }
                for s in c.summaries
            ],
            "usage": [{**u.model_dump(), "created_at": ts(u.created_at)} for u in c.usage],
        }
    )


def _pick(model: type[M], source: object, **given: Any) -> M:
    """``model`` built from the attributes of ``source`` it shares (no validation: the values
    come from the database)."""
    names = [n for n in model.model_fields if n not in given]
    return model.model_construct(**{n: getattr(source, n, None) for n in names}, **given)


def from_dump(d: ConversationDump) -> ConversationLine:
    """A stored conversation as its backup line."""
    return _pick(
        ConversationLine,
        d.loaded.info,
        messages=[_pick(MessageLine, m) for m in d.messages],
        summaries=[_pick(SummaryLine, s) for s in d.summaries],
        usage=[
            _pick(UsageLine, u, **{**{"idempotency_key": key}, **extras})
            for u, key, extras in d.usage
        ],
    )


def as_conversation(
    ft: FinetuneLine, conversation_id: str, owner: str | None, model: str
) -> ConversationLine:
    """A fine-tuning line as a conversation created now, with nothing but its messages."""
    now = datetime.now(UTC)
    return ConversationLine.model_construct(
        id=conversation_id,
        owner=owner,
        model=model,
        title=None,
        metadata=None,
        created_at=now,
        updated_at=now,
        parent=None,
        forked_at=None,
        window_start=None,
        messages=[
            MessageLine.model_construct(
                seq=i + 1,
                message=m,
                created_at=now,
                status=None,
                metadata=None,
                idempotency_key=None,
            )
            for i, m in enumerate(ft.messages)
        ],
        summaries=[],
        usage=[],
    )
