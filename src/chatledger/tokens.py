"""Prompt-token accounting as the Chat Completions API bills it (``usage.prompt_tokens``).

Rules, each with its source (details, and what is exact and what is an estimate, in
``docs/tokens.md``):

* Messages: 3 tokens per message plus the tokens of role, content and name, +1 for a name, and
  3 for the reply priming; gpt-3.5-turbo-0301 used 4 per message and -1 per name (OpenAI
  cookbook, "How to count tokens with tiktoken").
* Tool definitions: rendered the way the model sees them, as a TypeScript ``namespace
  functions`` block, +9; with a system message present the block joins it (-4, and the system
  text gains a trailing newline); ``tool_choice`` "none" +1, a forced function +4 + its name
  (hmarr/openai-chat-tokens, whose cases carry API-reported counts).
* Assistant ``function_call`` / a single ``tool_calls`` entry: name + arguments + 3; ``function``
  and ``tool`` messages: -2, with the called function's name counted as the message name.
* Images: ``chatledger._images``; audio, files, parallel tool calls: documented estimates.

Counting never touches the network (``chatledger._bpe`` loads the bundled BPE files) and uses
``encode_ordinary``, so text that looks like a special token is counted as the plain text the
API also sees, and never raises.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import math
import re
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import tiktoken

from chatledger import _images
from chatledger._bpe import encoding_name_for_model, load_encoding, normalize_model

__all__ = [
    "TokenCounter",
    "count_tokens",
    "encoding_for_model",
    "system_text",
]

# --- constants (sources in docs/tokens.md) ----------------------------------------------------

_REPLY_PRIMING = 3  # <|start|>assistant<|message|>
# o-series reasoning models: recorded usage (o3, o4-mini) is one token lower per request; put
# in the priming, so a request with several messages can only be over-, never under-counted.
_REASONING_PRIMING = 2
_REASONING_PREFIXES = ("o1", "o3", "o4")
_FUNCTION_CALL_OVERHEAD = 3  # an assistant function call in history
_FUNCTION_ROLE_ADJUST = -2  # function / tool result messages
_TOOLS_OVERHEAD = 9  # the "# Tools / ## functions" wrapper and its own system message
_TOOLS_SYSTEM_MERGE = -4  # the wrapper joins an existing system message instead
_TOOL_CHOICE_NONE = 1
_TOOL_CHOICE_FORCED = 4  # + tokens of the forced name
_UNKNOWN_TOOL_NAME = 8  # estimate: a tool result whose call is not in view

# Estimates (no published rule).
AUDIO_TOKENS_PER_SECOND = 10
"""Input audio: 1 token per 100 ms (OpenAI's realtime pricing: $100 per 1M audio input tokens,
"about $0.06 per minute"). An estimate; the API reports audio tokens separately."""
_AUDIO_FALLBACK_BYTES_PER_SECOND = 4000  # 32 kbit/s when the header cannot be read: long side
PDF_TEXT_TOKENS_PER_PAGE = 800
"""Estimated text tokens per PDF page (the API sends each page's text and an image of it)."""
_PDF_PAGE_PIXELS = (1224, 1584)  # a US-letter page at 144 dpi, priced as a high-detail image
_PDF_FALLBACK_BYTES_PER_PAGE = 30_000
_PDF_PAGE_RE = re.compile(rb"/Type\s*/Page(?![a-zA-Z])")

_SYSTEM_ROLES = frozenset({"system", "developer"})
_RESULT_ROLES = frozenset({"tool", "function"})


def encoding_for_model(model: str) -> tiktoken.Encoding:
    """The bundled :class:`tiktoken.Encoding` for ``model`` (never downloads)."""
    return load_encoding(encoding_name_for_model(model, stacklevel=3))


# --- the counter ------------------------------------------------------------------------------


class TokenCounter:
    """Counts tokens for one model; resolves encoding and rules once.

    This is the hot path when storing messages: ``message()`` gives one message's whole share of
    a request (overhead included), so a stored history's total plus :attr:`priming` plus
    :meth:`tools` is what :meth:`count` computes for sending it::

        count(msgs, tools) == sum(messages(msgs)) + priming
                              + tools(tools, system=system_text(msgs))

    ``messages(msgs)[i]`` is ``message(msgs[i])``, except that a tool result is counted with
    ``answering=`` the assistant message whose call it answers (its function name is part of
    what the API bills). ``system`` is the first system/developer message's text (tool
    definitions join it).
    """

    __slots__ = (
        "_encode",
        "_encoding",
        "_fast",
        "_image_rule",
        "_model",
        "_norm",
        "_per_message",
        "_per_name",
        "_priming",
        "_profile",
        "_role_tokens",
    )

    def __init__(self, model: str) -> None:
        self._model = model
        self._norm = normalize_model(model)
        name = encoding_name_for_model(model, stacklevel=3)
        self._encoding = load_encoding(name)
        self._encode = self._encoding.encode_ordinary
        # The Rust core skips a Python frame; it raises on lone surrogates, and every caller
        # then retries with the wrapper above, which repairs them.
        core = getattr(self._encoding, "_core_bpe", None)
        self._fast: Callable[[str], list[int]] = getattr(core, "encode_ordinary", self._encode)
        if self._norm.startswith("gpt-3.5-turbo-0301"):
            # <|start|>{role or name}\n{content}<|end|>\n; a name replaces the role.
            self._per_message, self._per_name = 4, -1
        else:
            self._per_message, self._per_name = 3, 1
        self._priming = (
            _REASONING_PRIMING if self._norm.startswith(_REASONING_PREFIXES) else _REPLY_PRIMING
        )
        self._image_rule = _images.image_rule_for_model(self._norm)
        # Per-message overhead plus the role's own tokens, precomputed for the hot path.
        self._role_tokens = {
            role: self._per_message + len(self._encode(role))
            for role in ("system", "developer", "user", "assistant", "tool", "function")
        }
        self._profile = f"{name}/m{self._per_message}n{self._per_name:+d}/{self._image_rule.key}"

    # --- properties -------------------------------------------------------------------------

    @property
    def model(self) -> str:
        """The model name this counter was made for, as given."""
        return self._model

    @property
    def encoding_name(self) -> str:
        """``o200k_base`` or ``cl100k_base``."""
        return self._encoding.name

    @property
    def encoding(self) -> tiktoken.Encoding:
        """The bundled encoding in use."""
        return self._encoding

    @property
    def profile(self) -> str:
        """Equal profiles give identical per-message counts: a model change between two models
        with the same profile needs no recount."""
        return self._profile

    @property
    def priming(self) -> int:
        """Tokens every request pays once for the reply priming (``<|start|>assistant``)."""
        return self._priming

    # --- counting ---------------------------------------------------------------------------

    def text(self, s: str) -> int:
        """Tokens of plain text; special-token look-alikes count as ordinary text."""
        return len(self._encode(s))

    def message(self, msg: Mapping[str, Any], *, answering: Mapping[str, Any] | None = None) -> int:
        """One message's whole contribution to a request, per-message overhead included.

        For a ``tool`` result pass ``answering``, the assistant message whose ``tool_calls``
        holds its ``tool_call_id``: the API renders the result under the called function's
        name, which the tool message itself does not carry. Without it a ``name`` key on the
        message is used, else an estimate of ``_UNKNOWN_TOOL_NAME`` (8) tokens.
        """
        try:
            return self._message(msg, answering, self._fast)
        except UnicodeEncodeError:  # lone surrogates: tiktoken's wrapper repairs them
            return self._message(msg, answering, self._encode)

    def _message(
        self,
        msg: Mapping[str, Any],
        answering: Mapping[str, Any] | None,
        encode: Callable[[str], list[int]],
    ) -> int:
        role = msg.get("role")
        content = msg.get("content")
        name = msg.get("name")
        n = self._role_tokens.get(role) if role.__class__ is str else None
        if n is None:
            n = self._per_message + len(self._encode(str(role)))
        if content.__class__ is str:
            n += len(encode(content))
        elif content is not None:
            n += self._content_parts(content)
        if name is not None:
            if name and isinstance(name, str):
                n += len(encode(name)) + self._per_name
            if len(msg) == 3 and content is not None and role not in _RESULT_ROLES:
                return n  # {"role", "content", "name"}
        elif len(msg) == 2 and content is not None and role not in _RESULT_ROLES:
            return n  # {"role", "content"}: the hot path ends here
        refusal = msg.get("refusal")
        if isinstance(refusal, str) and refusal:
            n += len(encode(refusal))
        call = msg.get("function_call")
        if isinstance(call, Mapping):
            n += self._call(call.get("name"), call.get("arguments"))
        calls = msg.get("tool_calls")
        if calls:
            n += self._tool_calls(calls)
        if role == "tool":
            n += _FUNCTION_ROLE_ADJUST
            if not (name and isinstance(name, str)):
                n += self._tool_result_name(msg, answering)
            if answering is not None and _is_parallel(answering) and isinstance(content, str):
                # Results of parallel calls reach the model JSON-escaped (ASCII-only): estimate.
                n += len(encode(json.dumps(content))) - len(encode(content))
        elif role == "function":
            n += _FUNCTION_ROLE_ADJUST
        return n

    def messages(self, messages: Iterable[Any], *, resolve_tool_calls: bool = True) -> list[int]:
        """Per-message counts of a request, each tool result given the assistant message it
        answers (``answering``, found by ``tool_call_id`` among the earlier messages).

        ``sum(messages(msgs)) + priming + tools(tools, system=system_text(msgs))`` is
        :meth:`count`. With ``resolve_tool_calls=False`` it is ``[message(m) for m in msgs]``.
        """
        items = [m if isinstance(m, Mapping) else _as_mapping(m) for m in messages]
        try:
            return self._each(items, self._fast, resolve_tool_calls)
        except UnicodeEncodeError:
            return self._each(items, self._encode, resolve_tool_calls)

    def _each(
        self,
        items: list[Mapping[str, Any]],
        encode: Callable[[str], list[int]],
        resolve: bool,
    ) -> list[int]:
        out: list[int] = []
        append = out.append
        one = self._message
        calls: dict[str, Mapping[str, Any]] = {}
        for msg in items:
            if not resolve or (len(msg) == 2 and "content" in msg):
                append(one(msg, None, encode))
                continue
            answering = None
            if msg.get("role") == "tool" and calls:
                call_id = msg.get("tool_call_id")
                if isinstance(call_id, str):
                    answering = calls.get(call_id)
            append(one(msg, answering, encode))
            tool_calls = msg.get("tool_calls")
            if tool_calls and isinstance(tool_calls, Sequence):
                for tc in tool_calls:
                    if isinstance(tc, Mapping) and isinstance(tc.get("id"), str):
                        calls[tc["id"]] = msg
        return out

    def tools(
        self,
        tools: Sequence[Mapping[str, Any]] | None,
        *,
        system: str | None = None,
        tool_choice: Any = None,
    ) -> int:
        """Tokens the tool definitions add to a request (0 for None or empty).

        ``system`` is the text of the request's first system (or developer) message, or None when
        it has none: the definitions are appended to that message (saving its overhead, and
        adding a newline to its text) rather than sent as a message of their own.
        ``tool_choice`` accepts the Chat Completions values and the legacy ``function_call``
        ones.
        """
        if not tools:
            return 0
        n = len(self._encode(_render_tools(tools))) + _TOOLS_OVERHEAD
        if system is not None:
            n += _TOOLS_SYSTEM_MERGE
            n += len(self._encode(system + "\n")) - (len(self._encode(system)) if system else 0)
        if tool_choice is not None and tool_choice != "auto":
            if tool_choice in ("none", "required"):
                n += _TOOL_CHOICE_NONE
            elif isinstance(tool_choice, Mapping):
                forced = _forced_name(tool_choice)
                if forced:
                    n += _TOOL_CHOICE_FORCED + len(self._encode(forced))
        return n

    def count(
        self,
        messages: Iterable[Any],
        tools: Sequence[Mapping[str, Any]] | None = None,
        *,
        tool_choice: Any = None,
        resolve_tool_calls: bool = True,
    ) -> int:
        """Prompt tokens of a request with these messages and tools.

        Each tool result is counted under the name of the function it answers, found in the
        earlier assistant ``tool_calls`` (exact). ``resolve_tool_calls=False`` counts every
        message alone (a tool result's name then estimated), so the total is the plain sum of
        :meth:`message` over the messages.
        """
        items = [m if isinstance(m, Mapping) else _as_mapping(m) for m in messages]
        try:
            total = sum(self._each(items, self._fast, resolve_tool_calls)) + self._priming
        except UnicodeEncodeError:
            total = sum(self._each(items, self._encode, resolve_tool_calls)) + self._priming
        if tools:
            total += self.tools(tools, system=system_text(items), tool_choice=tool_choice)
        return total

    # --- parts ------------------------------------------------------------------------------

    def _content_parts(self, content: Any) -> int:
        if not isinstance(content, Sequence) or isinstance(content, (bytes, bytearray)):
            return len(self._encode(str(content)))
        n = 0
        for part in content:
            if isinstance(part, str):
                n += len(self._encode(part))
                continue
            if not isinstance(part, Mapping):
                continue
            kind = part.get("type")
            if kind == "text":
                text = part.get("text")
                if isinstance(text, str):
                    n += len(self._encode(text))
            elif kind == "refusal":
                text = part.get("refusal")
                if isinstance(text, str):
                    n += len(self._encode(text))
            elif kind == "image_url":
                n += self._image(part.get("image_url"))
            elif kind == "input_audio":
                n += _audio_tokens(part.get("input_audio"))
            elif kind == "file":
                n += self._file(part.get("file"))
            else:  # unknown part: its JSON, an estimate
                n += len(self._encode(json.dumps(part, ensure_ascii=False, default=str)))
        return n

    def _image(self, spec: Any) -> int:
        url: Any = spec
        detail: Any = "auto"
        if isinstance(spec, Mapping):
            url, detail = spec.get("url"), spec.get("detail", "auto")
        return _images.image_tokens(
            url if isinstance(url, str) else "",
            detail if isinstance(detail, str) else "auto",
            self._image_rule,
        )

    def _file(self, spec: Any) -> int:
        """PDF input: each page as text and as an image (estimate)."""
        pages = 1
        if isinstance(spec, Mapping) and isinstance(spec.get("file_data"), str):
            pages = _pdf_pages(spec["file_data"])
        page = self._image_rule.tokens(*_PDF_PAGE_PIXELS, "high") + PDF_TEXT_TOKENS_PER_PAGE
        return pages * page

    def _call(self, name: Any, arguments: Any) -> int:
        n = _FUNCTION_CALL_OVERHEAD
        if isinstance(name, str) and name:
            n += len(self._encode(name))
        if isinstance(arguments, str) and arguments:
            n += len(self._encode(arguments))
        return n

    def _tool_calls(self, calls: Any) -> int:
        if not isinstance(calls, Sequence):
            return 0
        parsed = [_call_parts(tc) for tc in calls if isinstance(tc, Mapping)]
        if len(parsed) == 1:
            return self._call(*parsed[0])
        if not parsed:
            return 0
        # Parallel calls go through the multi_tool_use.parallel wrapper: estimate its JSON.
        uses = []
        for name, arguments in parsed:
            try:
                params: Any = json.loads(arguments) if isinstance(arguments, str) else arguments
            except ValueError:
                params = arguments
            uses.append({"recipient_name": f"functions.{name}", "parameters": params})
        body = json.dumps({"tool_uses": uses}, ensure_ascii=False, default=str)
        return self._call("multi_tool_use.parallel", body)

    def _tool_result_name(self, msg: Mapping[str, Any], answering: Mapping[str, Any] | None) -> int:
        call_id = msg.get("tool_call_id")
        if answering is not None:
            for tc in answering.get("tool_calls") or ():
                if isinstance(tc, Mapping) and tc.get("id") == call_id:
                    name, _ = _call_parts(tc)
                    if name:
                        return len(self._encode(name)) + self._per_name
        return _UNKNOWN_TOOL_NAME + self._per_name


# --- module-level helpers ---------------------------------------------------------------------


def _as_mapping(item: Any) -> Mapping[str, Any]:
    if isinstance(item, Mapping):
        return item
    from chatledger.messages import to_api_dict  # lazy: messages imports this module's users

    return to_api_dict(item)


def _is_parallel(assistant: Mapping[str, Any]) -> bool:
    calls = assistant.get("tool_calls")
    return isinstance(calls, Sequence) and len(calls) > 1


def _call_parts(tc: Mapping[str, Any]) -> tuple[str, str]:
    """(name, arguments) of a function or custom tool call."""
    body = tc.get("function")
    if not isinstance(body, Mapping):
        body = tc.get("custom")
    if not isinstance(body, Mapping):
        return "", ""
    name = body.get("name")
    arguments = body.get("arguments", body.get("input"))
    return (
        name if isinstance(name, str) else "",
        arguments if isinstance(arguments, str) else json.dumps(arguments, default=str),
    )


def system_text(messages: Iterable[Mapping[str, Any]]) -> str | None:
    """Text of the first system or developer message, the one tool definitions join."""
    for msg in messages:
        if msg.get("role") in _SYSTEM_ROLES:
            content = msg.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, Sequence):
                return "".join(
                    p.get("text", "")
                    for p in content
                    if isinstance(p, Mapping) and isinstance(p.get("text"), str)
                )
            return ""
    return None


def _forced_name(choice: Mapping[str, Any]) -> str | None:
    if isinstance(choice.get("name"), str):  # legacy function_call={"name": ...}
        return str(choice["name"])
    for key in ("function", "custom"):
        body = choice.get(key)
        if isinstance(body, Mapping) and isinstance(body.get("name"), str):
            return str(body["name"])
    return None


# --- tool definitions as the model sees them --------------------------------------------------


def _js_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def _ts_type(schema: Any, indent: int) -> str:
    if not isinstance(schema, Mapping):
        return "any"
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, Sequence) and not isinstance(options, str):
            return " | ".join(_ts_type(o, indent) for o in options)
    kind = schema.get("type")
    if isinstance(kind, list):
        return " | ".join(_ts_type({**schema, "type": k}, indent) for k in kind)
    enum = schema.get("enum")
    if kind == "string":
        if isinstance(enum, list):
            return " | ".join(f'"{v}"' for v in enum)
        return "string"
    if kind in ("number", "integer"):
        if isinstance(enum, list):
            return " | ".join(_js_literal(v) for v in enum)
        return "number"
    if kind == "boolean":
        return "boolean"
    if kind == "null":
        return "null"
    if kind == "object":
        return "\n".join(["{", _ts_properties(schema, indent + 2), "}"])
    if kind == "array":
        items = schema.get("items")
        if isinstance(items, Mapping):
            return f"{_ts_type(items, indent)}[]"
        return "any[]"
    if isinstance(enum, list):
        return " | ".join(_js_literal(v) for v in enum)
    return "any"


def _ts_properties(schema: Mapping[str, Any], indent: int) -> str:
    props = schema.get("properties")
    if not isinstance(props, Mapping):
        return ""
    required = schema.get("required")
    required = required if isinstance(required, list) else []
    lines: list[str] = []
    for name, prop in props.items():
        desc = prop.get("description") if isinstance(prop, Mapping) else None
        if desc and indent < 2:  # nested descriptions are not rendered
            lines.append(f"// {desc}")
        optional = "" if name in required else "?"
        lines.append(f"{name}{optional}: {_ts_type(prop, indent)},")
    pad = " " * indent
    return "\n".join(pad + line for line in lines)


def _render_function(lines: list[str], fn: Mapping[str, Any]) -> None:
    name = fn.get("name", "")
    desc = fn.get("description")
    if desc:
        lines.append(f"// {desc}")
    params = fn.get("parameters")
    if isinstance(params, Mapping) and params.get("properties"):
        lines.append(f"type {name} = (_: {{")
        lines.append(_ts_properties(params, 0))
        lines.append("}) => any;")
    else:
        lines.append(f"type {name} = () => any;")
    lines.append("")


def _render_custom(lines: list[str], tool: Mapping[str, Any]) -> None:
    """Custom (free-form input) tools: no published rendering; estimate as a string function
    plus the text of its grammar, if any."""
    name = tool.get("name", "")
    desc = tool.get("description")
    if desc:
        lines.append(f"// {desc}")
    fmt = tool.get("format")
    if isinstance(fmt, Mapping) and fmt.get("type") == "grammar":
        inner = fmt.get("grammar")
        grammar: Mapping[str, Any] = inner if isinstance(inner, Mapping) else fmt
        lines.append(f"// {grammar.get('syntax', 'grammar')}:")
        lines.extend(f"// {line}" for line in str(grammar.get("definition", "")).splitlines())
    lines.append(f"type {name} = (_: string) => any;")
    lines.append("")


def _render_tools(tools: Sequence[Mapping[str, Any]]) -> str:
    """The ``namespace functions`` block (hmarr/openai-chat-tokens, src/functions.ts)."""
    lines = ["namespace functions {", ""]
    for tool in tools:
        if not isinstance(tool, Mapping):
            continue
        kind = tool.get("type")
        if kind == "function" and isinstance(tool.get("function"), Mapping):
            _render_function(lines, tool["function"])
        elif kind is None and "name" in tool:  # legacy `functions` entry
            _render_function(lines, tool)
        elif kind == "custom" and isinstance(tool.get("custom"), Mapping):
            _render_custom(lines, tool["custom"])
        else:  # unknown tool type: its JSON (estimate)
            lines.append(f"// {json.dumps(tool, ensure_ascii=False, default=str)}")
            lines.append("")
    lines.append("} // namespace functions")
    return "\n".join(lines)


# --- audio and files --------------------------------------------------------------------------


def _b64(data: str) -> bytes:
    if data.startswith("data:"):
        data = data.partition(",")[2]
    try:
        return base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError):
        return b""


def _wav_seconds(raw: bytes) -> float | None:
    if len(raw) < 12 or raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        return None
    i, byte_rate = 12, 0
    while i + 8 <= len(raw):
        chunk, size = raw[i : i + 4], struct.unpack("<I", raw[i + 4 : i + 8])[0]
        if chunk == b"fmt " and i + 20 <= len(raw):
            byte_rate = struct.unpack("<I", raw[i + 16 : i + 20])[0]
        elif chunk == b"data":
            if byte_rate <= 0:
                return None
            available = len(raw) - i - 8
            return float(min(size, available) if size else available) / byte_rate
        i += 8 + size + (size & 1)
    return None


_MP3_KBPS = {
    (3, 1): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),  # MPEG1 L3
    (3, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),  # MPEG1 L2
    (3, 3): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),  # MPEG1 L1
    (2, 1): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),  # MPEG2/2.5 L2, L3
    (2, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (2, 3): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
}


def _mp3_seconds(raw: bytes) -> float | None:
    """Duration from the first frame's bitrate (exact for constant bitrate files)."""
    i = 0
    if raw[:3] == b"ID3" and len(raw) >= 10:
        size = (raw[6] << 21) | (raw[7] << 14) | (raw[8] << 7) | raw[9]
        i = 10 + size
    end = min(len(raw) - 4, i + 64 * 1024)
    while i < end:
        if raw[i] == 0xFF and raw[i + 1] & 0xE0 == 0xE0:
            version = (raw[i + 1] >> 3) & 3  # 3 = MPEG1, 2 = MPEG2, 0 = MPEG2.5
            layer = (raw[i + 1] >> 1) & 3  # 1 = L3, 2 = L2, 3 = L1
            index = raw[i + 2] >> 4
            table = _MP3_KBPS.get((3 if version == 3 else 2, layer))
            if version != 1 and table is not None and 0 < index < 15:
                return (len(raw) - i) * 8 / (table[index] * 1000)
        i += 1
    return None


def _audio_tokens(spec: Any) -> int:
    """Input audio (estimate): duration from the WAV or MP3 header at 10 tokens per second."""
    if not isinstance(spec, Mapping) or not isinstance(spec.get("data"), str):
        return 0
    raw = _b64(spec["data"])
    if not raw:
        return 0
    seconds = _wav_seconds(raw) if spec.get("format") != "mp3" else None
    if seconds is None:
        seconds = _mp3_seconds(raw)
    if seconds is None:
        seconds = len(raw) / _AUDIO_FALLBACK_BYTES_PER_SECOND
    return math.ceil(seconds * AUDIO_TOKENS_PER_SECOND)


def _pdf_pages(file_data: str) -> int:
    raw = _b64(file_data)
    pages = len(_PDF_PAGE_RE.findall(raw))
    if pages:
        return pages
    return max(1, math.ceil(len(raw) / _PDF_FALLBACK_BYTES_PER_PAGE))


# --- the one-call API -------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _counter(model: str) -> TokenCounter:
    return TokenCounter(model)


def count_tokens(
    messages: Iterable[Any],
    model: str,
    tools: Sequence[Mapping[str, Any]] | None = None,
    *,
    tool_choice: Any = None,
    resolve_tool_calls: bool = True,
) -> int:
    """What the API bills as ``usage.prompt_tokens`` for this request.

    ``messages`` are chat message dicts (anything else goes through
    ``chatledger.messages.to_api_dict``); ``tools`` is the Chat Completions ``tools`` list (legacy
    ``functions`` entries are accepted too); ``tool_choice`` also takes ``function_call`` values.
    Tool results are matched to their calls by ``tool_call_id``; ``resolve_tool_calls=False``
    counts each message alone (see :meth:`TokenCounter.count`).
    """
    return _counter(model).count(
        messages, tools, tool_choice=tool_choice, resolve_tool_calls=resolve_tool_calls
    )
