"""A local, scriptable OpenAI-compatible server for driving the real ``openai`` SDK in tests.

Mocking the SDK would test our assumptions about it; this server lets the SDK's own request
encoding, response parsing, SSE decoding and error mapping run for real, over loopback only.
Standard library only: a ``ThreadingHTTPServer`` on 127.0.0.1 (random free port) served from a
background thread.

    with FakeOpenAI() as server, openai.OpenAI(
        base_url=server.url, api_key="test", max_retries=0
    ) as client:
        server.queue(Reply(content="Hello!"), Reply(tool_calls=[{"name": "f", "arguments": {}}]))
        client.chat.completions.create(model="gpt-4o-mini", messages=[...])
        assert server.requests[0]["model"] == "gpt-4o-mini"

Replies are taken from the queue in order; when it is empty ``server.responder`` (if set) is
called, else the reply is ``"echo: " + <text of the last user message>``.

Token counts are FAKE and deterministic: prompt tokens are :func:`fake_prompt_tokens` (words of
every message plus 3 a message), completion tokens the words of the reply (plus any scripted
reasoning tokens). Tests that need exact numbers set them (``Reply.usage``,
``server.prompt_tokens``).

Prompt caching is simulated on request: ``FakeOpenAI(prompt_cache=True)`` (or setting
``server.prompt_cache = PromptCache()``) reports ``cached_tokens`` for the longest prefix a
request shares with a recent one of the same ``prompt_cache_key``, model and organisation, as
the API does: from 1,024 tokens, in steps of 128 (see ``fake_prompt_cache.py``). Off by
default, so ``cached_tokens`` stays 0 unless a test scripts it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import fake_responses
from fake_prompt_cache import PromptCache, fake_prompt_sequence, reported_cached_tokens

__all__ = [
    "DEFAULT_MODELS",
    "FakeOpenAI",
    "PromptCache",
    "Recorded",
    "Reply",
    "Usage",
    "fake_prompt_tokens",
    "message_text",
]

JSON = dict[str, Any]

DEFAULT_MODELS: tuple[str, ...] = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini")
MESSAGE_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
ARGUMENT_PIECE_CHARS = 8
"""Streamed tool-call ``arguments`` are cut into pieces of this many characters."""

_DEFAULT_ERRORS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    503: ("server_error", None),
}


@dataclass(frozen=True)
class Usage:
    """Overrides for the reported ``usage``; a field left ``None`` keeps the fake default.

    As in the real API, ``reasoning_tokens`` are part of ``completion_tokens`` (the default
    completion count adds them) and ``cached_tokens`` are part of ``prompt_tokens``. A
    ``cached_tokens`` set here wins over the simulated prompt cache.
    """

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None


@dataclass
class Reply:
    """One scripted response to ``POST /v1/chat/completions``.

    ``content``: a string (with ``n`` > 1, choice ``i`` > 0 gets ``" [i]"`` appended, so choice 0
    is always the scripted text) or one string per choice. ``tool_calls``: dicts with ``name``,
    ``arguments`` (a JSON string, or any JSON value which is then encoded) and optionally ``id``.
    ``finish_reason`` defaults to ``"tool_calls"`` when there are tool calls, else ``"stop"``.
    ``choices`` overrides the request's ``n``. ``status`` >= 400 answers with ``error`` (a full
    ``{"error": {...}}`` body, or just its inner object) or a typical body for that status.
    ``delay`` sleeps before answering (timeout tests); ``chunk_delay`` sleeps between streamed
    chunks; ``break_stream_after`` drops the connection after that many streamed chunks, without
    the ``[DONE]`` marker or the end of the chunked body. ``omit_usage`` leaves ``usage`` null
    like some OpenAI-compatible backends.
    """

    content: str | list[str] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    refusal: str | None = None
    finish_reason: str | None = None
    choices: int | None = None
    usage: Usage | None = None
    omit_usage: bool = False
    status: int = 200
    error: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    chunk_delay: float = 0.0
    break_stream_after: int | None = None

    @classmethod
    def api_error(
        cls,
        status: int,
        message: str = "Fake API error.",
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """An error reply shaped like the API's: ``{"error": {message, type, param, code}}``."""
        default_type, default_code = _DEFAULT_ERRORS.get(status, ("api_error", None))
        error = {
            "message": message,
            "type": type or default_type,
            "param": param,
            "code": code if code is not None else default_code,
        }
        return cls(status=status, error={"error": error}, headers=dict(headers or {}))

    def error_body(self) -> JSON:
        if self.error is None:
            return Reply.api_error(self.status, f"Fake error (HTTP {self.status}).").error_body()
        return self.error if "error" in self.error else {"error": self.error}


@dataclass(frozen=True)
class Recorded:
    """One HTTP request as received: header names lower-cased, ``body`` the decoded JSON (raw
    bytes if it is not JSON, None if empty)."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass(frozen=True)
class _Choice:
    index: int
    content: str | None
    refusal: str | None
    tool_calls: list[JSON]
    finish_reason: str


class _InvalidRequest(Exception):
    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.body = {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": param,
                "code": code,
            }
        }


def message_text(message: Mapping[str, Any]) -> str:
    """The text of a request message: string content, or its parts joined with spaces.

    Text and refusal parts give their text; other parts (images, audio, files) give ``[type]``.
    """
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, Mapping):
                kind = part.get("type")
                if kind in ("text", "refusal"):
                    texts.append(str(part.get(kind, "")))
                else:
                    texts.append(f"[{kind}]")
            else:
                texts.append(str(part))
        return " ".join(texts)
    return str(content)


def _words(text: str | None) -> int:
    return len(text.split()) if text else 0


def fake_prompt_tokens(body: Mapping[str, Any]) -> int:
    """FAKE prompt token count: words of every message's text and tool calls, plus 3 a message.

    Deterministic and never 0 for a valid request; not related to any real tokenizer. It is the
    length of :func:`~fake_prompt_cache.fake_prompt_sequence`, the tokens the simulated prompt
    cache compares.
    """
    return len(fake_prompt_sequence(body))


def _fake_completion_tokens(choices: Iterable[_Choice]) -> int:
    """FAKE completion token count: words of every choice's content, refusal and tool calls."""
    total = 0
    for choice in choices:
        total += _words(choice.content) + _words(choice.refusal)
        for call in choice.tool_calls:
            total += _words(call["function"]["name"]) + _words(call["function"]["arguments"])
    return total


def _last_user_text(messages: Sequence[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, Mapping) and message.get("role") == "user":
            return message_text(message)
    return ""


def _validate(body: Mapping[str, Any]) -> None:
    """The request checks the real API makes that matter to a client library."""
    model = body.get("model")
    if model is None:
        raise _InvalidRequest("you must provide a model parameter", "model", None)
    if not isinstance(model, str) or not model:
        raise _InvalidRequest(
            "Invalid type for 'model': expected a string.", "model", "invalid_type"
        )
    if "messages" not in body:
        raise _InvalidRequest(
            "Missing required parameter: 'messages'.", "messages", "missing_required_parameter"
        )
    messages = body["messages"]
    if not isinstance(messages, list):
        raise _InvalidRequest(
            f"Invalid type for 'messages': expected an array, but got {type(messages).__name__}"
            " instead.",
            "messages",
            "invalid_type",
        )
    if not messages:
        raise _InvalidRequest(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an"
            " empty array instead.",
            "messages",
            "empty_array",
        )
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise _InvalidRequest(
                f"Invalid type for 'messages[{i}]': expected an object.",
                f"messages[{i}]",
                "invalid_type",
            )
        role = message.get("role")
        if role is None:
            raise _InvalidRequest(
                f"Missing required parameter: 'messages[{i}].role'.",
                f"messages[{i}].role",
                "missing_required_parameter",
            )
        if role not in MESSAGE_ROLES:
            raise _InvalidRequest(
                f"Invalid value: '{role}'. Supported values are: "
                + ", ".join(f"'{r}'" for r in sorted(MESSAGE_ROLES))
                + ".",
                f"messages[{i}].role",
                "invalid_value",
            )
        if role == "tool" and not message.get("tool_call_id"):
            raise _InvalidRequest(
                f"Missing required parameter: 'messages[{i}].tool_call_id'.",
                f"messages[{i}].tool_call_id",
                "missing_required_parameter",
            )
    _validate_tool_pairing(messages)
    n = body.get("n")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 128):
        raise _InvalidRequest(f"Invalid 'n': expected an integer from 1 to 128, got {n!r}.", "n")
    if body.get("stream_options") is not None and not body.get("stream"):
        raise _InvalidRequest(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
        )


def _validate_tool_pairing(messages: Sequence[Mapping[str, Any]]) -> None:
    """Tool results must answer the assistant tool calls right before them, all of them.

    The real API rejects both orphaned ``tool`` messages and unanswered ``tool_calls``: exactly
    what a conversation window cut in the wrong place produces.
    """
    pending: dict[str, int] = {}  # tool_call_id -> index of the assistant message asking
    open_calls = False  # inside the run of tool messages after an assistant with tool_calls
    for i, message in enumerate(messages):
        role = message.get("role")
        if role == "tool":
            call_id = message.get("tool_call_id")
            if not open_calls:
                raise _InvalidRequest(
                    "Invalid parameter: messages with role 'tool' must be a response to a"
                    " preceeding message with 'tool_calls'.",
                    f"messages.[{i}].role",
                )
            if call_id not in pending:
                raise _InvalidRequest(
                    f"Invalid parameter: 'tool_call_id' of '{call_id}' not found in 'tool_calls'"
                    " of previous message.",
                    f"messages.[{i}].tool_call_id",
                )
            del pending[call_id]
            continue
        _raise_unanswered(pending)
        calls = message.get("tool_calls") if role == "assistant" else None
        open_calls = bool(calls)
        for call in calls or []:
            call_id = call.get("id") if isinstance(call, Mapping) else None
            if call_id:
                pending[str(call_id)] = i
    _raise_unanswered(pending)


def _raise_unanswered(pending: Mapping[str, int]) -> None:
    if pending:
        asking = min(pending.values())
        raise _InvalidRequest(
            "An assistant message with 'tool_calls' must be followed by tool messages responding"
            " to each 'tool_call_id'. The following tool_call_ids did not have response"
            " messages: " + ", ".join(pending),
            f"messages.[{asking}].role",
        )


def _pieces(text: str) -> list[str]:
    """Streamed content pieces, roughly word-sized like real tokens: ``"a b" -> ["a", " b"]``."""
    return re.findall(r"\s*\S+\s*$|\s*\S+", text) or ([text] if text else [])


def _argument_pieces(arguments: str) -> list[str]:
    return [
        arguments[i : i + ARGUMENT_PIECE_CHARS]
        for i in range(0, len(arguments), ARGUMENT_PIECE_CHARS)
    ]


class _HTTPServer(ThreadingHTTPServer):
    """Joins its handler threads on close and remembers open connections to cut them then."""

    daemon_threads = False
    block_on_close = True

    def __init__(self, fake: FakeOpenAI) -> None:
        self.fake = fake
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would resolve the host name (socket.getfqdn): skip the lookup
        TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]

    def process_request(self, request: Any, client_address: Any) -> None:
        # registered in the accepting thread, so close() sees every accepted connection
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def cut_connections(self) -> None:
        with self.connections_lock:
            connections = list(self.connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, OSError) or error is None:
            return  # the client went away (timeouts, broken streams) or we are closing
        self.fake._record_error(error)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, and chunked transfer for streams
    server_version = "FakeOpenAI/1.0"
    sys_version = ""
    timeout = 30.0  # idle keep-alive connections are dropped eventually even if never cut
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms ACK stalls
    server: _HTTPServer
    _started = False  # response headers sent: an error can no longer become a 500

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: pytest shows failures, not request logs

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        fake = self.server.fake
        self._started = False
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw
        path = urlsplit(self.path).path.rstrip("/")
        headers = {name.lower(): value for name, value in self.headers.items()}
        fake._record(Recorded(self.command, self.path, headers, body))
        try:
            if fake.api_key is not None and (
                self.headers.get("Authorization") != f"Bearer {fake.api_key}"
            ):
                self._send_json(
                    401,
                    Reply.api_error(401, "Incorrect API key provided.").error_body(),
                )
            elif self.command == "POST" and path == "/v1/chat/completions":
                self._chat_completions(body)
            elif self.command == "POST" and path == "/v1/responses":
                fake_responses.serve(self, fake, body)
            elif self.command == "GET" and path == "/v1/models":
                self._send_json(200, {"object": "list", "data": [_model(m) for m in fake.models]})
            elif self.command == "GET" and path.startswith("/v1/models/"):
                name = path.removeprefix("/v1/models/")
                if name in fake.models:
                    self._send_json(200, _model(name))
                else:
                    message = f"The model '{name}' does not exist"
                    self._send_json(404, Reply.api_error(404, message, param="model").error_body())
            else:
                self._send_json(404, _InvalidRequest(f"Invalid URL ({self.command} {path})").body)
        except OSError:
            self.close_connection = True  # the client is gone
        except Exception as error:
            fake._record_error(error)
            if self._started:
                self.close_connection = True  # mid-stream: the client sees a broken body
            else:
                message = f"FakeOpenAI failed: {error!r}"
                self._send_json(500, Reply.api_error(500, message).error_body())

    def _chat_completions(self, body: Any) -> None:
        fake = self.server.fake
        if not isinstance(body, dict):
            invalid = _InvalidRequest(
                "We could not parse the JSON body of your request. (HINT: This likely means you"
                " aren't using your HTTP library correctly. The OpenAI API expects a JSON"
                " payload, but what was sent was not valid JSON.)"
            )
            self._send_json(400, invalid.body)
            return
        fake._record_body(body)
        try:
            _validate(body)
        except _InvalidRequest as invalid:
            self._send_json(400, invalid.body)
            return
        reply = fake._next_reply(body)
        if reply.delay and fake._closing.wait(reply.delay):
            self.close_connection = True
            return
        if reply.status >= 400:
            self._send_json(reply.status, reply.error_body(), reply.headers)
            return
        choices = _make_choices(reply, body)
        common_prefix = fake._prompt_cache_match(body, self.headers.get("OpenAI-Organization"))
        usage = None if reply.omit_usage else fake._usage(reply, body, choices, common_prefix)
        head = {
            "id": f"chatcmpl-fake{fake._next_id():06d}",
            "created": int(time.time()),
            "model": body["model"],
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            self._stream(reply, _chunks(head, choices, usage, include_usage))
        else:
            self._send_json(reply.status, _completion(head, choices, usage), reply.headers)

    def _send_json(
        self, status: int, payload: Any, headers: Mapping[str, str] | None = None
    ) -> None:
        data = json.dumps(payload).encode()
        self._started = True
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self._common_headers(headers)
        self.end_headers()
        self.wfile.write(data)

    def _common_headers(self, headers: Mapping[str, str] | None) -> None:
        headers = headers or {}
        extra = {k.lower() for k in headers}
        if "x-request-id" not in extra:
            self.send_header("x-request-id", f"req_fake{self.server.fake._next_id():06d}")
        if "openai-processing-ms" not in extra:
            self.send_header("openai-processing-ms", "1")
        for name, value in headers.items():
            self.send_header(name, value)

    def _stream(self, reply: Reply, chunks: list[JSON]) -> None:
        fake = self.server.fake
        self._started = True
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache")
        self._common_headers(reply.headers)
        self.end_headers()
        cut = reply.break_stream_after
        for number, chunk in enumerate(chunks if cut is None else chunks[:cut]):
            if number and reply.chunk_delay and fake._closing.wait(reply.chunk_delay):
                cut = number  # closing the server
                break
            self._write_chunk(f"data: {json.dumps(chunk)}\n\n".encode())
        if cut is None:
            self._write_chunk(b"data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")  # the end of the chunked body
        else:
            # no [DONE], no terminating zero-length chunk; the socket is closed after return
            self.close_connection = True

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))


def _model(name: str) -> JSON:
    return {"id": name, "object": "model", "created": 1_700_000_000, "owned_by": "fake-openai"}


def _normal_tool_call(call: Mapping[str, Any], index: int, prefix: str) -> JSON:
    arguments = call.get("arguments", "{}")
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments)
    return {
        "id": str(call.get("id") or f"call_{prefix}_{index}"),
        "type": "function",
        "function": {"name": str(call["name"]), "arguments": arguments},
    }


def _make_choices(reply: Reply, body: Mapping[str, Any]) -> list[_Choice]:
    if reply.choices is not None:
        count = reply.choices
    elif body.get("n") is not None:
        count = int(body["n"])
    else:
        count = len(reply.content) if isinstance(reply.content, list) else 1
    choices = []
    for i in range(count):
        if isinstance(reply.content, list):
            if i >= len(reply.content):
                raise ValueError(f"Reply has {len(reply.content)} contents, {count} choices asked")
            content: str | None = reply.content[i]
        elif reply.content is not None and i > 0:
            content = f"{reply.content} [{i}]"
        else:
            content = reply.content
        calls = [
            _normal_tool_call(call, k, f"fake{i}") for k, call in enumerate(reply.tool_calls or [])
        ]
        finish = reply.finish_reason or ("tool_calls" if calls else "stop")
        choices.append(_Choice(i, content, reply.refusal, calls, finish))
    return choices


def _completion(head: JSON, choices: list[_Choice], usage: JSON | None) -> JSON:
    out_choices = []
    for choice in choices:
        message: JSON = {
            "role": "assistant",
            "content": choice.content,
            "refusal": choice.refusal,
            "annotations": [],
        }
        if choice.tool_calls:
            message["tool_calls"] = choice.tool_calls
        out_choices.append(
            {
                "index": choice.index,
                "message": message,
                "logprobs": None,
                "finish_reason": choice.finish_reason,
            }
        )
    return {"object": "chat.completion", **head, "choices": out_choices, "usage": usage}


def _chunks(
    head: JSON, choices: list[_Choice], usage: JSON | None, include_usage: bool
) -> list[JSON]:
    """The ``chat.completion.chunk`` objects of a stream, choices interleaved like the API's."""
    per_choice: list[list[tuple[JSON, str | None]]] = []
    for choice in choices:
        first: JSON = {"role": "assistant", "content": "" if choice.content is not None else None}
        first["refusal"] = None
        deltas: list[tuple[JSON, str | None]] = [(first, None)]
        deltas += [({"content": piece}, None) for piece in _pieces(choice.content or "")]
        deltas += [({"refusal": piece}, None) for piece in _pieces(choice.refusal or "")]
        for k, call in enumerate(choice.tool_calls):
            opening = {
                "index": k,
                "id": call["id"],
                "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""},
            }
            deltas.append(({"tool_calls": [opening]}, None))
            for piece in _argument_pieces(call["function"]["arguments"]):
                deltas.append(
                    ({"tool_calls": [{"index": k, "function": {"arguments": piece}}]}, None)
                )
        deltas.append(({}, choice.finish_reason))
        per_choice.append(deltas)

    chunks: list[JSON] = []
    for round_ in itertools.zip_longest(*per_choice):
        for index, item in enumerate(round_):
            if item is None:
                continue
            delta, finish_reason = item
            chunk: JSON = {
                "object": "chat.completion.chunk",
                **head,
                "choices": [
                    {
                        "index": index,
                        "delta": delta,
                        "logprobs": None,
                        "finish_reason": finish_reason,
                    }
                ],
            }
            if include_usage:
                chunk["usage"] = None
            chunks.append(chunk)
    if include_usage:
        chunks.append({"object": "chat.completion.chunk", **head, "choices": [], "usage": usage})
    return chunks


class FakeOpenAI:
    """An OpenAI-compatible HTTP server on 127.0.0.1, running until :meth:`close`.

    Public state, all safe to set from the test while the server runs:

    - ``url``: base URL for the SDK (``http://127.0.0.1:PORT/v1``).
    - ``requests``: JSON bodies of every ``POST /v1/chat/completions``, in order (invalid ones
      too; bodies that are not JSON objects only appear in ``log``).
    - ``log``: every HTTP request (:class:`Recorded`), any path.
    - ``responder``: ``fn(request_body) -> Reply | str`` used when the queue is empty.
    - ``prompt_tokens``: an int, or ``fn(request_body) -> int``; default :func:`fake_prompt_tokens`.
    - ``prompt_cache``: a :class:`~fake_prompt_cache.PromptCache` that sets ``cached_tokens``
      (``prompt_cache=True`` makes one), or None: no caching, ``cached_tokens`` 0.
    - ``models``: ids listed by ``GET /v1/models``.
    - ``api_key``: when set, requests without ``Authorization: Bearer <api_key>`` get a 401.
    - ``errors``: exceptions raised inside the server (a failing responder, a bad ``Reply``);
      such requests are answered with a 500, and leaving the ``with`` block re-raises the first.
    """

    def __init__(
        self,
        *,
        models: Iterable[str] = DEFAULT_MODELS,
        api_key: str | None = None,
        prompt_cache: bool | PromptCache = False,
    ) -> None:
        self.requests: list[JSON] = []
        self.log: list[Recorded] = []
        self.errors: list[BaseException] = []
        self.responder: Callable[[JSON], Reply | str] | None = None
        self.prompt_tokens: int | Callable[[JSON], int] = fake_prompt_tokens
        self.prompt_cache: PromptCache | None = None
        if isinstance(prompt_cache, PromptCache):
            self.prompt_cache = prompt_cache  # (an empty one is falsy: it has a length)
        elif prompt_cache:
            self.prompt_cache = PromptCache()
        self.models: list[str] = list(models)
        self.api_key = api_key
        self._replies: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._ids = itertools.count(1)
        self._closed = False
        self._httpd = _HTTPServer(self)
        self.port: int = self._httpd.server_port
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.01},  # how long shutdown() may wait
            name=f"FakeOpenAI-{self.port}",
            daemon=True,
        )
        self._thread.start()

    def queue(self, *replies: Reply | str) -> None:
        """Script the next responses, in order; a string is ``Reply(content=...)``."""
        with self._lock:
            self._replies.extend(Reply(content=r) if isinstance(r, str) else r for r in replies)

    @property
    def pending(self) -> int:
        """Queued replies not used yet (assert 0 to prove the test used all it scripted)."""
        with self._lock:
            return len(self._replies)

    @property
    def last_request(self) -> JSON:
        with self._lock:
            if not self.requests:
                raise AssertionError("FakeOpenAI received no chat completion request")
            return self.requests[-1]

    def close(self) -> None:
        """Stop serving, cut open connections, and join every server thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._closing.set()  # wakes replies sleeping in delay / chunk_delay
        self._httpd.shutdown()
        self._thread.join()
        self._httpd.cut_connections()  # handler threads blocked on keep-alive reads see EOF
        self._httpd.server_close()  # closes the listening socket, joins handler threads

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
        if exc is None and self.errors:
            raise AssertionError(f"FakeOpenAI server error: {self.errors[0]!r}") from self.errors[0]

    def __repr__(self) -> str:
        return f"<FakeOpenAI {self.url} requests={len(self.requests)} pending={self.pending}>"

    # -- used by the handler threads ------------------------------------------------------------

    def _record(self, recorded: Recorded) -> None:
        with self._lock:
            self.log.append(recorded)

    def _record_body(self, body: JSON) -> None:
        with self._lock:
            self.requests.append(body)

    def _record_error(self, error: BaseException) -> None:
        with self._lock:
            self.errors.append(error)

    def _next_id(self) -> int:
        with self._lock:
            return next(self._ids)

    def _next_reply(self, body: JSON) -> Reply:
        with self._lock:
            if self._replies:
                return self._replies.popleft()
            responder = self.responder
        if responder is None:
            return Reply(content="echo: " + _last_user_text(body["messages"]))
        reply = responder(body)
        return Reply(content=reply) if isinstance(reply, str) else reply

    def _prompt_cache_match(self, body: JSON, organization: str | None) -> int:
        """The prefix this request shares with a recent one (0 with no cache); the request is
        then remembered. Only requests answered with a completion get here, as in the API."""
        cache = self.prompt_cache
        if cache is None:
            return 0
        return cache.match_and_store(cache.bucket(body, organization), fake_prompt_sequence(body))

    def _usage(
        self, reply: Reply, body: JSON, choices: list[_Choice], common_prefix: int = 0
    ) -> JSON:
        override = reply.usage or Usage()
        if override.prompt_tokens is not None:
            prompt = override.prompt_tokens
        elif callable(self.prompt_tokens):
            prompt = self.prompt_tokens(body)
        else:
            prompt = self.prompt_tokens
        if override.cached_tokens is not None:
            cached = override.cached_tokens
        else:
            cached = reported_cached_tokens(min(common_prefix, prompt))
        reasoning = override.reasoning_tokens or 0
        completion = override.completion_tokens
        if completion is None:
            completion = _fake_completion_tokens(choices) + reasoning
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {
                "cached_tokens": cached,
                "audio_tokens": 0,
            },
            "completion_tokens_details": {
                "reasoning_tokens": reasoning,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
