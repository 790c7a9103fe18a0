"""Pydantic AI message history stored in chatledger.

Pydantic AI keeps a run's history as ``ModelMessage``s (``ModelRequest`` and
``ModelResponse`` with their parts); chatledger stores Chat Completions messages. This module
converts both ways and gives an agent a chatledger window::

    from chatledger.integrations.pydantic_ai import chatledger_history

    agent = Agent(model, instructions="Be brief.",
                  capabilities=[chatledger_history(conv, cl.TokenBudget(8000))])
    agent.run_sync("Hi")  # stored, with the reply; the model got the window

Pydantic AI 2 runs history processors as capabilities (``ProcessHistory``); this one, before
each model request, stores the messages not stored yet (the new user prompt, the previous
step's reply and tool results) and returns the conversation's window, which Pydantic AI sends
and keeps as the run's history; after the run it stores the final reply. Without it,
:func:`window_messages` gives ``message_history`` and :func:`store_messages` stores
``result.new_messages()``.

Each part becomes one Chat Completions message: a ``SystemPromptPart`` a system message, a
``UserPromptPart`` a user message (text, images by URL or bytes, wav/mp3 audio and PDF bytes as
content parts), a ``ToolReturnPart`` (a tool's retry too) a tool message with the text
Pydantic AI sends, a ``RetryFeedbackPart`` (or a legacy ``RetryPromptPart``) a user message, or
a tool message when it names a tool call; a ``ModelResponse`` is one assistant message, its
``TextPart``s joined and its ``ToolCallPart``s as ``tool_calls``. A ``ThinkingPart`` is not sent
back through Chat Completions, so it is kept only in the metadata. Every stored message keeps, in
``metadata["pydantic_ai"]``, the ``ModelMessage`` it came from, holding only the parts it
carries (serialised with ``ModelMessagesTypeAdapter``), so reading gives back exactly what was
stored, and a window that starts inside a request still reads as one. Messages chatledger holds
without that metadata (written by ``conv.chat``, a summary), or edited since it was written (it
keeps a digest of the message), are converted from their Chat Completions form. A part with
no Chat Completions form (a video, a native tool call, a file the model made) raises
:class:`~chatledger.InvalidArgumentError` naming it, and nothing is stored.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

from chatledger.errors import InvalidArgumentError, MissingDependencyError

try:
    from pydantic_ai import RunContext
    from pydantic_ai.agent import AgentRunResult
    from pydantic_ai.capabilities import AbstractCapability
    from pydantic_ai.messages import (
        BinaryContent,
        CachePoint,
        CapabilityLoadDeltaPart,
        ImageUrl,
        InstructionBaselinePart,
        ModelMessage,
        ModelMessagesTypeAdapter,
        ModelRequest,
        ModelRequestPart,
        ModelResponse,
        ModelResponsePart,
        ModelSettingsDeltaPart,
        RetryFeedbackPart,
        RetryPromptPart,
        SystemPromptPart,
        TextContent,
        TextPart,
        ThinkingPart,
        ToolAvailabilityDeltaPart,
        ToolCallPart,
        ToolReturnPart,
        UserContent,
        UserPromptPart,
    )
    from pydantic_ai.models import ModelRequestContext
except ImportError as exc:  # the adapter needs the framework it adapts
    raise MissingDependencyError(
        exc.name or "pydantic_ai", "chatledger.integrations.pydantic_ai"
    ) from None

from chatledger.conversation import AsyncConversation, Conversation
from chatledger.integrations.window_pairs import (
    Pair,
    awindow_pairs,
    close_unanswered,
    message_digest,
    stored_pairs,
    window_pairs,
)
from chatledger.strategies import Strategy

__all__ = [
    "ChatledgerHistory",
    "astore_messages",
    "awindow_messages",
    "chatledger_history",
    "from_openai",
    "store_messages",
    "to_openai",
    "window_messages",
]

META_KEY = "pydantic_ai"
TEXT_SEPARATOR = "\n\n"  # how Pydantic AI's OpenAI model joins a reply's text parts
_AUDIO_FORMATS = {"audio/wav": "wav", "audio/x-wav": "wav", "audio/mpeg": "mp3", "audio/mp3": "mp3"}

# parts that record a change of the run's setup and are never sent as messages: kept in the
# metadata of a neighbouring message of the same request
_RECORDS = (
    ToolAvailabilityDeltaPart,
    CapabilityLoadDeltaPart,
    ModelSettingsDeltaPart,
    InstructionBaselinePart,
)

StrategyArg = Strategy | Sequence[Strategy] | None


# --- ModelMessages -> Chat Completions ----------------------------------------------------------


def _refuse(where: str, what: object) -> InvalidArgumentError:
    kind = getattr(what, "part_kind", None) or getattr(what, "kind", None) or type(what).__name__
    return InvalidArgumentError(
        where, f"{type(what).__name__} ({kind}) has no Chat Completions form chatledger can store"
    )


def _content_part(item: UserContent, where: str) -> dict[str, Any] | None:
    """One item of a user prompt as a Chat Completions content part (None for a cache point,
    which marks the request and carries no content)."""
    if isinstance(item, str):
        return {"type": "text", "text": item}
    if isinstance(item, TextContent):
        return {"type": "text", "text": item.content}
    if isinstance(item, CachePoint):
        return None
    if isinstance(item, ImageUrl):
        return {"type": "image_url", "image_url": {"url": item.url}}
    if isinstance(item, BinaryContent):
        if item.is_image:
            return {"type": "image_url", "image_url": {"url": item.data_uri}}
        if item.media_type in _AUDIO_FORMATS:
            data = base64.b64encode(item.data).decode()
            return {
                "type": "input_audio",
                "input_audio": {"data": data, "format": _AUDIO_FORMATS[item.media_type]},
            }
        if item.media_type == "application/pdf":
            name = item.identifier or "document.pdf"
            return {"type": "file", "file": {"file_data": item.data_uri, "filename": name}}
    raise _refuse(where, item)


def _user_message(part: UserPromptPart, where: str) -> dict[str, Any]:
    if isinstance(part.content, str):
        return {"role": "user", "content": part.content}
    parts = [
        p
        for i, item in enumerate(part.content)
        if (p := _content_part(item, f"{where}.content[{i}]"))
    ]
    return {"role": "user", "content": parts}


def _arguments(part: ToolCallPart) -> str:
    """Call arguments as valid JSON (a model's broken JSON is kept as a JSON string; the part in
    the metadata has it as it was)."""
    raw = part.args_as_json_str()
    try:
        json.loads(raw)
    except ValueError:
        return json.dumps(raw)
    return raw


def _request_message(part: ModelRequestPart, where: str) -> dict[str, Any]:
    if isinstance(part, SystemPromptPart):
        return {"role": "system", "content": part.content}
    if isinstance(part, UserPromptPart):
        return _user_message(part, where)
    if isinstance(part, ToolReturnPart):
        return {
            "role": "tool",
            "tool_call_id": part.tool_call_id,
            "content": part.model_response_str(),
        }
    if isinstance(part, RetryFeedbackPart):
        return {"role": "user", "content": part.model_response()}
    if isinstance(part, RetryPromptPart):  # legacy: a retry of a tool call or of the output
        if part.tool_name is None:
            return {"role": "user", "content": part.model_response()}
        return {"role": "tool", "tool_call_id": part.tool_call_id, "content": part.model_response()}
    raise _refuse(where, part)


def _response_message(message: ModelResponse, where: str) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for i, part in enumerate(message.parts):
        if isinstance(part, TextPart):
            texts.append(part.content)
        elif isinstance(part, ToolCallPart):
            function = {"name": part.tool_name, "arguments": _arguments(part)}
            calls.append({"id": part.tool_call_id, "type": "function", "function": function})
        elif not isinstance(part, ThinkingPart):  # thinking is kept in the metadata only
            raise _refuse(f"{where}.parts[{i}]", part)
    out: dict[str, Any] = {"role": "assistant", "content": TEXT_SEPARATOR.join(texts)}
    if calls:
        out["tool_calls"] = calls
        if not texts:
            out["content"] = None
    return out


def _dump(message: ModelMessage) -> dict[str, Any]:
    dumped: dict[str, Any] = ModelMessagesTypeAdapter.dump_python([message], mode="json")[0]
    return dumped


def _tool_results_first(part: ModelRequestPart) -> int:
    """Tool results lead a request, as Pydantic AI sends them: the API takes nothing else
    while a call is unanswered."""
    return 0 if isinstance(part, ToolReturnPart | RetryPromptPart) and _answers_a_call(part) else 1


def _answers_a_call(part: ToolReturnPart | RetryPromptPart) -> bool:
    return not isinstance(part, RetryPromptPart) or part.tool_name is not None


def to_openai(messages: Sequence[ModelMessage]) -> list[Pair]:
    """Pydantic AI messages as (Chat Completions message, the metadata chatledger keeps with
    it) pairs, one per request part and one per response."""
    out: list[Pair] = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if isinstance(message, ModelResponse):
            msg = _response_message(message, where)
            saved: dict[str, Any] = {"message": _dump(message), "digest": message_digest(msg)}
            out.append((msg, {META_KEY: saved}))
            continue
        if not isinstance(message, ModelRequest):
            raise _refuse(where, message)
        groups = sorted(_request_groups(message, where), key=lambda g: _tool_results_first(g[1]))
        for n, (i, part, riders) in enumerate(groups):
            msg = _request_message(part, f"{where}.parts[{i}]")
            alone = dataclasses.replace(message, parts=riders)
            kept = {"message": _dump(alone), "continues": n > 0, "digest": message_digest(msg)}
            out.append((msg, {META_KEY: kept}))
    return out


def _request_groups(
    message: ModelRequest, where: str
) -> list[tuple[int, ModelRequestPart, list[ModelRequestPart]]]:
    """Each part that becomes a message (with its index), and the parts its metadata keeps: it,
    and the records before it (after it, for the last), which are never sent as messages."""
    groups: list[tuple[int, ModelRequestPart, list[ModelRequestPart]]] = []
    pending: list[ModelRequestPart] = []
    for i, part in enumerate(message.parts):
        if isinstance(part, _RECORDS):
            pending.append(part)
            continue
        groups.append((i, part, [*pending, part]))
        pending = []
    if pending and not groups:
        raise InvalidArgumentError(where, "a request of records alone has no message to keep")
    if pending:
        i, part, kept = groups[-1]
        groups[-1] = (i, part, [*kept, *pending])
    return groups


# --- Chat Completions -> ModelMessages ----------------------------------------------------------


def _stored(
    message: Mapping[str, Any], metadata: Mapping[str, Any] | None
) -> tuple[ModelMessage, bool] | None:
    """The message kept in the metadata, and whether it continues the request before it; None
    when there is none, it does not load (written by another version, or by hand), or it no
    longer gives the stored message (edited since: ``conv.update(system=...)``, ``conv.edit``):
    the stored message is then read from its Chat Completions form."""
    kept = metadata.get(META_KEY) if isinstance(metadata, Mapping) else None
    if not isinstance(kept, Mapping) or not isinstance(kept.get("message"), Mapping):
        return None
    if kept.get("digest", message_digest(message)) != message_digest(message):
        return None
    try:
        loaded = ModelMessagesTypeAdapter.validate_python([kept["message"]])[0]
    except ValueError:  # pydantic's ValidationError is one
        return None
    return loaded, bool(kept.get("continues"))


def _text(content: object) -> str:
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else []
    return "".join(p.get("text", "") for p in parts if isinstance(p, Mapping))


def _data(uri: str) -> UserContent:
    try:
        return BinaryContent.from_data_uri(uri)
    except ValueError:
        return "[data omitted]"


def _user_content(content: object) -> str | list[UserContent]:
    if isinstance(content, str) or not isinstance(content, list):
        return _text(content)
    items: list[UserContent] = []
    for part in content:
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind == "image_url":
            url = part["image_url"]["url"]
            items.append(_data(url) if url.startswith("data:") else ImageUrl(url))
        elif kind == "input_audio":
            audio = part["input_audio"]
            media = "audio/wav" if audio.get("format") == "wav" else "audio/mpeg"
            items.append(BinaryContent(base64.b64decode(audio["data"]), media_type=media))
        elif kind == "file" and str(part["file"].get("file_data", "")).startswith("data:"):
            items.append(_data(part["file"]["file_data"]))
        elif kind == "text":
            items.append(part["text"])
        else:
            items.append(f"[{kind} omitted]")
    return items


def _plain(message: Mapping[str, Any], call_names: dict[str, str]) -> ModelMessage:
    """A message chatledger holds without Pydantic AI metadata, from its Chat Completions form."""
    role = message.get("role")
    if role == "assistant":
        parts: list[ModelResponsePart] = []
        if _text(message.get("content")):
            parts.append(TextPart(_text(message.get("content"))))
        for call in message.get("tool_calls") or ():
            name = call.get("function", {}).get("name", "")
            call_names[call["id"]] = name
            args = call.get("function", {}).get("arguments", "{}")
            parts.append(ToolCallPart(name, args, tool_call_id=call["id"]))
        return ModelResponse(parts=parts)
    if role == "tool":
        call_id = message["tool_call_id"]
        name = call_names.get(call_id, "")
        content = _text(message.get("content"))
        return ModelRequest(parts=[ToolReturnPart(name, content, tool_call_id=call_id)])
    if role in ("system", "developer"):
        return ModelRequest(parts=[SystemPromptPart(_text(message.get("content")))])
    return ModelRequest(parts=[UserPromptPart(_user_content(message.get("content")))])


def from_openai(
    pairs: Sequence[tuple[Mapping[str, Any], Mapping[str, Any] | None]],
) -> list[ModelMessage]:
    """Stored messages (with their metadata) back as Pydantic AI messages: the parts of one
    request are one ``ModelRequest`` again."""
    out: list[ModelMessage] = []
    call_names: dict[str, str] = {}
    joinable = False  # whether the last message came from metadata and may take more parts
    for message, metadata in pairs:
        kept = _stored(message, metadata)
        if kept is None:
            out.append(_plain(message, call_names))
            joinable = False
            continue
        loaded, continues = kept
        if isinstance(loaded, ModelResponse):
            call_names.update(
                {p.tool_call_id: p.tool_name for p in loaded.parts if isinstance(p, ToolCallPart)}
            )
        last = out[-1] if out else None
        if (
            continues
            and joinable
            and isinstance(last, ModelRequest)
            and isinstance(loaded, ModelRequest)
        ):
            out[-1] = dataclasses.replace(last, parts=[*last.parts, *loaded.parts])
        else:
            out.append(loaded)
        joinable = isinstance(loaded, ModelRequest)
    return out


def window_messages(conv: Conversation, strategy: StrategyArg = None) -> list[ModelMessage]:
    """The conversation's window (the whole history without a strategy) as Pydantic AI
    messages, for ``message_history``."""
    return from_openai(window_pairs(conv, strategy))


async def awindow_messages(
    conv: AsyncConversation, strategy: StrategyArg = None
) -> list[ModelMessage]:
    """The async twin of :func:`window_messages`."""
    return from_openai(await awindow_pairs(conv, strategy))


def store_messages(conv: Conversation, messages: Sequence[ModelMessage]) -> None:
    """Store Pydantic AI messages (``result.new_messages()``) atomically: all, in order, or
    none. Tool calls a failed run left open are first closed with a tool message saying no
    result was recorded."""
    pairs = close_unanswered(conv.info.pending_tool_calls, to_openai(messages))
    if pairs:
        conv.extend([m for m, _ in pairs], metadata=[meta for _, meta in pairs])


async def astore_messages(conv: AsyncConversation, messages: Sequence[ModelMessage]) -> None:
    """The async twin of :func:`store_messages`."""
    pairs = close_unanswered(conv.info.pending_tool_calls, to_openai(messages))
    if pairs:
        await conv.extend([m for m, _ in pairs], metadata=[meta for _, meta in pairs])


# --- the capability ------------------------------------------------------------------------------


def _key(message: ModelMessage) -> str:
    """A message as it survives a store and a read: its JSON without timestamps (a message read
    from its Chat Completions form is given new ones). ``run_id`` stays in: it tells a run's
    new prompt from an equal one stored before."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "timestamp"}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return json.dumps(strip(_dump(message)), sort_keys=True)


def _tail_size(messages: Sequence[ModelMessage]) -> int:
    """How many stored messages ``messages`` can take at most (one per request part)."""
    return sum(len(m.parts) if isinstance(m, ModelRequest) else 1 for m in messages)


def _new_at_start(
    messages: Sequence[ModelMessage], started: bool, stored: Sequence[ModelMessage]
) -> list[ModelMessage]:
    """What a run's first request holds that is not stored: what follows the newest message
    equal to a stored one (a ``message_history`` from an earlier run is stored already). When
    the conversation has begun, the agent's system prompts that Pydantic AI put in the new
    request (it does so whenever a run starts without ``message_history``) are left out: the
    conversation kept them when it began."""
    known = {_key(m) for m in stored}
    start = len(messages)
    while start > 0 and _key(messages[start - 1]) not in known:
        start -= 1
    new = list(messages[start:])
    if started and new and isinstance(new[-1], ModelRequest):
        kept = [
            p
            for p in new[-1].parts
            if not (isinstance(p, SystemPromptPart) and p.scope != "request")
        ]
        new[-1] = dataclasses.replace(new[-1], parts=kept)
    return new


class ChatledgerHistory(AbstractCapability[Any]):
    """A Pydantic AI capability that keeps an agent's history in a chatledger conversation.

    Before each model request it stores the messages not stored yet (the new user prompt, the
    previous step's reply and tool results) and replaces the request's messages, and the run's
    history, with the conversation's window; after the run it stores the final reply. Within a
    run, messages are told apart by identity (the window it hands out becomes the run's
    history); at a run's start, by value, so a ``message_history`` that an earlier run gave
    (``result.all_messages()``) is not stored twice, while one from elsewhere is stored as new.
    ``for_run`` gives each run its own instance, so concurrent runs do not mix their state
    (they do interleave their messages in one conversation). Identity does not survive durable
    execution's process boundary: not for Temporal or DBOS workers.
    """

    def __init__(
        self, conversation: Conversation | AsyncConversation, strategy: StrategyArg = None
    ) -> None:
        if not isinstance(conversation, (Conversation, AsyncConversation)):
            raise InvalidArgumentError(
                "conversation",
                "must be a chatledger Conversation or AsyncConversation, "
                f"got {type(conversation).__name__}",
            )
        self.conversation = conversation
        self.strategy = strategy
        self._known: dict[int, ModelMessage] = {}  # id() -> the message, kept alive
        self._history: list[ModelMessage] = []  # the run's history, from its last request
        self._started = False  # whether this run's first request was stored

    def __repr__(self) -> str:
        return f"<ChatledgerHistory {self.conversation.id!r} strategy={self.strategy!r}>"

    @classmethod
    def get_serialization_name(cls) -> str | None:
        return None  # built from a live conversation, not from a spec

    async def for_run(self, ctx: RunContext[Any]) -> ChatledgerHistory:
        return ChatledgerHistory(self.conversation, self.strategy)

    def _sync_first(self, conv: Conversation, messages: Sequence[ModelMessage]) -> None:
        info = conv.refresh()
        tail = []
        if len(messages) > 1 and info.last_seq:
            tail = conv.records(start=max(1, info.last_seq - _tail_size(messages) + 1))
        new = _new_at_start(messages, info.last_seq > 0, from_openai(stored_pairs(tail)))
        store_messages(conv, new)

    async def _store_unseen(self, messages: Sequence[ModelMessage]) -> None:
        conv = self.conversation
        if not self._started:
            self._started = True
            if isinstance(conv, AsyncConversation):
                info = await conv.refresh()
                tail = []
                if len(messages) > 1 and info.last_seq:
                    start = max(1, info.last_seq - _tail_size(messages) + 1)
                    tail = await conv.records(start=start)
                stored = from_openai(stored_pairs(tail))
                await astore_messages(conv, _new_at_start(messages, info.last_seq > 0, stored))
            else:
                await asyncio.to_thread(self._sync_first, conv, messages)
            self._known.update({id(m): m for m in messages})
            return
        unseen = [m for m in messages if self._known.get(id(m)) is not m]
        if isinstance(conv, AsyncConversation):
            await astore_messages(conv, unseen)
        else:
            await asyncio.to_thread(store_messages, conv, unseen)
        self._known.update({id(m): m for m in unseen})

    async def _window(self) -> list[ModelMessage]:
        conv = self.conversation
        if isinstance(conv, AsyncConversation):
            window = await awindow_messages(conv, self.strategy)
        else:
            window = await asyncio.to_thread(window_messages, conv, self.strategy)
        self._known = {id(m): m for m in window}
        return window

    async def before_model_request(
        self, ctx: RunContext[Any], request_context: ModelRequestContext
    ) -> ModelRequestContext:
        """Store what is new, send the window and keep it as the run's history."""
        await self._store_unseen(request_context.messages)
        window = await self._window()
        request_context.messages = window.copy()
        ctx.messages[:] = window
        self._history = ctx.messages  # the run's history, which the run goes on adding to
        return request_context

    async def after_run(
        self, ctx: RunContext[Any], *, result: AgentRunResult[Any]
    ) -> AgentRunResult[Any]:
        """Store what the run ended with (its final reply)."""
        await self._store_unseen(result.all_messages())
        return result

    async def on_run_error(
        self, ctx: RunContext[Any], *, error: BaseException
    ) -> AgentRunResult[Any]:
        """Store what a failed run holds (a reply whose tool then crashed), so the next run
        continues from it: its open calls are closed as unanswered."""
        if self._started:
            await self._store_unseen(self._history)
        raise error


def chatledger_history(
    conversation: Conversation | AsyncConversation, strategy: StrategyArg = None
) -> ChatledgerHistory:
    """The capability for ``Agent(capabilities=[...])`` that keeps the agent's history in
    ``conversation`` and sends the model ``strategy``'s window of it (the whole history without
    one). Pydantic AI 2 took ``history_processors=`` off ``Agent``: a history processor is a
    capability now (``ProcessHistory``), and this one also stores what the run adds."""
    return ChatledgerHistory(conversation, strategy)
