"""OpenAI Agents SDK session memory stored in chatledger.

:class:`ChatledgerSession` implements the SDK's ``Session`` over an ``AsyncLedger`` conversation::

    from chatledger.integrations.agents import ChatledgerSession

    session = ChatledgerSession(ledger, "support-42", owner="user-7")
    result = await Runner.run(agent, "Hello", session=session)

The SDK keeps history as Responses API input items; chatledger stores Chat Completions
messages. Each batch of items is stored as the messages the SDK's own Chat Completions model
would send for them (one assistant message for a reply's text and its ``function_call``
items, a tool message for each ``function_call_output``), so the conversation stays valid
for the API, has exact token counts and can be windowed, counted and continued with
chatledger alone. Each message also keeps, in ``metadata["openai_agents"]["items"]``, the
original items it stands for, which is what :meth:`ChatledgerSession.get_items` returns:
exactly the items that were added, in order.

Items with no Chat Completions form (reasoning, hosted tool calls, item references,
compaction items, tool outputs that answer no open call) are kept only in that metadata, on
the next message of the same batch, or on the last one when nothing follows; a batch made only
of such items is stored as one empty assistant message carrying them. A message the session did
not write (``conv.chat``, the ``system`` of a conversation created elsewhere, a strategy's
summary) is read back as the items it corresponds to.

When a batch starts a new turn while tool calls of an earlier one were never answered (a run
that failed inside a tool), the calls are first closed with a tool message saying no result
was recorded, as the API requires; those messages carry no items, so ``get_items`` does not
show them. A batch that starts with tool calls while the newest message is an assistant
message whose calls all wait for outputs joins that message instead (one message, as the SDK
sends it). Storing the items doubles each message's stored size: the price of exact round trips.

``pop_item`` removes one item at a time, the newest as ``get_items`` shows it, like the SDK's
own sessions. One stored message may hold several items (a reply's text and its calls), so
popping removes that message, with any item-less closers after it, and stores its other items
again in its place, in one transaction under the conversation lock: a concurrent writer sees
the message before or after, never without it. Popping a tool output re-opens its call; adding
the popped item back restores the same messages. ``clear_session`` removes every message and
keeps the conversation (id, owner, model, metadata, usage records)."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Connection

from chatledger.errors import MissingDependencyError

try:
    from agents.items import TResponseInputItem
    from agents.memory import SessionSettings
    from agents.memory.session_settings import coerce_session_settings
except ImportError as exc:  # the adapter needs the framework it adapts
    raise MissingDependencyError(exc.name or "agents", "chatledger.integrations.agents") from None

from chatledger.conversation import AsyncConversation
from chatledger.effects import Op, writing
from chatledger.handle import Handle
from chatledger.integrations.window_pairs import (
    UNANSWERED,
    awindow_pairs,
    stored_pairs,
)
from chatledger.ledger import AsyncLedger
from chatledger.rows import Loaded, StoredMessage
from chatledger.store import conversations as conv_store
from chatledger.store import history
from chatledger.store import messages as msg_store
from chatledger.strategies import Strategy

if TYPE_CHECKING:
    from agents.memory import Session

__all__ = ["ChatledgerSession", "items_to_messages", "messages_to_items"]

META_KEY = "openai_agents"
OMITTED_OUTPUT = "[tool output omitted]"  # the Agents SDK's own placeholder
FAKE_ID = "__fake_id__"  # the Agents SDK's id for items with no provider id

_MESSAGE_ROLES = ("user", "system", "developer", "assistant")
_IMAGE_DETAILS = ("auto", "low", "high")

StrategyArg = Strategy | Sequence[Strategy] | None
Item = dict[str, Any]
Stored = tuple[dict[str, Any], dict[str, Any]]  # a message and its metadata
Records = Sequence[tuple[Mapping[str, Any], Mapping[str, Any] | None]]


# --- items -> messages ------------------------------------------------------------------------


def _message_role(item: Mapping[str, Any]) -> str | None:
    """The role of a message item (easy or typed form), None for any other item."""
    role = item.get("role")
    if item.get("type", "message") == "message" and role in _MESSAGE_ROLES:
        return cast(str, role)
    return None


def _text_part(text: object) -> dict[str, Any]:
    return {"type": "text", "text": text if isinstance(text, str) else ""}


def _input_part(part: object, role: str) -> dict[str, Any]:
    """A Responses input content part as a Chat Completions part; what the role cannot
    carry becomes a short text placeholder (the item itself is kept in the metadata)."""
    if not isinstance(part, Mapping):
        return _text_part(str(part))
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):
        return _text_part(part.get("text"))
    if role == "user" and kind == "input_image":
        url = part.get("image_url")
        if isinstance(url, str) and url.startswith(("http://", "https://", "data:image/")):
            image: dict[str, Any] = {"url": url}
            detail = "high" if part.get("detail") == "original" else part.get("detail")
            if detail in _IMAGE_DETAILS:
                image["detail"] = detail
            return {"type": "image_url", "image_url": image}
    if role == "user" and kind == "input_file":
        file = {k: part[k] for k in ("file_data", "file_id", "filename") if part.get(k)}
        if "file_data" in file or "file_id" in file:
            return {"type": "file", "file": file}
    if role == "user" and kind == "input_audio":
        audio = part.get("input_audio")
        if isinstance(audio, Mapping) and audio.get("format") in ("wav", "mp3"):
            return {
                "type": "input_audio",
                "input_audio": {"data": audio.get("data"), "format": audio["format"]},
            }
    return _text_part(f"[{kind} omitted]")


def _input_content(content: object, role: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list) or not content:
        return ""
    return [_input_part(p, role) for p in content]


def _assistant_message(item: Mapping[str, Any]) -> dict[str, Any]:
    """An assistant message item as the start of a Chat Completions assistant message:
    output texts joined with a newline, as the SDK's converter does."""
    content = item.get("content")
    msg: dict[str, Any] = {"role": "assistant"}
    if isinstance(content, str):
        msg["content"] = content
        return msg
    texts: list[str] = []
    for part in content if isinstance(content, list) else ():
        if not isinstance(part, Mapping):
            continue
        if part.get("type") == "refusal" and isinstance(part.get("refusal"), str):
            msg["refusal"] = part["refusal"]
        elif isinstance(part.get("text"), str):
            texts.append(part["text"])
    if texts or "refusal" not in msg:
        msg["content"] = "\n".join(texts)
    return msg


def _arguments(raw: object) -> str:
    """Call arguments as chatledger stores them: valid JSON (a model's broken JSON is kept as
    a JSON string; the item in the metadata has it as it was)."""
    if not isinstance(raw, str) or not raw:
        return "{}"
    try:
        json.loads(raw)
    except ValueError:
        return json.dumps(raw)
    return raw


def _tool_call(item: Mapping[str, Any]) -> dict[str, Any]:
    if item.get("type") == "custom_tool_call":
        custom = {"name": item.get("name"), "input": str(item.get("input", ""))}
        return {"id": item.get("call_id"), "type": "custom", "custom": custom}
    function = {"name": item.get("name"), "arguments": _arguments(item.get("arguments"))}
    return {"id": item.get("call_id"), "type": "function", "function": function}


def _tool_content(output: object) -> str | list[dict[str, Any]]:
    if isinstance(output, str):
        return output
    parts = [
        _text_part(p.get("text"))
        for p in (output if isinstance(output, list) else ())
        if isinstance(p, Mapping) and p.get("type") in ("input_text", "output_text", "text")
    ]
    return parts or OMITTED_OUTPUT


class _Batch:
    """Builds the messages of one batch of items, keeping every item with a message."""

    def __init__(self, pending: Sequence[str]) -> None:
        self.out: list[Stored] = []
        self.pending: list[str] = list(pending)  # open call ids, oldest first
        self.open: dict[str, Any] | None = None  # the assistant message calls still join
        self.carry: list[Item] = []  # items waiting for the next message

    def _items(self, stored: Stored) -> list[Item]:
        return cast(list[Item], stored[1][META_KEY]["items"])

    def emit(self, message: dict[str, Any], item: Item | None) -> None:
        items = [*self.carry, item] if item is not None else self.carry
        self.out.append((message, {META_KEY: {"items": items}}))
        self.carry = []

    def join(self, item: Item) -> None:
        """Add an item to the newest message (the open assistant message)."""
        self._items(self.out[-1]).extend([*self.carry, item])
        self.carry = []

    def close_pending(self) -> None:
        """Answer calls left open, so that a new message may follow them."""
        for call_id in self.pending:
            self.out.append(
                (
                    {"role": "tool", "tool_call_id": call_id, "content": UNANSWERED},
                    {META_KEY: {"items": [], "synthetic": "unanswered tool call"}},
                )
            )
        self.pending = []
        self.open = None

    def add(self, item: Item) -> None:
        kind = item.get("type")
        role = _message_role(item)
        if role == "assistant":
            message = _assistant_message(item)
            if self.open is not None and "content" not in self.open and "refusal" not in self.open:
                # a streamed reply may list its calls before its text: one message, as the
                # SDK sends it
                self.open.update(message)
                self.join(item)
                return
            self.close_pending()
            self.emit(message, item)
            self.open = message
        elif role is not None:
            self.close_pending()
            message = {"role": role, "content": _input_content(item.get("content"), role)}
            self.emit(message, item)
        elif kind in ("function_call", "custom_tool_call") and item.get("call_id"):
            call = _tool_call(item)
            if self.open is None:
                self.close_pending()
                self.open = {"role": "assistant"}
                self.emit(self.open, item)
            else:
                self.join(item)
            self.open.setdefault("tool_calls", []).append(call)
            self.pending.append(str(item["call_id"]))
        elif (
            kind in ("function_call_output", "custom_tool_call_output")
            and item.get("call_id") in self.pending
        ):
            call_id = str(item["call_id"])
            message = {
                "role": "tool",
                "tool_call_id": call_id,
                "content": _tool_content(item.get("output")),
            }
            self.emit(message, item)
            self.pending.remove(call_id)
            self.open = None
        else:
            self.carry.append(item)

    def finish(self) -> list[Stored]:
        if self.carry:
            if self.out:
                self._items(self.out[-1]).extend(self.carry)
                self.carry = []
            else:
                self.close_pending()
                self.emit({"role": "assistant", "content": ""}, None)
        return self.out


def items_to_messages(
    items: Sequence[Mapping[str, Any]], pending_tool_calls: Sequence[str] = ()
) -> list[Stored]:
    """Responses input items as Chat Completions messages, each with the metadata that
    holds the items it stands for. ``pending_tool_calls`` are the conversation's open calls,
    which the batch's outputs may answer."""
    batch = _Batch(pending_tool_calls)
    for item in items:
        batch.add(copy.deepcopy(dict(item)))
    return batch.finish()


# --- messages -> items ------------------------------------------------------------------------


def _output_part(part: Mapping[str, Any]) -> dict[str, Any]:
    kind = part.get("type")
    if kind == "text":
        return {"type": "input_text", "text": part.get("text", "")}
    if kind == "image_url":
        image = part.get("image_url") or {}
        return {
            "type": "input_image",
            "image_url": image.get("url"),
            "detail": image.get("detail", "auto"),
        }
    if kind == "file":
        return {"type": "input_file", **(part.get("file") or {})}
    if kind == "input_audio":
        return {"type": "input_audio", "input_audio": part.get("input_audio")}
    return {"type": "input_text", "text": str(part.get(str(kind), ""))}


def _foreign_items(msg: Mapping[str, Any], custom_calls: set[str]) -> list[Item]:
    """The items a message not written by the session stands for."""
    role = msg.get("role")
    content = msg.get("content")
    if role in ("user", "system", "developer"):
        if isinstance(content, list):
            content = [_output_part(p) for p in content if isinstance(p, Mapping)]
        return [{"role": role, "content": content if content is not None else ""}]
    if role == "assistant":
        out: list[Item] = []
        if isinstance(content, list):
            content = "\n".join(str(p.get("text") or p.get("refusal") or "") for p in content)
        if msg.get("refusal"):
            out.append(
                {
                    "type": "message",
                    "id": FAKE_ID,
                    "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "refusal", "refusal": msg["refusal"]}],
                }
            )
        elif content or not msg.get("tool_calls"):
            out.append({"role": "assistant", "content": content or ""})
        for call in msg.get("tool_calls") or ():
            if call.get("type") == "custom":
                custom_calls.add(call["id"])
                body = call.get("custom") or {}
                out.append(
                    {
                        "type": "custom_tool_call",
                        "call_id": call["id"],
                        "name": body.get("name"),
                        "input": body.get("input", ""),
                    }
                )
            else:
                fn = call.get("function") or {}
                out.append(
                    {
                        "type": "function_call",
                        "call_id": call["id"],
                        "name": fn.get("name"),
                        "arguments": fn.get("arguments", "{}"),
                    }
                )
        return out
    if role == "tool":
        call_id = msg.get("tool_call_id")
        output: object = content
        if isinstance(content, list):
            output = [_output_part(p) for p in content if isinstance(p, Mapping)]
        kind = "custom_tool_call_output" if call_id in custom_calls else "function_call_output"
        return [{"type": kind, "call_id": call_id, "output": output}]
    return []  # legacy function messages: no item carries them


def _items_per_message(records: Records) -> list[list[Item]]:
    """The items each stored message stands for (none for a closer of unanswered calls)."""
    out: list[list[Item]] = []
    custom_calls: set[str] = set()
    for message, metadata in records:
        kept = metadata.get(META_KEY) if isinstance(metadata, Mapping) else None
        if isinstance(kept, Mapping) and isinstance(kept.get("items"), list):
            out.append(list(kept["items"]))
        else:
            out.append(_foreign_items(message, custom_calls))
    return out


def messages_to_items(records: Records) -> list[Item]:
    """Stored messages (with their metadata) as the items they stand for, in order."""
    return [item for items in _items_per_message(records) for item in items]


# --- rewriting the newest messages: operations run by the conversation's own driver, each one
# transaction under the lock every append and edit takes, so no writer slips into the middle


def _replace_after(c: Connection, h: Handle, upto: int, items: Sequence[Item]) -> Loaded:
    """Cut the conversation after seq ``upto`` and store ``items`` in its place (inside the
    caller's transaction)."""
    history.cut_after(c, h.pk, h.id, upto)
    loaded = conv_store.load_conversation(c, h.pk, h.id)
    if not items:
        return loaded
    batch = items_to_messages(items, loaded.info.pending_tool_calls)
    counter = h.config.counter(loaded.info.model)
    state = loaded.tool_state
    prepared, depends = h.config.prepare(
        [m for m, _ in batch], counter, [meta for _, meta in batch], None, state
    )
    msg_store.append(c, h.pk, h.id, counter.profile, state if depends else False, prepared, None)
    return conv_store.load_conversation(c, h.pk, h.id)


def _pop_item(h: Handle) -> Op[Item | None]:
    """Remove the newest item: its message goes (with any closers of unanswered calls after
    it), and the message's other items, if any, are stored again in its place."""

    def run(c: Connection) -> tuple[Item | None, Loaded]:
        conv_store.lock_conversation(c, h.pk, h.id)
        n = 4
        while True:  # the closers hold no item: read further back only past them
            records = msg_store.read_messages(c, h.pk, None, None, n, newest=True)
            per = _items_per_message(stored_pairs(records))
            holding = [i for i, items in enumerate(per) if items]
            if holding or len(records) < n:
                break
            n *= 2
        if not holding:
            return None, conv_store.load_conversation(c, h.pk, h.id)
        k = holding[-1]
        *rest, popped = per[k]
        return popped, _replace_after(c, h, records[k].seq - 1, rest)

    popped, loaded = yield from writing(run)
    h.load(loaded)
    return popped


def _joins(record: StoredMessage, pending: Sequence[str], items: Sequence[Item]) -> bool:
    """Whether the calls ``items`` start with belong to this stored message: the newest, an
    assistant message whose calls all still wait for their outputs, none of them re-sent."""
    calls = record.message.get("tool_calls") if record.message.get("role") == "assistant" else None
    ids = {call.get("id") for call in calls or ()}
    return bool(ids) and ids <= set(pending) and not ids & {i.get("call_id") for i in items}


def _add_joining(h: Handle, items: Sequence[Item]) -> Op[None]:
    """Add a batch that starts with tool calls: they join the newest assistant message when
    its calls are all still open (as the SDK sends them: one message), else are appended."""

    def run(c: Connection) -> Loaded:
        conv_store.lock_conversation(c, h.pk, h.id)
        row = conv_store.load_conversation(c, h.pk, h.id).info
        newest = msg_store.read_messages(c, h.pk, None, None, 1, newest=True)
        if newest and _joins(newest[0], row.pending_tool_calls, items):
            (kept,) = _items_per_message(stored_pairs(newest))
            return _replace_after(c, h, newest[0].seq - 1, [*kept, *items])
        return _replace_after(c, h, row.last_seq, items)

    h.load((yield from writing(run)))


def _settings(value: SessionSettings | Mapping[str, Any] | None) -> SessionSettings:
    """``session_settings`` as the SDK's own sessions take it: a SessionSettings, a dict of
    its fields (an unknown field raises TypeError), or None for the defaults."""
    return SessionSettings() if value is None else coerce_session_settings(cast(Any, value))


# --- the session ------------------------------------------------------------------------------


class ChatledgerSession:
    """An Agents SDK ``Session`` kept in a chatledger conversation.

    ``session_id`` is the conversation id; the conversation is got or created on first use
    with ``owner`` and ``model`` (the model whose tokenizer counts it; the agent's
    instructions are sent by the SDK each turn, so no ``system`` is stored).

    ``get_items()`` returns the whole history, or with a ``strategy`` (``cl.TokenBudget(8000)``,
    ``cl.LastRounds(10)``, a list) the items of that strategy's window: the newest whole
    rounds that fit, never a tool output without its call, a summary first if the strategy
    makes one. ``get_items(limit)`` (or ``session_settings.limit``) returns the newest
    ``limit`` items, strategy or not, reading only the newest messages. While tool calls are
    open (a run interrupted between a call and its output), chatledger cannot build a window,
    and the strategy's items are those of the pinned prefix and the current round.

    ``session_settings`` is a ``SessionSettings`` or a dict of its fields, as the SDK's own
    sessions take it; the default is ``SessionSettings()``.
    """

    session_settings: SessionSettings | None

    def __init__(
        self,
        ledger: AsyncLedger,
        session_id: str,
        *,
        owner: str | None = None,
        model: str | None = None,
        strategy: StrategyArg = None,
        session_settings: SessionSettings | Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(ledger, AsyncLedger):
            raise TypeError(
                "ChatledgerSession needs a chatledger AsyncLedger (the Agents SDK is async), "
                f"got {type(ledger).__name__}"
            )
        self.ledger, self.session_id, self.owner = ledger, session_id, owner
        self.model, self.strategy = model, strategy
        self.session_settings = _settings(session_settings)

    def __repr__(self) -> str:
        return f"<ChatledgerSession {self.session_id!r} owner={self.owner!r}>"

    async def conversation(self) -> AsyncConversation:
        """The backing conversation, got (or created) by id and owner. Each operation gets
        it afresh: a session object lives long, and other workers write too."""
        return await self.ledger.conversation(self.session_id, owner=self.owner, model=self.model)

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        """The history's items, oldest first: all of them, the strategy's window, or the
        newest ``limit`` (``session_settings.limit`` when no ``limit`` is given)."""
        conv = await self.conversation()
        if limit is None and self.session_settings is not None:
            limit = self.session_settings.limit
        if limit is None:
            if self.strategy is None:
                pairs = stored_pairs(await conv.records())
            else:
                pairs = await awindow_pairs(conv, self.strategy)
            return cast(list[TResponseInputItem], messages_to_items(pairs))
        if limit <= 0:
            return []
        # every message the session writes carries at least one item, except the tool
        # results that close unanswered calls: read more only if those fell in the range
        n = limit
        while True:
            records = await conv.last(n)
            items = messages_to_items(stored_pairs(records))
            if len(items) >= limit or len(records) < n:
                return cast(list[TResponseInputItem], items[-limit:])
            n *= 2

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        """Store the items, atomically: all of them, in order, or none. Tool calls that
        continue the newest assistant message (its calls all still open) join it."""
        if not items:
            return
        conv = await self.conversation()  # just read: its open tool calls are current
        raw = [dict(cast(Mapping[str, Any], item)) for item in items]
        pending = conv.info.pending_tool_calls
        if pending and raw[0].get("type") in ("function_call", "custom_tool_call"):
            await conv._driver.run(_add_joining(conv._h, raw))  # one transaction
            return
        batch = items_to_messages(raw, pending)
        # one transaction, with per-message metadata
        await conv.extend([m for m, _ in batch], metadata=[meta for _, meta in batch])

    async def pop_item(self) -> TResponseInputItem | None:
        """Remove and return the newest item (None when there is none), as ``get_items``
        shows it.

        Items map to messages: an assistant reply's text and its tool calls are one stored
        message. Popping removes one item at a time, as the SDK's own sessions do: the
        message that holds the newest item is removed and, if it held others, stored again
        without it, in one transaction. Popping a tool output re-opens its call.
        """
        conv = await self.conversation()
        return cast(TResponseInputItem | None, await conv._driver.run(_pop_item(conv._h)))

    async def clear_session(self) -> None:
        """Remove every item. The conversation itself stays, with its id, owner, model,
        title, metadata and usage records (``conv.truncate(0)``)."""
        conv = await self.conversation()
        await conv.truncate(0)


if TYPE_CHECKING:

    def _implements_session(session: ChatledgerSession) -> Session:
        return session
