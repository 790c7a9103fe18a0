"""LangChain chat message history stored in chatledger.

:class:`ChatledgerHistory` is a ``BaseChatMessageHistory``, so it plugs into
``RunnableWithMessageHistory`` and anything else that takes one::

    from chatledger.integrations.langchain import ChatledgerHistory

    ledger = cl.Ledger("postgresql://...")
    chain = RunnableWithMessageHistory(
        model,
        lambda session_id: ChatledgerHistory(
            ledger, session_id, owner=user_id, strategy=cl.TokenBudget(8000)
        ),
    )

Messages are converted with ``langchain_core``'s own converters
(``convert_to_openai_messages`` on the way in, ``convert_to_messages`` on the way out) and
stored as chatledger's validated OpenAI-format messages, so the same conversation can be
windowed, counted, exported or continued with ``conv.chat`` outside LangChain. What the
OpenAI format cannot carry is kept in each stored message's ``metadata["langchain"]``: exactly
the fields that reading the stored message alone would not give back, with their values (the
message ``id``, ``additional_kwargs``, ``response_metadata``, ``usage_metadata``, a
``ToolMessage``'s ``name``, ``artifact`` and ``status``, content blocks that Chat Completions
flattens or drops, such as text blocks joined into one string or reasoning blocks, and the
message class, for chunks). So ``messages`` returns messages equal to those added, as
LangChain's ``InMemoryChatMessageHistory`` does, for every value JSON can hold; a value it
cannot (a tool ``artifact`` that is a DataFrame, say) is not stored, and tuples come back as
lists. The kept fields carry a digest of the stored message they were written with: a message
changed since through chatledger (``conv.update(system=...)`` rewrites one in place) is read
from its Chat Completions form alone, never with the old fields over the new content. Anything
the API would refuse (an unknown role, a ``name`` with spaces, a tool message answering no tool
call) raises chatledger's ``InvalidMessageError`` and stores nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from chatledger.errors import InvalidArgumentError, MissingDependencyError

try:
    from langchain_core.chat_history import BaseChatMessageHistory
    from langchain_core.messages import (
        BaseMessage,
        convert_to_messages,
        convert_to_openai_messages,
        messages_from_dict,
    )
except ImportError as exc:  # the adapter needs the framework it adapts
    raise MissingDependencyError(
        exc.name or "langchain_core", "chatledger.integrations.langchain"
    ) from None

from chatledger.conversation import AsyncConversation, Conversation
from chatledger.integrations.window_pairs import (
    awindow_pairs,
    message_digest,
    stored_pairs,
    window_pairs,
)
from chatledger.ledger import AsyncLedger, Ledger
from chatledger.rows import ConversationInfo
from chatledger.strategies import Strategy

__all__ = ["ChatledgerHistory", "from_openai", "to_openai"]

META_KEY = "langchain"
# the key, beside the kept fields, of the digest of the stored message they were written with
DIGEST_KEY = "digest"
# content blocks an AIMessage may carry that Chat Completions does not take back: reasoning,
# and the Responses function calls that convert_to_openai_messages already turned into
# tool_calls
_DROPPED_ASSISTANT_BLOCKS = frozenset(
    {"reasoning", "thinking", "redacted_thinking", "function_call", "tool_use"}
)

_MISSING = object()

StrategyArg = Strategy | Sequence[Strategy] | None


def to_openai(message: BaseMessage) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """A LangChain message as (OpenAI message dict, the metadata chatledger keeps for it):
    the fields the dict cannot carry, with their exact values."""
    msg = convert_to_openai_messages(message)
    if msg["role"] == "tool":
        msg.pop("name", None)  # the API refuses a name on tool messages; LangChain sets one
    elif msg["role"] == "assistant" and isinstance(msg.get("content"), list):
        msg["content"] = _sendable_assistant_content(msg["content"])
    extras = _differences(message, _plain(msg))
    if not extras:
        return msg, None
    return msg, {META_KEY: {**extras, DIGEST_KEY: message_digest(msg)}}


def _sendable_assistant_content(parts: list[Any]) -> str | list[Any]:
    kept = [
        p
        for p in parts
        if not (isinstance(p, Mapping) and p.get("type") in _DROPPED_ASSISTANT_BLOCKS)
    ]
    if all(isinstance(p, Mapping) and p.get("type") == "text" for p in kept):
        # what text_format="string" gives for text-only content
        return "\n".join(p["text"] for p in kept)
    return kept


def _json_value(value: object) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def _differences(original: BaseMessage, plain: BaseMessage) -> dict[str, Any]:
    """The fields of ``original`` that reading the stored dict alone would not give back
    (its class too, when that differs), each with its value; values JSON cannot hold are
    left out."""
    out: dict[str, Any] = {}
    if type(plain) is not type(original):
        out["type"] = original.type
    for name in type(original).model_fields:
        value = getattr(original, name)
        if name != "type" and getattr(plain, name, _MISSING) != value and _json_value(value):
            out[name] = value
    return out


def _plain(message: Mapping[str, Any]) -> BaseMessage:
    """A stored message as LangChain's converter reads it, with no metadata."""
    data = dict(message)
    if data.get("content") is None:
        data["content"] = ""  # an assistant message with only tool_calls / a refusal
    return convert_to_messages([data])[0]


def from_openai(message: Mapping[str, Any], metadata: Mapping[str, Any] | None) -> BaseMessage:
    """A stored message (and its metadata) back as a LangChain message. Kept fields written
    for another version of the message (edited since) are ignored: the stored message wins."""
    base = _plain(message)
    extras = metadata.get(META_KEY) if isinstance(metadata, Mapping) else None
    if not isinstance(extras, Mapping) or not extras:
        return base
    fields = dict(extras)
    digest = fields.pop(DIGEST_KEY, None)
    if digest is not None and digest != message_digest(message):
        return base
    restored = _restored(base, fields)
    if digest is None and not _gives_back(restored, message):
        return base  # written before digests were kept, and edited since
    return restored


def _restored(base: BaseMessage, fields: dict[str, Any]) -> BaseMessage:
    kind = fields.pop("type", None)
    if isinstance(kind, str) and kind != base.type:
        with contextlib.suppress(ValueError, TypeError):  # a class this LangChain lacks
            data = {**base.model_dump(), **fields, "type": kind}
            base = messages_from_dict([{"type": kind, "data": data}])[0]
    known = type(base).model_fields
    return base.model_copy(update={k: v for k, v in fields.items() if k in known})


def _gives_back(restored: BaseMessage, message: Mapping[str, Any]) -> bool:
    """Whether kept fields without a digest still belong to the stored message: the message
    they restore converts back to it."""
    try:
        return message_digest(to_openai(restored)[0]) == message_digest(message)
    except (ValueError, TypeError, KeyError):  # fields no converter takes back
        return False


class ChatledgerHistory(BaseChatMessageHistory):
    """A LangChain message history kept in a chatledger conversation.

    ``ledger`` is a :class:`~chatledger.Ledger` (sync methods; the async ones run them in a
    worker thread) or an :class:`~chatledger.AsyncLedger` (async methods only: the sync ones
    raise :class:`~chatledger.InvalidArgumentError`, since they cannot wait for the event
    loop). The conversation
    ``conversation_id`` is got or created on first use, with ``owner``, ``model`` and
    ``system`` as in ``ledger.conversation``.

    With a ``strategy`` (``cl.TokenBudget(8000)``, ``cl.LastRounds(10)``, a list), reading
    the history returns that strategy's window: the newest rounds that fit, never a tool
    result without its call, the pinned system prompt and any summary first. Without one it
    returns the whole stored history. Either way every message added stays stored. While the
    newest ``AIMessage``'s tool calls still wait for their ``ToolMessage`` results (between
    two invocations of a tool loop), chatledger cannot build a window; the history is then
    the pinned prefix and the current round, which is what the loop needs to go on.
    """

    def __init__(
        self,
        ledger: Ledger | AsyncLedger,
        conversation_id: str,
        *,
        owner: str | None = None,
        model: str | None = None,
        system: str | None = None,
        strategy: StrategyArg = None,
    ) -> None:
        super().__init__()
        if not isinstance(ledger, (Ledger, AsyncLedger)):
            raise InvalidArgumentError(
                "ledger", f"must be a chatledger Ledger or AsyncLedger, not {type(ledger).__name__}"
            )
        self.ledger, self.conversation_id, self.owner, self.model, self.system, self.strategy = (
            ledger,
            conversation_id,
            owner,
            model,
            system,
            strategy,
        )

    def __repr__(self) -> str:
        return f"<ChatledgerHistory {self.conversation_id!r} owner={self.owner!r}>"

    def _sync_ledger(self, method: str) -> Ledger:
        if isinstance(self.ledger, AsyncLedger):
            raise InvalidArgumentError(
                "ledger",
                f"is an AsyncLedger: ChatledgerHistory.{method} cannot run on it; use the async "
                "methods (aget_messages, aadd_messages, aclear), or give it a Ledger",
            )
        return self.ledger

    # --- the conversation -------------------------------------------------------------------

    def conversation(self) -> Conversation:
        """The backing conversation, got (or created) by id and owner, read afresh by each
        operation (other workers write to it too)."""
        ledger = self._sync_ledger("conversation()")
        return ledger.conversation(
            self.conversation_id, owner=self.owner, model=self.model, system=self.system
        )

    async def aconversation(self) -> AsyncConversation:
        """The backing conversation of an AsyncLedger (see :meth:`conversation`)."""
        if not isinstance(self.ledger, AsyncLedger):
            raise InvalidArgumentError(
                "ledger", "is a Ledger: aconversation() needs an AsyncLedger; use conversation()"
            )
        return await self.ledger.conversation(
            self.conversation_id, owner=self.owner, model=self.model, system=self.system
        )

    # --- sync -------------------------------------------------------------------------------

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]  # read-only here
        """The stored history, or the strategy's window of it, oldest first."""
        conv = self.conversation()
        if self.strategy is None:
            pairs = stored_pairs(conv.records())
        else:
            pairs = window_pairs(conv, self.strategy)
        return [from_openai(m, meta) for m, meta in pairs]

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Store the messages atomically: all of them, in order, or none."""
        pairs = [to_openai(m) for m in messages]
        if not pairs:
            return
        # one transaction, with per-message metadata (``extend`` takes none)
        self.conversation().extend([m for m, _ in pairs], metadata=[meta for _, meta in pairs])

    def clear(self) -> None:
        """Remove the stored messages, keeping the conversation: its id, owner, model,
        title, metadata and usage records (``conv.truncate``). The pinned system prompt
        stays when this history has a ``system``; without one, everything goes."""
        conv = self.conversation()
        conv.truncate(self._kept(conv.info))

    # --- async ------------------------------------------------------------------------------

    async def aget_messages(self) -> list[BaseMessage]:
        """The stored history, or the strategy's window of it, oldest first."""
        if not isinstance(self.ledger, AsyncLedger):
            return await asyncio.to_thread(lambda: self.messages)
        conv = await self.aconversation()
        if self.strategy is None:
            pairs = stored_pairs(await conv.records())
        else:
            pairs = await awindow_pairs(conv, self.strategy)
        return [from_openai(m, meta) for m, meta in pairs]

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Store the messages atomically: all of them, in order, or none."""
        if not isinstance(self.ledger, AsyncLedger):
            await asyncio.to_thread(self.add_messages, messages)
            return
        pairs = [to_openai(m) for m in messages]
        if not pairs:
            return
        conv = await self.aconversation()
        await conv.extend([m for m, _ in pairs], metadata=[meta for _, meta in pairs])

    async def aclear(self) -> None:
        """Remove the stored messages, keeping the conversation (see :meth:`clear`)."""
        if not isinstance(self.ledger, AsyncLedger):
            await asyncio.to_thread(self.clear)
            return
        conv = await self.aconversation()
        await conv.truncate(self._kept(conv.info))

    def _kept(self, info: ConversationInfo) -> int:
        """How many messages a clear keeps: the pinned prefix if this history has a system."""
        return info.prefix_seq if self.system is not None else 0
