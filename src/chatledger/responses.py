"""The Responses API's shapes, converted to and from the stored Chat Completions history.

chatledger stores Chat Completions messages: they are what every window, strategy, budget
and backup is built on. A Responses API request is the same history written as ``input``
items, and a ``Response`` is read back into the one assistant message a chat completion
would have produced. What has no place in a message (``reasoning`` items, built-in tool calls
such as ``web_search_call``) is kept, in output order with the ids of the items around it, in
the stored message's metadata under :data:`METADATA_KEY`, and put back in place when the
message is replayed. Pure: no I/O.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel

from chatledger.completions import Reply, UsageFields, _cache_writes, status_for
from chatledger.errors import InvalidArgumentError, InvalidParameterError

__all__ = [
    "METADATA_KEY",
    "ResponseAccumulator",
    "chat_message",
    "input_items",
    "is_response",
    "parse_response",
    "responses_tools",
]

T = TypeVar("T")

#: the stored assistant message's metadata key that holds a Responses reply's output order
METADATA_KEY = "chatledger.responses"
#: output items a message cannot hold: kept verbatim and replayed where they were
_KEPT_KINDS = frozenset(
    {
        "reasoning",
        "web_search_call",
        "file_search_call",
        "computer_call",
        "image_generation_call",
        "code_interpreter_call",
        "local_shell_call",
        "mcp_call",
        "mcp_list_tools",
    }
)
#: request parameters the conversation builds or that would duplicate its history
_REFUSED = {
    "input": "is built by the conversation: append messages instead",
    "messages": "is a Chat Completions parameter: the Responses API takes input items",
    "previous_response_id": "would send the stored history twice: the conversation is the state",
    "conversation": "would send the stored history twice: the conversation is the state",
}


def _as_dict(value: object, name: str) -> dict[str, Any]:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_none=True, warnings=False)
    if isinstance(value, Mapping):
        return dict(value)
    raise InvalidArgumentError(name, f"must be a Response or its dict, got {type(value).__name__}")


def _field(value: object, name: str) -> Any:
    return value.get(name) if isinstance(value, Mapping) else getattr(value, name, None)


def _dict_or_none(value: object) -> dict[str, Any] | None:
    return _as_dict(value, "") if isinstance(value, BaseModel | Mapping) else None


def _is_event(value: object) -> bool:
    return isinstance(value, BaseModel | Mapping) and str(_field(value, "type")).startswith(
        "response."
    )


#: the SDK's live streams: reading one is I/O, which ``record`` does not do
_LIVE = ("Stream", "AsyncStream", "ResponseStream", "AsyncResponseStream")


def is_response(value: object) -> bool:
    """Whether ``value`` is for :func:`parse_response`: a ``Response`` (the SDK object or its
    dict), a stream event that carries one (``response.completed``), or a list of stream
    events (any iterable but a mapping or a string: a live SDK stream is refused there)."""
    if isinstance(value, BaseModel | Mapping):
        return _field(value, "object") == "response" or (
            _is_event(value) and _field(value, "response") is not None
        )
    return isinstance(value, Iterable | AsyncIterable) and not isinstance(value, str | bytes)


def _events_response(value: object) -> object:
    """The ``Response`` that ``value`` (see :func:`is_response`) is, or its events add up to."""
    if isinstance(value, BaseModel | Mapping):
        return value if _field(value, "object") == "response" else _field(value, "response")
    if type(value).__name__ in _LIVE or not isinstance(value, Iterable):
        raise InvalidArgumentError(
            "completion",
            f"is a live stream ({type(value).__name__}): wrap it with "
            "conv.stream_response(stream), which records it as it is read",
        )
    acc = ResponseAccumulator()
    for event in value:
        if not _is_event(event):
            raise InvalidArgumentError(
                "completion",
                "must be a ChatCompletion, a Response, a Response stream event or a list of "
                f"them, got an iterable of {type(event).__name__}",
            )
        acc.add(event)
    response = acc.response()
    if response is None:
        raise InvalidArgumentError("completion", "the events hold no response.created event")
    return response


# --- requests -----------------------------------------------------------------------------------


def responses_tools(tools: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """Chat Completions tool definitions in the Responses API's flat shape (``name``,
    ``description``, ``parameters`` and ``strict`` beside ``type``); tools already flat, and
    built-in tools (``web_search`` ...), pass unchanged."""
    out: list[dict[str, Any]] = []
    for i, tool in enumerate(tools or ()):
        if not isinstance(tool, Mapping):
            raise InvalidParameterError([(f"tools[{i}]", "must be a tool definition (a dict)")])
        fn = tool.get("function")
        if tool.get("type") == "function" and isinstance(fn, Mapping):
            flat: dict[str, Any] = {"type": "function", "name": fn.get("name")}
            for key in ("description", "parameters", "strict"):
                if fn.get(key) is not None:
                    flat[key] = fn[key]
            out.append(flat)
        elif tool.get("type") == "custom" and isinstance(tool.get("custom"), Mapping):
            out.append({"type": "custom", **tool["custom"]})
        else:
            out.append(dict(tool))
    return out


def chat_tools(tools: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]] | None:
    """The other way: flat function tools in the Chat Completions shape, which the token
    counter and the parameter checks know; built-in tools are left out (not counted)."""
    if not tools:
        return None
    out: list[dict[str, Any]] = []
    for tool in tools:
        if not isinstance(tool, Mapping):
            continue
        if tool.get("type") == "function" and "function" not in tool:
            fn = {k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool}
            out.append({"type": "function", "function": fn})
        elif tool.get("type") in ("function", "custom"):
            out.append(dict(tool))
    return out or None


def chat_tool_choice(choice: Any) -> Any:
    """A Responses ``tool_choice`` as Chat Completions writes it, for counting."""
    if isinstance(choice, Mapping) and choice.get("type") == "function" and "name" in choice:
        return {"type": "function", "function": {"name": choice["name"]}}
    return choice if isinstance(choice, str) else None


def check_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The caller's ``responses.create`` parameters, without those set to None; the ones the
    conversation builds are refused. The API checks the rest."""
    if not isinstance(params, Mapping):
        raise InvalidParameterError([("params", "must be a mapping")])
    problems = [(k, why) for k, why in _REFUSED.items() if params.get(k) is not None]
    room = params.get("max_output_tokens")
    if room is not None and (not isinstance(room, int) or isinstance(room, bool) or room < 1):
        problems.append(("max_output_tokens", "must be a positive integer"))
    if problems:
        raise InvalidParameterError(problems)
    return {k: v for k, v in params.items() if v is not None}


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text") or p.get("refusal") or "") for p in content if isinstance(p, Mapping)
        )
    return ""


def _input_part(part: Any) -> Any:
    """A Chat Completions content part as a Responses input content part."""
    if not isinstance(part, Mapping):
        return part
    kind = part.get("type")
    if kind == "text":
        return {"type": "input_text", "text": part.get("text", "")}
    if kind == "image_url":
        image = part.get("image_url") or {}
        out = {"type": "input_image", "image_url": image.get("url"), "detail": "auto"}
        if image.get("detail"):
            out["detail"] = image["detail"]
        return out
    if kind == "file":
        file = part.get("file") or {}
        return {"type": "input_file", **{k: v for k, v in file.items() if v is not None}}
    return dict(part)


def _content(content: Any) -> Any:
    if isinstance(content, list):
        return [_input_part(p) for p in content]
    return content if content is not None else ""


def _assistant_items(msg: Mapping[str, Any], kept: Mapping[str, Any] | None) -> list[Any]:
    """An assistant message as output items, with its kept items back where they were."""
    text = _text_of(msg.get("content")) or str(msg.get("refusal") or "")
    calls = {str(c.get("id")): c for c in msg.get("tool_calls") or [] if isinstance(c, Mapping)}

    def message(item_id: str | None) -> dict[str, Any]:
        if item_id is None:
            return {"role": "assistant", "content": text}
        part = {"type": "output_text", "text": text, "annotations": []}
        return {
            "type": "message",
            "id": item_id,
            "role": "assistant",
            "status": "completed",
            "content": [part],
        }

    def call(c: Mapping[str, Any], item_id: str | None) -> dict[str, Any]:
        if c.get("type") == "custom":
            custom = c.get("custom") or {}
            out = {"type": "custom_tool_call", "call_id": c["id"], **custom}
        else:
            fn = c.get("function") or {}
            out = {
                "type": "function_call",
                "call_id": c["id"],
                "name": fn.get("name"),
                "arguments": fn.get("arguments"),
            }
        return out if item_id is None else {**out, "id": item_id}

    placed: list[tuple[str, Any]] = []  # (kind, item or None where nothing goes out)
    said = not text
    for entry in (kept or {}).get("output") or []:
        if not isinstance(entry, Mapping):
            continue
        kind = str(entry.get("type"))
        item: Any = None
        if kind == "message" and not said:
            item, said = message(entry.get("id")), True
        elif kind in ("function_call", "custom_tool_call"):
            found = calls.pop(str(entry.get("call_id")), None)
            item = None if found is None else call(found, entry.get("id"))
        elif kind in _KEPT_KINDS:
            item = dict(entry)
        placed.append((kind, item))
    # a reasoning item goes back only with the item that followed it (the API refuses it
    # alone): one whose follower is gone (edited away, merged into the one message, or cut
    # off in a broken stream and so without its id) is left out
    followed = [
        i + 1 < len(placed) and "id" in (placed[i + 1][1] or {}) for i in range(len(placed))
    ]
    items = [
        item
        for i, (kind, item) in enumerate(placed)
        if item is not None and (kind != "reasoning" or followed[i])
    ]
    if not said:
        items.insert(0, message(None))
    items.extend(call(c, None) for c in calls.values())
    return items


def input_items(
    messages: Sequence[Mapping[str, Any]], kept: Mapping[int, Mapping[str, Any]] | None = None
) -> list[Any]:
    """A window's messages as ``input`` items. ``kept`` maps a message's index to the items
    its reply kept (:data:`METADATA_KEY` of its metadata), replayed in order."""
    out: list[Any] = []
    custom_calls: set[str] = set()
    for i, msg in enumerate(messages):
        role = msg.get("role")
        if role == "assistant":
            out.extend(_assistant_items(msg, (kept or {}).get(i)))
            for c in msg.get("tool_calls") or []:
                if isinstance(c, Mapping) and c.get("type") == "custom":
                    custom_calls.add(str(c.get("id")))
        elif role == "tool":
            call_id = str(msg.get("tool_call_id"))
            kind = "custom_tool_call_output" if call_id in custom_calls else "function_call_output"
            out.append({"type": kind, "call_id": call_id, "output": _text_of(msg.get("content"))})
        elif role == "function":
            out.append({"role": "user", "content": _text_of(msg.get("content"))})
        else:
            out.append({"role": role, "content": _content(msg.get("content"))})
    return out


def instructions_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """The pinned system/developer prefix as one ``instructions`` string."""
    return "\n\n".join(_text_of(m.get("content")) for m in messages)


_RESPONSES_PARTS = frozenset({"input_text", "input_image", "input_file"})


def _chat_part(part: Any) -> Any:
    """A Responses input content part as the Chat Completions part it stands for."""
    if not isinstance(part, Mapping):
        return part
    kind = part.get("type")
    if kind == "input_text":
        return {"type": "text", "text": part.get("text", "")}
    if kind == "input_image" and part.get("image_url"):
        image = {"url": part["image_url"]}
        if part.get("detail") not in (None, "auto"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        keys = ("file_id", "file_data", "filename")
        return {"type": "file", "file": {k: part[k] for k in keys if part.get(k) is not None}}
    return part


def chat_message(item: object) -> object:
    """An input item the caller appends, as the message it stands for: a
    ``function_call_output`` is a tool message, a ``message`` item (typed or not) with
    ``input_text``/``input_image``/``input_file`` parts a plain message with text, image and
    file parts. Anything else (a Chat Completions message) is returned as given."""
    if not isinstance(item, Mapping):
        return item
    kind = item.get("type")
    if kind in ("function_call_output", "custom_tool_call_output"):
        output = item.get("output")
        if isinstance(output, list):
            output = _text_of(output)
        return {"role": "tool", "tool_call_id": item.get("call_id"), "content": output}
    content = item.get("content")
    typed = kind == "message" and item.get("role") in ("user", "system", "developer")
    # parts only the Responses API has ("input_audio" is a Chat Completions part type too)
    parts = isinstance(content, list) and any(
        isinstance(p, Mapping) and p.get("type") in _RESPONSES_PARTS for p in content
    )
    if not (typed or (kind is None and parts)):
        return item
    if isinstance(content, list):
        content = [_chat_part(p) for p in content]
    return {"role": item.get("role"), "content": content}


# --- replies ------------------------------------------------------------------------------------

_INCOMPLETE = {"max_output_tokens": "length", "content_filter": "content_filter"}


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _no_none(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _no_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_no_none(v) for v in value]
    return value


def _complete_arguments(arguments: Any) -> bool:
    try:
        json.loads(arguments or "")
    except (TypeError, ValueError):
        return False
    return True


def parse_response(response: object) -> Reply:
    """A ``Response`` as the assistant message to store, the items to keep beside it, and its
    usage. Function calls whose arguments never completed are dropped, as for a chat
    completion, so the stored message is always one the API accepts back. ``response`` may
    also be its final stream event or the list of its events (:func:`is_response`)."""
    data = _as_dict(_events_response(response), "response")
    texts: list[str] = []
    refusals: list[str] = []
    calls: list[dict[str, Any]] = []
    order: list[dict[str, Any]] = []
    dropped = 0
    kept_any = False
    for item in data.get("output") or []:
        if not isinstance(item, Mapping):
            continue
        kind = item.get("type")
        if kind == "message":
            for part in item.get("content") or []:
                if not isinstance(part, Mapping):
                    continue
                if part.get("type") == "output_text":
                    texts.append(str(part.get("text") or ""))
                elif part.get("type") == "refusal":
                    refusals.append(str(part.get("refusal") or ""))
            order.append({"type": "message", "id": item.get("id")})
        elif kind == "function_call":
            whole = item.get("call_id") and item.get("name")
            if not whole or not _complete_arguments(item.get("arguments")):
                dropped += 1
            else:
                calls.append(
                    {
                        "id": item["call_id"],
                        "type": "function",
                        "function": {"name": item["name"], "arguments": item["arguments"]},
                    }
                )
                order.append({"type": kind, "id": item.get("id"), "call_id": item["call_id"]})
        elif kind == "custom_tool_call" and item.get("call_id"):
            custom = {"name": item.get("name"), "input": item.get("input", "")}
            calls.append({"id": item["call_id"], "type": "custom", "custom": custom})
            order.append({"type": kind, "id": item.get("id"), "call_id": item["call_id"]})
        elif kind in _KEPT_KINDS:
            kept = _no_none(item)  # as the SDK's dump leaves it: one reply, one stored form
            order.append({k: v for k, v in kept.items() if k != "status" or kind != "reasoning"})
            kept_any = True
    message: dict[str, Any] = {"role": "assistant"}
    if texts or not (calls or refusals):
        message["content"] = "".join(texts)
    if refusals:
        message["refusal"] = "".join(refusals)
    if calls:
        message["tool_calls"] = calls
    status_value = data.get("status")
    reason = (data.get("incomplete_details") or {}).get("reason")
    if status_value == "incomplete":
        finish: str | None = _INCOMPLETE.get(str(reason), "incomplete")
    elif status_value in ("failed", "cancelled"):
        finish = str(status_value)
    else:
        finish = "tool_calls" if calls else "stop"
    status = status_for(finish) if finish not in ("failed", "cancelled") else finish
    if dropped and status is None:
        status = "incomplete"
    usage = data.get("usage") or {}
    input_details = usage.get("input_tokens_details") or {}
    reasoning = _int((usage.get("output_tokens_details") or {}).get("reasoning_tokens"))
    extra: dict[str, Any] = {"api": "responses"}
    if data.get("service_tier") is not None:
        extra["service_tier"] = data["service_tier"]
    fields = UsageFields(
        model=str(data.get("model") or ""),
        response_id=data.get("id"),
        system_fingerprint=None,
        finish_reason=finish,
        prompt_tokens=_int(usage.get("input_tokens")),
        completion_tokens=_int(usage.get("output_tokens")),
        cached_tokens=_int(input_details.get("cached_tokens")),
        reasoning_tokens=reasoning,
        estimated=not usage,
        cache_write_tokens=_cache_writes(usage, input_details),
        extra=extra,
    )
    meta = None
    said = any(e.get("type") not in _KEPT_KINDS for e in order)
    if kept_any and said:  # a reasoning item alone (cut off while thinking) cannot be sent back
        meta = {"response_id": data.get("id"), "reasoning_tokens": reasoning, "output": order}
    if not order and status_value in ("failed", "cancelled"):
        return Reply(None, status, fields, dropped)  # nothing was said: only the usage is kept
    return Reply(message, status, fields, dropped, meta and {METADATA_KEY: meta})


# --- streams ------------------------------------------------------------------------------------


@dataclass
class ResponseAccumulator:
    """Folds Responses stream events into the ``Response`` they add up to: the final
    ``response.completed`` (or ``incomplete``/``failed``) event's response when it came, else
    what arrived (finished items, and the text deltas of an unfinished message) marked
    incomplete."""

    started: dict[str, Any] | None = None
    final: dict[str, Any] | None = None
    items: dict[int, dict[str, Any]] = field(default_factory=dict)
    done: set[int] = field(default_factory=set)
    texts: dict[int, list[str]] = field(default_factory=dict)
    events: int = 0

    def add(self, event: object) -> None:
        """Fold one event (the SDK's or its dict); only what it carries is converted, so a
        text delta costs no copy."""
        if not isinstance(event, BaseModel | Mapping):
            raise InvalidArgumentError("event", f"must be a stream event, got {type(event)}")
        self.events += 1
        kind = str(_field(event, "type") or "")
        index = _int(_field(event, "output_index"))
        if kind in ("response.created", "response.in_progress", "response.queued"):
            self.started = _dict_or_none(_field(event, "response"))
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            self.final = _dict_or_none(_field(event, "response"))
        elif kind in ("response.output_item.added", "response.output_item.done"):
            item = _dict_or_none(_field(event, "item"))
            if item is not None:
                self.items[index] = item
                if kind.endswith(".done"):
                    self.done.add(index)
        elif kind == "response.output_text.delta":
            self.texts.setdefault(index, []).append(str(_field(event, "delta") or ""))

    def response(self, *, broken: bool = False) -> dict[str, Any] | None:
        """The response to record (None when not even its start arrived)."""
        if self.final is not None:
            return self.final
        if self.started is None:
            return None
        output = []
        for index in sorted(self.items):
            item = self.items[index]
            if index in self.done:
                output.append(item)
            elif item.get("type") == "message":  # its text so far, sent back without its id
                text = "".join(self.texts.get(index, []))
                part = {"type": "output_text", "text": text, "annotations": []}
                output.append({"type": "message", "role": "assistant", "content": [part]})
            elif item.get("type") not in _KEPT_KINDS:  # a call cut short: dropped, and counted
                output.append(item)
        details = {"reason": "stream_broken" if broken else "stream_ended"}
        return {
            **self.started,
            "status": "incomplete",
            "incomplete_details": details,
            "output": output,
            "usage": None,
        }

    def watch(self, stream: Iterable[T]) -> Iterator[T]:
        """Pass ``stream`` through, adding each event; closing it closes ``stream``."""
        try:
            for event in stream:
                self.add(event)
                yield event
        finally:
            close = getattr(stream, "close", None)
            if callable(close):
                close()

    async def awatch(self, stream: AsyncIterable[T] | Iterable[T]) -> AsyncIterator[T]:
        """The async :meth:`watch`; a sync stream (``openai.Stream``) is read as it is."""
        try:
            if isinstance(stream, AsyncIterable):
                async for event in stream:
                    self.add(event)
                    yield event
            else:
                for event in stream:
                    self.add(event)
                    yield event
        finally:
            close = getattr(stream, "close", None)
            result = close() if callable(close) else None
            if inspect.isawaitable(result):
                await result
