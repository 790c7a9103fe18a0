"""Prompt-token accounting as the Chat Completions API bills it (``usage.prompt_tokens``).

Every rule was fitted to recorded API figures (``tests/token_corpus``); ``docs/tokens.md`` lists
each with its evidence and says what is exact and what an estimate (estimates err high).
Per-family numbers live in ``chatledger.token_rules``, tool definitions are rendered by
``chatledger.tool_rendering``, images/audio/files priced by ``chatledger.media``. Counting never
touches the network (``chatledger.encodings`` loads the bundled BPE files), uses
``encode_ordinary`` (special-token look-alikes count as the plain text the API sees) and, for
any ``str`` input, returns a count or raises a ``ChatLedgerError``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar

import tiktoken

from chatledger import media
from chatledger.encodings import (
    LONG_TEXT,
    chunked_len,
    encoding_name_for_model,
    has_long_whitespace,
    load_encoding,
    normalize_model,
)
from chatledger.errors import InvalidArgumentError
from chatledger.token_rules import rules_for
from chatledger.tool_rendering import CHAT, has_nested_schema, render_tools

__all__ = [
    "TokenCounter",
    "count_tokens",
    "encoding_for_model",
    "request_features",
    "system_text",
]

_SYSTEM_ROLES = frozenset({"system", "developer"})
_RESULT_ROLES = frozenset({"tool", "function"})
_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_FUNCTION_ROLE_ADJUST = -2  # function / tool result messages
_UNKNOWN_TOOL_NAME = 8  # estimate: a tool result whose call is not in view
_TOOLS_SYSTEM_MERGE = -4  # the wrapper joins a leading system message instead
_RESPONSE_FORMAT_MARGIN = 8  # estimate: measured 8 under to 363 over before the margin
_PARALLEL_RESULT_MARGIN = 16  # estimate: per result of a parallel call (one exchange was 33 under)

Encode = Callable[[str], list[int]]


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
    what the API bills). ``system`` is the text of a leading system/developer message (tool
    definitions join it).
    """

    __slots__ = (
        "_encode",
        "_encoding",
        "_fast",
        "_image_rule",
        "_model",
        "_norm",
        "_profile",
        "_role_tokens",
        "_rules",
    )

    def __init__(self, model: str) -> None:
        self._model = model
        self._norm = normalize_model(model)
        name = encoding_name_for_model(model, stacklevel=3)
        self._encoding = load_encoding(name)
        self._encode: Encode = self._encoding.encode_ordinary
        # The Rust core skips a Python frame; it raises on lone surrogates, and every caller
        # then retries with the wrapper above, which repairs them.
        core = getattr(self._encoding, "_core_bpe", None)
        self._fast: Encode = getattr(core, "encode_ordinary", self._encode)
        self._rules = rules_for(self._norm, name)
        self._image_rule = media.image_rule_for_model(self._norm)
        rules = self._rules
        self._role_tokens = {r: rules.per_message + len(self._encode(r)) for r in _ROLES}
        self._role_tokens["assistant"] += rules.assistant_extra
        self._profile = (
            f"{name}/m{rules.per_message}n{rules.per_name:+d}/{self._image_rule.key}"
            f"/{rules.key}/{rules.style.key}"
        )

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
        """Equal profiles give identical counts; it changes whenever a counting rule of the
        model changes, so stored counts made under another profile are redone."""
        return self._profile

    @property
    def priming(self) -> int:
        """Tokens every request pays once for the reply priming (``<|start|>assistant``)."""
        return self._rules.priming

    # --- counting ---------------------------------------------------------------------------

    def text(self, s: str) -> int:
        """Tokens of plain text; special-token look-alikes count as ordinary text."""
        return self._n(s, self._encode)

    def _n(self, s: str, encode: Encode) -> int:
        """``len(encode(s))``, safe for any length (``chatledger.encodings.chunked_len``)."""
        if len(s) < LONG_TEXT:
            return len(encode(s))
        return chunked_len(s, encode)

    def message(self, msg: Mapping[str, Any], *, answering: Mapping[str, Any] | None = None) -> int:
        """One message's whole contribution to a request, per-message overhead included.

        For a ``tool`` result pass ``answering``, the assistant message whose ``tool_calls``
        holds its ``tool_call_id``: the API renders the result under the called function's
        name, which the tool message itself does not carry. Without it a ``name`` key on the
        message is used, else an estimate of ``_UNKNOWN_TOOL_NAME`` (8) tokens.
        """
        name = _answered_name(msg, answering)
        parallel = answering is not None and _is_parallel(answering)
        return _guard(self._message_safe, msg, name, parallel)

    def _message_safe(self, msg: Mapping[str, Any], name: str | None, parallel: bool) -> int:
        try:
            return self._message(msg, name, parallel, self._fast)
        except UnicodeEncodeError:  # lone surrogates: tiktoken's wrapper repairs them
            return self._message(msg, name, parallel, self._encode)

    def _message(
        self, msg: Mapping[str, Any], called: str | None, parallel: bool, encode: Encode
    ) -> int:
        role = msg.get("role")
        content = msg.get("content")
        name = msg.get("name")
        n = self._role_tokens.get(role) if role.__class__ is str else None
        if n is None:
            n = self._rules.per_message + self._n(str(role), encode)
        if content.__class__ is str:
            n += len(encode(content)) if len(content) < LONG_TEXT else chunked_len(content, encode)
        elif content is not None:
            n += self._content_parts(content, encode)
        if name is not None:
            if name and isinstance(name, str):
                n += self._n(name, encode) + self._rules.per_name
            if len(msg) == 3 and content is not None and role not in _RESULT_ROLES:
                return n  # {"role", "content", "name"}
        elif len(msg) == 2 and content is not None and role not in _RESULT_ROLES:
            return n  # {"role", "content"}: the hot path ends here
        refusal = msg.get("refusal")
        if isinstance(refusal, str) and refusal:
            n += self._n(refusal, encode)
        call = msg.get("function_call")
        if isinstance(call, Mapping):
            n += self._call(call.get("name"), call.get("arguments"), encode)
        calls = msg.get("tool_calls")
        if calls:
            n += self._tool_calls(calls, encode)
            if self._rules.split_text_and_calls and content:  # text and calls: two messages
                n += self._role_tokens["assistant"]
        if role == "tool":
            n += _FUNCTION_ROLE_ADJUST
            if not (name and isinstance(name, str)):  # the API accepts `name`; counted above
                if called:
                    n += self._n(called, encode) + self._rules.per_name
                else:
                    n += _UNKNOWN_TOOL_NAME + self._rules.per_name
            if parallel:
                # Results of parallel calls: JSON-escaped, plus a margin (estimate, errs high).
                n += _PARALLEL_RESULT_MARGIN
                if isinstance(content, str):
                    n += self._n(json.dumps(content), encode) - self._n(content, encode)
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
        return _guard(self._each_safe, items, resolve_tool_calls)

    def _each_safe(self, items: list[Mapping[str, Any]], resolve: bool) -> list[int]:
        try:
            return self._each(items, self._fast, resolve)
        except UnicodeEncodeError:
            return self._each(items, self._encode, resolve)

    def _each(self, items: list[Mapping[str, Any]], encode: Encode, resolve: bool) -> list[int]:
        """Linear in the number of messages and calls: each call id is indexed once."""
        out: list[int] = []
        append = out.append
        one = self._message
        calls: dict[str, tuple[str, bool]] = {}  # call id -> (function name, parallel)
        for msg in items:
            if not resolve or (len(msg) == 2 and "content" in msg):
                append(one(msg, None, False, encode))
                continue
            called: str | None = None
            parallel = False
            if msg.get("role") == "tool" and calls:
                call_id = msg.get("tool_call_id")
                if isinstance(call_id, str) and call_id in calls:
                    called, parallel = calls[call_id]
            append(one(msg, called, parallel, encode))
            tool_calls = msg.get("tool_calls")
            if tool_calls and isinstance(tool_calls, Sequence):
                several = len(tool_calls) > 1
                mine: dict[str, tuple[str, bool]] = {}  # first of a repeated id, as message()
                for tc in tool_calls:
                    if isinstance(tc, Mapping) and isinstance(tc.get("id"), str):
                        mine.setdefault(tc["id"], (_call_parts(tc)[0], several))
                calls.update(mine)
        return out

    def tools(
        self,
        tools: Sequence[Mapping[str, Any]] | None,
        *,
        system: str | None = None,
        tool_choice: Any = None,
    ) -> int:
        """Tokens the tool definitions add to a request (0 for None or empty).

        ``system`` is the text of the request's leading system (or developer) message, or None
        when it does not start with one: the definitions are appended to that message (saving
        its overhead, and adding a newline to its text) rather than sent as a message of their
        own. ``tool_choice`` accepts the Chat Completions values and the legacy
        ``function_call`` ones.
        """
        if not tools:
            return 0
        return _guard(self._tools, tools, system, tool_choice)

    def _tools(self, tools: Sequence[Any], system: str | None, tool_choice: Any) -> int:
        rules = self._rules
        block = render_tools(tools, rules.style)
        n = self.text(block.text) + rules.tools_overhead + block.adjust
        if block.margin:
            n += self.text(block.margin)
        if system is not None and rules.merge:
            n += _TOOLS_SYSTEM_MERGE + self.text(system + "\n") - self.text(system)
        if tool_choice is None or tool_choice == "auto":
            return n
        if tool_choice == "none":
            return n + rules.choice_none
        if tool_choice == "required":
            return n + rules.choice_required
        if isinstance(tool_choice, Mapping) and rules.choice_forced is not None:
            legacy = isinstance(tool_choice.get("name"), str)  # function_call={"name": ...}
            forced = _forced_name(tool_choice)
            if forced:
                n += (4 if legacy else rules.choice_forced) + self.text(forced)
        return n

    def count(
        self,
        messages: Iterable[Any],
        tools: Sequence[Mapping[str, Any]] | None = None,
        *,
        tool_choice: Any = None,
        resolve_tool_calls: bool = True,
        response_format: Any = None,
    ) -> int:
        """Prompt tokens of a request with these messages and tools.

        Each tool result is counted under the name of the function it answers, found in the
        earlier assistant ``tool_calls`` (exact). ``resolve_tool_calls=False`` counts every
        message alone (a tool result's name then estimated), so the total is the plain sum of
        :meth:`message` over the messages. ``response_format`` adds :meth:`response_format`.
        """
        items = [m if isinstance(m, Mapping) else _as_mapping(m) for m in messages]
        total = sum(_guard(self._each_safe, items, resolve_tool_calls)) + self._rules.priming
        if tools:
            total += self.tools(tools, system=system_text(items), tool_choice=tool_choice)
        if response_format is not None:
            total += self.response_format(response_format)
        return total

    def response_format(self, response_format: Any) -> int:
        """Tokens a ``response_format`` adds: 0 for ``text`` and ``json_object`` (exact);
        for ``json_schema`` an estimate that errs high: the ``# Response Formats`` section
        with the schema as compact JSON, plus a margin."""
        if not isinstance(response_format, Mapping):
            return 0
        spec = response_format.get("json_schema")
        if response_format.get("type") != "json_schema" or not isinstance(spec, Mapping):
            return 0
        schema = spec.get("schema")
        desc = spec.get("description")
        if not desc and isinstance(schema, Mapping):
            desc = schema.get("description")
        head = f"# Response Formats\n\n## {spec.get('name', '')}\n\n"
        if isinstance(desc, str) and desc:
            head += f"// {desc}\n"
        body = json.dumps(schema, ensure_ascii=False, default=str, separators=(",", ":"))
        return self.text(head + body) + _RESPONSE_FORMAT_MARGIN

    # --- parts ------------------------------------------------------------------------------

    def _content_parts(self, content: Any, encode: Encode) -> int:
        if not isinstance(content, Sequence) or isinstance(content, (bytes, bytearray)):
            return self._n(str(content), encode)
        n = 0
        for part in content:
            if isinstance(part, str):
                n += self._n(part, encode)
                continue
            if not isinstance(part, Mapping):
                continue
            kind = part.get("type")
            if kind in ("text", "refusal"):
                text = part.get(kind)
                if isinstance(text, str):
                    n += self._n(text, encode)
            elif kind == "image_url":
                n += self._image(part.get("image_url"))
            elif kind == "input_audio":
                n += media.audio_tokens(part.get("input_audio"))
            elif kind == "file":
                n += media.file_tokens(part.get("file"), self._image_rule)
            else:  # unknown part: its JSON, an estimate
                n += self._n(json.dumps(part, ensure_ascii=False, default=str), encode)
        return n

    def _image(self, spec: Any) -> int:
        url: Any = spec
        detail: Any = "auto"
        if isinstance(spec, Mapping):
            url, detail = spec.get("url"), spec.get("detail", "auto")
        return media.image_tokens(
            url if isinstance(url, str) else "",
            detail if isinstance(detail, str) else "auto",
            self._image_rule,
        )

    def _call(self, name: Any, arguments: Any, encode: Encode) -> int:
        n = 3 + self._rules.call_extra
        if isinstance(name, str) and name:
            n += self._n(name, encode)
        if isinstance(arguments, str) and arguments:
            if self._rules.compact_arguments:
                arguments = _compact(arguments)
            n += self._n(arguments, encode)
        return n

    def _tool_calls(self, calls: Any, encode: Encode) -> int:
        if not isinstance(calls, Sequence):
            return 0
        parsed = [_call_parts(tc) for tc in calls if isinstance(tc, Mapping)]
        if len(parsed) == 1:
            return self._call(*parsed[0], encode)
        if not parsed:
            return 0
        # Parallel calls go through the multi_tool_use.parallel wrapper (estimate, errs high).
        uses = []
        for name, arguments in parsed:
            try:
                params: Any = json.loads(arguments) if isinstance(arguments, str) else arguments
            except ValueError:
                params = arguments
            uses.append({"recipient_name": f"functions.{name}", "parameters": params})
        body = json.dumps({"tool_uses": uses}, ensure_ascii=False, separators=(",", ":"))
        return self._call("multi_tool_use.parallel", body, encode)


# --- module-level helpers ---------------------------------------------------------------------


def _compact(arguments: str) -> str:
    """Arguments as the API re-serialises them: compact JSON (as sent when not JSON)."""
    if arguments[:1] not in ("{", "["):
        return arguments
    try:
        return json.dumps(json.loads(arguments), ensure_ascii=False, separators=(",", ":"))
    except ValueError:
        return arguments


_P = ParamSpec("_P")
_T = TypeVar("_T")


def _guard(fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """Run a count; a tokenizer panic (a BaseException) becomes an InvalidArgumentError."""
    try:
        return fn(*args, **kwargs)
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except (RecursionError, MemoryError) as exc:
        raise InvalidArgumentError("messages", f"cannot be tokenised: {exc!r}") from exc
    except Exception:
        raise
    except BaseException as exc:  # pyo3_runtime.PanicException
        raise InvalidArgumentError("messages", f"cannot be tokenised: {exc!r}") from exc


def _as_mapping(item: Any) -> Mapping[str, Any]:
    if isinstance(item, Mapping):
        return item
    from chatledger.messages import to_api_dict  # lazy: messages imports this module's users

    return to_api_dict(item)


def _is_parallel(assistant: Mapping[str, Any]) -> bool:
    calls = assistant.get("tool_calls")
    return isinstance(calls, Sequence) and len(calls) > 1


def _answered_name(msg: Mapping[str, Any], answering: Mapping[str, Any] | None) -> str | None:
    """The function name a tool result answers, from the assistant message that called it."""
    if answering is None or msg.get("role") != "tool":
        return None
    call_id = msg.get("tool_call_id")
    calls = answering.get("tool_calls")
    if not isinstance(calls, Sequence):
        return None
    for tc in calls:
        if isinstance(tc, Mapping) and tc.get("id") == call_id:
            return _call_parts(tc)[0] or None
    return None


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
    """Text of the leading system or developer message, the one tool definitions join; None
    when the request does not start with one (the definitions then form their own message)."""
    for msg in messages:
        if msg.get("role") not in _SYSTEM_ROLES:
            return None
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


def request_features(
    messages: Iterable[Any],
    tools: Sequence[Mapping[str, Any]] | None = None,
    *,
    tool_choice: Any = None,
) -> frozenset[str]:
    """Which rule families a request exercises, for drift reports (pure; counts nothing).

    Names: ``tools`` (tool definitions given), ``nested_tools`` (an object or array of objects
    inside a tool's parameters), ``tool_choice`` (a ``tool_choice`` other than "auto"),
    ``history_calls`` (an assistant message with tool or function
    calls), ``parallel_calls`` (one with several), ``tool_results`` (``tool``/``function``
    messages), ``images``, ``audio``, ``files``, ``names`` (a ``name`` on any message),
    ``developer`` (a developer message), ``long_text`` (a text counted in chunks),
    ``tool_estimate`` (tool definitions with parts whose cost is estimated: descriptions inside
    array items, schema keywords such as ``format``, custom-tool grammars). A request with none
    of them uses only the exact per-message rules.
    """
    found: set[str] = set()
    for item in messages:
        msg = item if isinstance(item, Mapping) else _as_mapping(item)
        role = msg.get("role")
        if role == "developer":
            found.add("developer")
        if role in _RESULT_ROLES:
            found.add("tool_results")
        if msg.get("name"):
            found.add("names")
        calls = msg.get("tool_calls")
        if calls or msg.get("function_call"):
            found.add("history_calls")
            if isinstance(calls, Sequence) and len(calls) > 1:
                found.add("parallel_calls")
        content = msg.get("content")
        if isinstance(content, str):
            if has_long_whitespace(content):
                found.add("long_text")
        elif isinstance(content, Sequence):
            for part in content:
                kind = part.get("type") if isinstance(part, Mapping) else None
                feature = {"image_url": "images", "input_audio": "audio", "file": "files"}
                if kind in feature:
                    found.add(feature[kind])
    if tool_choice is not None and tool_choice != "auto":
        found.add("tool_choice")
    if tools:
        found.add("tools")
        if any(has_nested_schema(t) for t in tools if isinstance(t, Mapping)):
            found.add("nested_tools")
        if render_tools(tools, CHAT).margin:
            found.add("tool_estimate")
    return frozenset(found)


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
    response_format: Any = None,
) -> int:
    """What the API bills as ``usage.prompt_tokens`` for this request.

    ``messages`` are chat message dicts (anything else goes through
    ``chatledger.messages.to_api_dict``); ``tools`` is the Chat Completions ``tools`` list (legacy
    ``functions`` entries are accepted too); ``tool_choice`` also takes ``function_call`` values.
    Tool results are matched to their calls by ``tool_call_id``; ``resolve_tool_calls=False``
    counts each message alone (see :meth:`TokenCounter.count`); ``response_format`` is the
    request's (a ``json_schema`` one is an estimate, see :meth:`TokenCounter.response_format`).
    """
    return _counter(model).count(
        messages,
        tools,
        tool_choice=tool_choice,
        resolve_tool_calls=resolve_tool_calls,
        response_format=response_format,
    )
