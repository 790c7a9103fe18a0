"""A ledger's settings, and the argument checks and message preparation both twins share.

Everything that is not I/O happens here, before a transaction opens, so that the lock a write
takes is held only for the statements themselves, and so that both twins refuse the same input
with the same error.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from chatledger.budgets import Budget
from chatledger.drift import DriftWatch
from chatledger.errors import InvalidArgumentError, InvalidMessageError, Problem
from chatledger.messages import _normalize
from chatledger.pricing import PriceTable
from chatledger.rows import NewConversation, Prepared
from chatledger.tokens import TokenCounter
from chatledger.tool_state import ToolCallState

__all__ = ["LedgerConfig", "check_id", "new_conversation_id"]

_MAX_ID = 255
DEFAULT_MAX_MESSAGE_BYTES = 8 * 1024 * 1024
DEFAULT_RESERVATION_TTL = timedelta(minutes=15)


def new_conversation_id() -> str:
    return uuid.uuid4().hex


def check_id(value: object, field: str) -> str:
    """Ids and owners: 1-255 printable characters, no surrounding whitespace.

    The whitespace rule is a safety rule too: MySQL compares ``'user-7 '`` equal to
    ``'user-7'``, so an owner with trailing blanks could read another owner's rows.
    """
    if not isinstance(value, str):
        raise InvalidArgumentError(field, f"must be a string, got {type(value).__name__}")
    if not value:
        raise InvalidArgumentError(field, "must not be empty")
    if len(value) > _MAX_ID:
        raise InvalidArgumentError(field, f"must be at most {_MAX_ID} characters")
    if value != value.strip():
        raise InvalidArgumentError(field, "must not start or end with whitespace")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise InvalidArgumentError(field, "must not contain control characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgumentError(field, "must be valid Unicode") from None
    return value


def dump_json(value: Any, field: str, *, object_only: bool = True) -> str | None:
    """Metadata as JSON text; refused when it would not survive a round trip."""
    if value is None:
        return None
    if object_only and not isinstance(value, Mapping):
        raise InvalidArgumentError(field, f"must be a dict, got {type(value).__name__}")
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        text.encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(field, f"must be JSON-serialisable ({exc})") from None
    if "\\u0000" in text:
        raise InvalidArgumentError(field, "must not contain NUL characters")
    return text


@dataclass
class LedgerConfig:
    """Settings both ledgers share; the counters are cached per model (one lookup each)."""

    default_model: str
    max_message_bytes: int
    prices: PriceTable = field(default_factory=PriceTable.default)
    budgets: tuple[Budget, ...] = ()
    #: how long a request's budget reservation holds when its reply is never recorded (a
    #: crashed worker, an abandoned stream): longer than the client's timeout with retries
    reservation_ttl: timedelta = DEFAULT_RESERVATION_TTL

    def __post_init__(self) -> None:
        if self.max_message_bytes < 1:
            raise InvalidArgumentError("max_message_bytes", "must be at least 1")
        if not isinstance(self.prices, PriceTable):
            raise InvalidArgumentError("prices", "must be a chatledger.PriceTable")
        for i, b in enumerate(self.budgets):
            if not isinstance(b, Budget):
                raise InvalidArgumentError(f"budgets[{i}]", "must be a chatledger.Budget")
        if not isinstance(self.reservation_ttl, timedelta) or self.reservation_ttl <= timedelta(0):
            raise InvalidArgumentError("reservation_ttl", "must be a positive timedelta")
        self._counters: dict[str, TokenCounter] = {}
        self.drift = DriftWatch()
        self._lock = threading.Lock()

    def counter(self, model: str) -> TokenCounter:
        c = self._counters.get(model)
        if c is None:
            with self._lock:
                c = self._counters.get(model)
                if c is None:
                    c = self._counters[model] = TokenCounter(model)
        return c

    def check_model(self, model: object) -> str:
        if not isinstance(model, str) or not model.strip() or len(model) > 128:
            raise InvalidArgumentError("model", "must be a non-empty string of at most 128")
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in model):
            # PostgreSQL refuses NUL in text; no model name has control characters
            raise InvalidArgumentError("model", "must not contain NUL or control characters")
        return model

    def new_conversation(
        self,
        conversation_id: str | None,
        owner: str | None,
        model: str | None,
        title: str | None,
        metadata: Mapping[str, Any] | None,
    ) -> NewConversation:
        cid = new_conversation_id() if conversation_id is None else check_id(conversation_id, "id")
        if owner is not None:
            check_id(owner, "owner")
        m = self.check_model(model if model is not None else self.default_model)
        if title is not None and (not isinstance(title, str) or len(title) > 1024):
            raise InvalidArgumentError("title", "must be a string of at most 1024 characters")
        if title is not None and "\x00" in title:
            raise InvalidArgumentError("title", "must not contain NUL characters")
        counter = self.counter(m)
        return NewConversation(
            id=cid,
            owner=owner,
            model=m,
            encoding=counter.encoding_name,
            token_profile=counter.profile,
            title=title,
            meta=dump_json(metadata, "metadata"),
        )

    def prepare(
        self,
        items: Iterable[object],
        counter: TokenCounter,
        metadata: Iterable[Mapping[str, Any] | None] | None = None,
        status: str | None = None,
        tool_state: str | None = None,
    ) -> tuple[list[Prepared], bool]:
        """Check, serialise and count messages; every problem of the batch in one error.

        A tool result is counted under the name of the call it answers, so results that answer
        calls still open in the conversation (``tool_state``) are counted against them; the
        second value says whether any count did, so the write can check that state held.
        """
        problems: list[Problem] = []
        msgs: list[dict[str, Any]] = []
        datas: list[str] = []
        metas = list(metadata) if metadata is not None else None
        for i, item in enumerate(items):
            before = len(problems)
            msg = _normalize(item, i, problems)
            if msg is None or len(problems) > before:
                continue
            data = json.dumps(msg, ensure_ascii=False, separators=(",", ":"))
            size = len(data)
            if size * 4 > self.max_message_bytes:
                size = len(data.encode("utf-8"))
            if size > self.max_message_bytes:
                problems.append(
                    Problem(
                        i,
                        "",
                        f"is {size} bytes as JSON, over the limit of "
                        f"{self.max_message_bytes} (max_message_bytes)",
                    )
                )
                continue
            msgs.append(msg)
            datas.append(data)
        if problems:
            raise InvalidMessageError(problems)
        if status is not None:  # a server's finish_reason: whatever it sent fits the column
            status = str(status).replace("\x00", "")[:32] or None
        meta_texts = [
            dump_json(metas[i], "metadata") if metas is not None and i < len(metas) else None
            for i in range(len(msgs))
        ]
        # only leading tool results can answer calls already stored
        depends = bool(msgs) and msgs[0]["role"] == "tool"
        stub = ToolCallState.from_json(tool_state).assistant_stub() if depends else None
        counts = counter.messages([stub, *msgs])[1:] if stub else counter.messages(msgs)
        batch = [
            Prepared(m, d, n, meta, status)
            for m, d, n, meta in zip(msgs, datas, counts, meta_texts, strict=True)
        ]
        return batch, depends
