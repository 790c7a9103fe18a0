"""``POST /v1/responses`` for the local test server (:mod:`openai_server` routes it here).

Scripted like the chat endpoint, on a queue of its own per server:

    script = responses_of(server)
    script.queue(ResponseReply(function_calls=[{"name": "f", "arguments": {}}], reasoning="..."))
    client.responses.create(model="gpt-5.1", input=[...])

When the queue is empty the reply is ``"echo: " + <text of the last user input item>``. It
answers as the API does: a ``Response`` object, or with ``stream=True`` server-sent events
(``response.created``, ``response.output_item.added``, ``response.output_text.delta`` ...,
``response.output_item.done``, ``response.completed``). Token counts are FAKE: input tokens
are the words of every input item and the instructions plus 3 an item, output tokens the words
of the reply plus its scripted reasoning tokens.

It checks what the API checks and chatledger could get wrong: a ``function_call_output``
answers a ``function_call`` earlier in the input; tools are in the flat shape; and a
``function_call`` or ``message`` item sent back with the id of an item that followed a
``reasoning`` item needs that reasoning item (with its ``encrypted_content`` unchanged) right
before it, and the reasoning item its following item, as the API requires with tools.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from weakref import WeakKeyDictionary

__all__ = ["FakeResponses", "ResponseReply", "ResponseUsage", "responses_of", "serve"]

JSON = dict[str, Any]


class _Handler(Protocol):
    """What this module uses of the server's request handler."""

    close_connection: bool
    _started: bool

    def _send_json(
        self, status: int, payload: Any, headers: Mapping[str, str] | None = ...
    ) -> None: ...
    def _common_headers(self, headers: Mapping[str, str] | None) -> None: ...
    def _write_chunk(self, data: bytes) -> None: ...
    def send_response(self, code: int, message: str | None = ...) -> None: ...
    def send_header(self, keyword: str, value: str) -> None: ...
    def end_headers(self) -> None: ...


@dataclass(frozen=True)
class ResponseUsage:
    """Overrides for the reported ``usage`` (None keeps the fake default)."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None


@dataclass
class ResponseReply:
    """One scripted ``Response``: ``text`` (a message item), ``function_calls`` (dicts with
    ``name``, ``arguments`` as a JSON string or any JSON value, optional ``call_id``), and
    ``reasoning`` (a summary text: a ``reasoning`` item first, with ``encrypted_content`` when
    the request's ``include`` asks for it). ``incomplete`` ends it ``status="incomplete"`` with
    that reason; ``break_stream_after`` drops a stream after that many events; ``status`` >=
    400 answers with an error body."""

    text: str | None = None
    function_calls: list[dict[str, Any]] = field(default_factory=list)
    reasoning: str | None = None
    usage: ResponseUsage | None = None
    incomplete: str | None = None
    break_stream_after: int | None = None
    status: int = 200


@dataclass
class FakeResponses:
    """One server's ``/responses`` state: the queue, the requests, what it issued."""

    requests: list[JSON] = field(default_factory=list)
    responder: Callable[[JSON], ResponseReply | str] | None = None
    _replies: deque[ResponseReply] = field(default_factory=deque)
    #: ids of items that followed a reasoning item -> (its id, its encrypted content)
    _after_reasoning: dict[str, tuple[str, str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: int = 0

    def queue(self, *replies: ResponseReply | str) -> None:
        with self._lock:
            self._replies.extend(
                ResponseReply(text=r) if isinstance(r, str) else r for r in replies
            )

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._replies)

    @property
    def last_request(self) -> JSON:
        with self._lock:
            return self.requests[-1]

    def _next_id(self) -> int:
        with self._lock:
            self._ids += 1
            return self._ids

    def _next_reply(self, body: JSON) -> ResponseReply:
        with self._lock:
            self.requests.append(body)
            if self._replies:
                return self._replies.popleft()
            responder = self.responder
        if responder is None:
            return ResponseReply(text="echo: " + _last_user_text(body.get("input")))
        reply = responder(body)
        return ResponseReply(text=reply) if isinstance(reply, str) else reply


_SCRIPTS: WeakKeyDictionary[Any, FakeResponses] = WeakKeyDictionary()
_SCRIPTS_LOCK = threading.Lock()


def responses_of(fake: Any) -> FakeResponses:
    """The ``/responses`` script of a ``FakeOpenAI`` server (made on first use)."""
    with _SCRIPTS_LOCK:
        script = _SCRIPTS.get(fake)
        if script is None:
            script = _SCRIPTS[fake] = FakeResponses()
        return script


class _Invalid(Exception):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.body = {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": param,
                "code": None,
            }
        }


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text") or "") for p in content if isinstance(p, Mapping))
    return ""


def _items(body: Mapping[str, Any]) -> list[Any]:
    raw = body.get("input")
    return [{"role": "user", "content": raw}] if isinstance(raw, str) else list(raw or [])


def _last_user_text(raw: Any) -> str:
    items = [{"role": "user", "content": raw}] if isinstance(raw, str) else list(raw or [])
    for item in reversed(items):
        if isinstance(item, Mapping) and item.get("role") == "user":
            return _text(item.get("content"))
    return ""


def _item_words(item: Mapping[str, Any]) -> int:
    words = _text(item.get("content")) + " " + str(item.get("output") or "")
    words += " " + str(item.get("name") or "") + " " + str(item.get("arguments") or "")
    if item.get("type") == "reasoning":
        words += " " + " ".join(str(s.get("text")) for s in item.get("summary") or [])
    return len(words.split()) + 3


def fake_input_tokens(body: Mapping[str, Any]) -> int:
    items = [i for i in _items(body) if isinstance(i, Mapping)]
    return sum(_item_words(i) for i in items) + len(str(body.get("instructions") or "").split())


def _validate(script: FakeResponses, body: Any) -> None:
    if not isinstance(body, dict):
        raise _Invalid("We could not parse the JSON body of your request.")
    for name in ("messages", "max_tokens", "max_completion_tokens"):
        if name in body:
            raise _Invalid(f"Unknown parameter: '{name}'.", name)
    if not isinstance(body.get("model"), str):
        raise _Invalid("Missing required parameter: 'model'.", "model")
    for i, tool in enumerate(body.get("tools") or []):
        if tool.get("type") == "function" and ("function" in tool or not tool.get("name")):
            raise _Invalid(f"Missing required parameter: 'tools[{i}].name'.", f"tools[{i}].name")
    calls: set[str] = set()
    items = _items(body)
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise _Invalid(f"Invalid type for 'input[{i}]'.", f"input[{i}]")
        kind = item.get("type", "message")
        if kind == "function_call":
            calls.add(str(item.get("call_id")))
        elif kind == "function_call_output" and str(item.get("call_id")) not in calls:
            raise _Invalid(
                f"No tool call found for function call output with call_id {item.get('call_id')}.",
                f"input[{i}]",
            )
        elif kind == "reasoning":
            following = items[i + 1] if i + 1 < len(items) else {}
            need = next(
                (k for k, v in script._after_reasoning.items() if v[0] == item.get("id")), None
            )
            if need is not None and (
                not isinstance(following, Mapping) or following.get("id") != need
            ):
                raise _Invalid(
                    f"Item '{item.get('id')}' of type 'reasoning' was provided without its "
                    "required following item.",
                    "input",
                )
        elif kind not in (
            "message",
            "function_call_output",
            "custom_tool_call",
            "custom_tool_call_output",
        ):
            continue
        required = script._after_reasoning.get(str(item.get("id")))
        if required is not None:
            before = items[i - 1] if i else {}
            if (
                not isinstance(before, Mapping)
                or before.get("type") != "reasoning"
                or before.get("id") != required[0]
                or (required[1] and before.get("encrypted_content") != required[1])
            ):
                raise _Invalid(
                    f"Item '{item.get('id')}' of type '{kind}' was provided without its required "
                    f"'reasoning' item: '{required[0]}'.",
                    "input",
                )


def _output(script: FakeResponses, reply: ResponseReply, body: JSON) -> list[JSON]:
    n = script._next_id()
    out: list[JSON] = []
    reasoning_id = None
    encrypted = ""
    if reply.reasoning is not None:
        reasoning_id = f"rs_fake{n:06d}"
        item: JSON = {
            "type": "reasoning",
            "id": reasoning_id,
            "summary": [{"type": "summary_text", "text": reply.reasoning}],
        }
        if "reasoning.encrypted_content" in (body.get("include") or []):
            encrypted = f"gAAAA-fake-{n:06d}"
            item["encrypted_content"] = encrypted
        out.append(item)
    if reply.text is not None:
        part = {"type": "output_text", "text": reply.text, "annotations": []}
        msg = {
            "type": "message",
            "id": f"msg_fake{n:06d}",
            "role": "assistant",
            "status": "completed",
            "content": [part],
        }
        out.append(msg)
    for k, call in enumerate(reply.function_calls):
        args = call.get("arguments", {})
        out.append(
            {
                "type": "function_call",
                "id": f"fc_fake{n:06d}_{k}",
                "call_id": call.get("call_id") or f"call_fake{n:06d}_{k}",
                "name": call["name"],
                "arguments": args if isinstance(args, str) else json.dumps(args),
                "status": "completed",
            }
        )
    if reasoning_id is not None and len(out) > 1:
        script._after_reasoning[str(out[1]["id"])] = (reasoning_id, encrypted)
    return out


def _words(text: str) -> int:
    return len(text.split())


def _response(script: FakeResponses, reply: ResponseReply, body: JSON) -> JSON:
    output = _output(script, reply, body)
    override = reply.usage or ResponseUsage()
    reasoning = override.reasoning_tokens or 0
    produced = sum(
        _words(_text(i.get("content"))) + _words(str(i.get("arguments") or "")) for i in output
    )
    input_tokens = (
        override.input_tokens if override.input_tokens is not None else fake_input_tokens(body)
    )
    output_tokens = (
        override.output_tokens if override.output_tokens is not None else produced + reasoning
    )
    return {
        "id": f"resp_fake{script._next_id():06d}",
        "object": "response",
        "created_at": int(time.time()),
        "status": "incomplete" if reply.incomplete else "completed",
        "incomplete_details": {"reason": reply.incomplete} if reply.incomplete else None,
        "error": None,
        "model": body["model"],
        "instructions": body.get("instructions"),
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "temperature": 1.0,
        "top_p": 1.0,
        "metadata": {},
        "service_tier": "default",
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {
                "cached_tokens": override.cached_tokens or 0,
                "cache_write_tokens": 0,
            },
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": input_tokens + output_tokens,
        },
    }


def _item_events(index: int, item: JSON) -> list[JSON]:
    """One output item's events, in the API's order: added, its parts and deltas, done."""
    where = {"item_id": item["id"], "output_index": index}
    if item["type"] == "message":
        text = item["content"][0]["text"]
        empty = {"type": "output_text", "text": "", "annotations": []}
        part = {**where, "content_index": 0}
        events: list[JSON] = [
            {
                "type": "response.output_item.added",
                "output_index": index,
                "item": {**item, "status": "in_progress", "content": []},
            },
            {"type": "response.content_part.added", **part, "part": empty},
        ]
        events += [
            {"type": "response.output_text.delta", **part, "delta": text[i : i + 6], "logprobs": []}
            for i in range(0, len(text), 6)
        ]
        events += [
            {"type": "response.output_text.done", **part, "text": text, "logprobs": []},
            {"type": "response.content_part.done", **part, "part": item["content"][0]},
        ]
    elif item["type"] == "function_call":
        events = [
            {
                "type": "response.output_item.added",
                "output_index": index,
                "item": {**item, "arguments": "", "status": "in_progress"},
            },
            {"type": "response.function_call_arguments.delta", **where, "delta": item["arguments"]},
            {
                "type": "response.function_call_arguments.done",
                **where,
                "arguments": item["arguments"],
            },
        ]
    elif item["type"] == "reasoning":  # the encrypted content comes with the item's done
        started = {k: v for k, v in item.items() if k != "encrypted_content"}
        events = [
            {
                "type": "response.output_item.added",
                "output_index": index,
                "item": {**started, "summary": []},
            }
        ]
        for n, summary in enumerate(item["summary"]):
            part = {**where, "summary_index": n}
            empty = {"type": "summary_text", "text": ""}
            events += [
                {"type": "response.reasoning_summary_part.added", **part, "part": empty},
                {"type": "response.reasoning_summary_text.delta", **part, "delta": summary["text"]},
                {"type": "response.reasoning_summary_text.done", **part, "text": summary["text"]},
                {"type": "response.reasoning_summary_part.done", **part, "part": summary},
            ]
    else:
        events = [{"type": "response.output_item.added", "output_index": index, "item": item}]
    return [*events, {"type": "response.output_item.done", "output_index": index, "item": item}]


def _events(response: JSON) -> list[JSON]:
    """The stream of ``response`` as the API sends it: created, in_progress, each item's
    events, then completed (or incomplete); every event numbered."""
    started = {
        **response,
        "status": "in_progress",
        "output": [],
        "usage": None,
        "incomplete_details": None,
    }
    events: list[JSON] = [
        {"type": "response.created", "response": started},
        {"type": "response.in_progress", "response": started},
    ]
    for index, item in enumerate(response["output"]):
        events += _item_events(index, item)
    final = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
    events.append({"type": final, "response": response})
    for number, event in enumerate(events):
        event["sequence_number"] = number
    return events


def serve(handler: _Handler, fake: Any, body: Any) -> None:
    """Answer one ``POST /v1/responses``."""
    script = responses_of(fake)
    try:
        _validate(script, body)
    except _Invalid as invalid:
        handler._send_json(400, invalid.body)
        return
    reply = script._next_reply(body)
    if reply.status >= 400:
        handler._send_json(reply.status, _Invalid(f"Fake error (HTTP {reply.status}).").body)
        return
    response = _response(script, reply, body)
    if not body.get("stream"):
        handler._send_json(200, response)
        return
    handler._started = True
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream; charset=utf-8")
    handler.send_header("Transfer-Encoding", "chunked")
    handler._common_headers(None)
    handler.end_headers()
    events = _events(response)
    cut = reply.break_stream_after
    for event in events if cut is None else events[:cut]:
        handler._write_chunk(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
    if cut is None:
        handler._write_chunk(b"")  # the zero-length chunk: the end of the chunked body
    else:
        handler.close_connection = True  # no end of body: the client sees a broken stream
