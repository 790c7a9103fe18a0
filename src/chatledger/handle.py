"""A conversation handle's state: the conversation it is bound to and its row as last seen.

Pure and shared by both twins. A handle is bound to the conversation it opened, by its
integer key, which is never reused: once that conversation is gone, every call raises
:class:`ConversationNotFoundError` with the caller's id, and nothing reaches another
conversation that later took the same id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from chatledger.config import LedgerConfig
from chatledger.errors import InvalidArgumentError
from chatledger.rows import Appended, ConversationInfo, Loaded, Prepared, State, StoredMessage
from chatledger.tokens import TokenCounter
from chatledger.tool_state import ToolCallState

__all__ = ["Batch", "Handle", "check_key", "check_metadata_list", "check_range"]


def check_range(start: int | None, stop: int | None, limit: int | None) -> None:
    for name, v in (("start", start), ("stop", stop), ("limit", limit)):
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
            raise InvalidArgumentError(name, "must be a non-negative integer")


def check_key(key: str | None) -> None:
    """Idempotency keys: 1-200 printable characters (control characters are reserved for the
    keys of a batch's later messages, so no caller key can collide with one)."""
    if key is None:
        return
    if not isinstance(key, str) or not 1 <= len(key) <= 200:
        raise InvalidArgumentError("idempotency_key", "must be a string of 1-200 characters")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in key):
        raise InvalidArgumentError("idempotency_key", "must not contain control characters")


def check_metadata_list(
    items: Sequence[object], metadata: Sequence[Mapping[str, Any] | None] | None
) -> Sequence[Mapping[str, Any] | None] | None:
    if metadata is None:
        return None
    if isinstance(metadata, Mapping) or len(metadata) != len(items):
        raise InvalidArgumentError(
            "metadata", f"must hold one entry (or None) per message: {len(items)} here"
        )
    return metadata


@dataclass(frozen=True, slots=True)
class Batch:
    """A batch checked and counted against what the handle saw, ready for ``store.append``."""

    profile: str
    #: the tool state the counts depended on (False: none did)
    counted_against: str | Literal[False] | None
    prepared: list[Prepared]
    #: the state the fast path trusts (None: lock and read first)
    seen: State | None


class Handle:
    """The bound conversation (key, id, owner) and its row, kept current by its own writes."""

    def __init__(self, config: LedgerConfig, loaded: Loaded) -> None:
        self.config = config
        self.pk = loaded.pk
        #: the last request's pre-send count and rule families, for the drift report
        self.sent: tuple[int, frozenset[str]] | None = None
        self.load(loaded)

    def take_sent(self, prompt_tokens: int | None) -> tuple[int, frozenset[str]] | None:
        """What the request being recorded was counted at: the caller's figure, else the last
        request this handle built (used once)."""
        sent, self.sent = self.sent, None
        if prompt_tokens is not None:
            return prompt_tokens, sent[1] if sent is not None else frozenset()
        return sent

    def load(self, loaded: Loaded) -> ConversationInfo:
        info = loaded.info
        self._row = info
        #: the caller's id, the owner and the model, as the row last said
        self.id, self.owner, self.model = info.id, info.owner, info.model
        self._cached: ConversationInfo | None = info
        self.profile = loaded.token_profile
        self._updated_at = info.updated_at
        self.state = loaded.state
        return info

    @property
    def info(self) -> ConversationInfo:
        """The row as last read or written by this handle."""
        info = self._cached
        if info is None:
            st = self.state
            info = self._cached = replace(
                self._row,
                last_seq=st.last_seq,
                token_total=st.token_total,
                message_count=st.message_count,
                last_round_seq=st.last_round_seq,
                prefix_seq=st.prefix_seq,
                updated_at=self._updated_at,
                pending_tool_calls=tuple(ToolCallState.from_json(st.tool_state).pending),
            )
        return info

    def remember_window_start(self, start: int) -> None:
        """This handle's request just stored where its window started."""
        self._row = replace(self._row, window_start=start)
        self._cached = None

    @property
    def counter(self) -> TokenCounter:
        return self.config.counter(self.model)

    def batch(
        self,
        items: Sequence[object],
        metas: Sequence[Mapping[str, Any] | None] | None,
        status: str | None,
        fast: bool,
    ) -> Batch:
        """Check, serialise and count ``items`` against the state this handle saw."""
        counter = self.counter
        tool_state = self.state.tool_state
        prepared, depends = self.config.prepare(items, counter, metas, status, tool_state)
        against: str | Literal[False] | None = tool_state if depends else False
        return Batch(counter.profile, against, prepared, self.state if fast else None)

    def after_write(self, done: Appended) -> list[StoredMessage]:
        """Keep the running state current after this handle's own write."""
        stored = done.stored
        if done.state is not None and done.state.last_seq > self.state.last_seq:
            self.state = done.state
            self._updated_at = stored[-1].created_at
            self._cached = None
        return stored
