"""Chat messages: the rules the API enforces, checked before anything is stored or sent.

A message travels as a plain dict, exactly as ``client.chat.completions.create(messages=...)``
accepts it. Input may also be an SDK response object (``ChatCompletionMessage``) or a
:class:`Message`; both are turned into that dict. Validation collects every problem with its
index and field path instead of stopping at the first, so one error tells the caller all there
is to fix.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, model_validator

from chatledger.errors import InvalidMessageError, Problem

__all__ = [
    "ROLES",
    "Message",
    "Role",
    "ToolCallState",
    "to_api_dict",
    "validate_message",
    "validate_messages",
]

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]
ROLES: tuple[str, ...] = ("system", "developer", "user", "assistant", "tool", "function")

# The pattern the API enforces on ``messages[i].name`` (it answers 400 otherwise), max 64.
_NAME_RE = re.compile(r"[^\s<|\\/>]+")
# The pattern the API enforces on function names, in tool definitions and in tool_calls.
_FUNCTION_NAME_RE = re.compile(r"[a-zA-Z0-9_-]+")
_MAX_NAME = 64

_ALLOWED_KEYS: dict[str, frozenset[str]] = {
    "system": frozenset({"role", "content", "name"}),
    "developer": frozenset({"role", "content", "name"}),
    "user": frozenset({"role", "content", "name"}),
    "assistant": frozenset(
        {"role", "content", "name", "tool_calls", "refusal", "function_call", "audio"}
    ),
    "tool": frozenset({"role", "content", "tool_call_id"}),
    "function": frozenset({"role", "content", "name"}),
}
_PART_TYPES: dict[str, tuple[str, ...]] = {
    "system": ("text",),
    "developer": ("text",),
    "user": ("text", "image_url", "input_audio", "file"),
    "assistant": ("text", "refusal"),
    "tool": ("text",),
    "function": (),
}
_PLAIN_ROLES = frozenset({"system", "developer", "user", "assistant"})
_IMAGE_DETAILS = ("auto", "low", "high")
_AUDIO_FORMATS = ("wav", "mp3")


def _text_problem(value: object) -> str | None:
    """Why a value is not text the API (and every database) can carry, or None if it is."""
    if not isinstance(value, str):
        return f"must be a string, got {type(value).__name__}"
    if "\x00" in value:
        return "must not contain NUL characters (\\u0000)"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode (it contains a lone surrogate)"
    return None


class _Checker:
    """Collects the problems of one message while copying it into canonical form."""

    __slots__ = ("index", "problems")

    def __init__(self, index: int | None, problems: list[Problem]) -> None:
        self.index = index
        self.problems = problems

    def add(self, path: str, rule: str) -> None:
        self.problems.append(Problem(self.index, path, rule))

    def text(self, value: object, path: str) -> str | None:
        why = _text_problem(value)
        if why is not None:
            self.add(path, why)
            return None
        return cast(str, value)

    def nonempty_text(self, value: object, path: str) -> str | None:
        s = self.text(value, path)
        if s is not None and not s:
            self.add(path, "must not be empty")
            return None
        return s

    def obj(
        self, value: object, path: str, required: Sequence[str], optional: Sequence[str] = ()
    ) -> dict[str, Any] | None:
        """Check an object's shape: a mapping with the required keys and no others."""
        if not isinstance(value, Mapping):
            self.add(path, f"must be an object, got {type(value).__name__}")
            return None
        out = {k: v for k, v in value.items() if v is not None}
        for key in out:
            if key not in required and key not in optional:
                allowed = ", ".join(sorted([*required, *optional]))
                self.add(f"{path}.{key}", f"is not a known field (allowed: {allowed})")
        for key in required:
            if key not in out:
                self.add(f"{path}.{key}", "is required")
        return out


def _check_part(c: _Checker, part: object, path: str, role: str) -> dict[str, Any] | None:
    if not isinstance(part, Mapping):
        c.add(path, f"must be a content part object, got {type(part).__name__}")
        return None
    ptype = part.get("type")
    allowed = _PART_TYPES[role]
    if ptype not in allowed:
        c.add(f"{path}.type", f"must be one of {', '.join(allowed)} for a {role} message")
        return None
    if ptype == "text":
        out = c.obj(part, path, ("type", "text"))
        if out is not None and "text" in out:
            c.text(out["text"], f"{path}.text")
        return out
    if ptype == "refusal":
        out = c.obj(part, path, ("type", "refusal"))
        if out is not None and "refusal" in out:
            c.text(out["refusal"], f"{path}.refusal")
        return out
    if ptype == "image_url":
        out = c.obj(part, path, ("type", "image_url"))
        if out is None or "image_url" not in out:
            return out
        img = c.obj(out["image_url"], f"{path}.image_url", ("url",), ("detail",))
        if img is None:
            return None
        if "url" in img:
            url = c.nonempty_text(img["url"], f"{path}.image_url.url")
            if url is not None and not url.startswith(("http://", "https://", "data:image/")):
                c.add(f"{path}.image_url.url", "must be an http(s) URL or a data:image/ URL")
        if "detail" in img and img["detail"] not in _IMAGE_DETAILS:
            c.add(f"{path}.image_url.detail", "must be one of auto, low, high")
        out["image_url"] = img
        return out
    if ptype == "input_audio":
        out = c.obj(part, path, ("type", "input_audio"))
        if out is None or "input_audio" not in out:
            return out
        audio = c.obj(out["input_audio"], f"{path}.input_audio", ("data", "format"))
        if audio is None:
            return None
        if "data" in audio:
            c.nonempty_text(audio["data"], f"{path}.input_audio.data")
        if "format" in audio and audio["format"] not in _AUDIO_FORMATS:
            c.add(f"{path}.input_audio.format", "must be one of wav, mp3")
        out["input_audio"] = audio
        return out
    # file
    out = c.obj(part, path, ("type", "file"))
    if out is None or "file" not in out:
        return out
    f = c.obj(out["file"], f"{path}.file", (), ("file_data", "file_id", "filename"))
    if f is None:
        return None
    for key in ("file_data", "file_id", "filename"):
        if key in f:
            c.nonempty_text(f[key], f"{path}.file.{key}")
    if "file_data" not in f and "file_id" not in f:
        c.add(f"{path}.file", "needs file_data or file_id")
    out["file"] = f
    return out


def _check_content(c: _Checker, content: object, role: str) -> object:
    if isinstance(content, str):
        c.text(content, "content")
        return content
    if isinstance(content, (list, tuple)):
        if not content:
            c.add("content", "must not be an empty list of parts")
            return []
        if not _PART_TYPES[role]:
            c.add("content", f"must be a string for a {role} message")
            return list(content)
        return [_check_part(c, p, f"content[{i}]", role) for i, p in enumerate(content)]
    c.add("content", f"must be a string or a list of content parts, got {type(content).__name__}")
    return content


def _check_function(c: _Checker, fn: object, path: str) -> dict[str, Any] | None:
    out = c.obj(fn, path, ("name", "arguments"))
    if out is None:
        return None
    if "name" in out:
        name = c.nonempty_text(out["name"], f"{path}.name")
        if name is not None and not _FUNCTION_NAME_RE.fullmatch(name):
            c.add(f"{path}.name", "must match ^[a-zA-Z0-9_-]+$ (letters, digits, _ and -)")
    if "arguments" in out:
        args = c.text(out["arguments"], f"{path}.arguments")
        if args is not None:
            try:
                json.loads(args)
            except ValueError:
                c.add(f"{path}.arguments", "must be a JSON string (as the model produced it)")
    return out


def _check_tool_calls(c: _Checker, calls: object) -> list[Any]:
    if not isinstance(calls, (list, tuple)):
        c.add("tool_calls", f"must be a list, got {type(calls).__name__}")
        return []
    if not calls:
        c.add("tool_calls", "must not be empty (leave it out instead)")
        return []
    out: list[Any] = []
    seen: set[str] = set()
    for i, call in enumerate(calls):
        path = f"tool_calls[{i}]"
        kind = call.get("type") if isinstance(call, Mapping) else None
        if kind == "custom":
            tc = c.obj(call, path, ("id", "type", "custom"))
            if tc is not None and "custom" in tc:
                cu = c.obj(tc["custom"], f"{path}.custom", ("name", "input"))
                if cu is not None:
                    for key in ("name", "input"):
                        if key in cu:
                            c.text(cu[key], f"{path}.custom.{key}")
                    tc["custom"] = cu
        else:
            tc = c.obj(call, path, ("id", "type", "function"))
            if tc is not None and "type" in tc and kind != "function":
                c.add(f"{path}.type", "must be 'function' or 'custom'")
            if tc is not None and "function" in tc:
                tc["function"] = _check_function(c, tc["function"], f"{path}.function")
        if tc is not None and "id" in tc:
            cid = c.nonempty_text(tc["id"], f"{path}.id")
            if cid is not None:
                if cid in seen:
                    c.add(f"{path}.id", f"duplicates tool call id {cid!r} in the same message")
                seen.add(cid)
        out.append(tc)
    return out


def _check(c: _Checker, raw: Mapping[str, Any]) -> dict[str, Any] | None:
    role = raw.get("role")
    if role not in _ALLOWED_KEYS:
        if role is None:
            c.add("role", "is required")
        else:
            c.add("role", f"must be one of {', '.join(ROLES)}, got {role!r}")
        return None
    allowed = _ALLOWED_KEYS[role]
    msg: dict[str, Any] = {}
    for key, value in raw.items():
        if value is None:
            continue  # the API treats null as absent; we never emit None
        if key not in allowed:
            c.add(
                key, f"is not allowed on a {role} message (allowed: {', '.join(sorted(allowed))})"
            )
            continue
        msg[key] = value

    if "name" in msg:
        name = c.nonempty_text(msg["name"], "name")
        if name is not None and (len(name) > _MAX_NAME or not _NAME_RE.fullmatch(name)):
            c.add("name", "must be 1-64 characters with no whitespace and none of < | \\ / >")
    elif role == "function":
        c.add("name", "is required on a function message")

    if role == "assistant":
        if "tool_calls" in msg:
            msg["tool_calls"] = _check_tool_calls(c, msg["tool_calls"])
        if "function_call" in msg:
            msg["function_call"] = _check_function(c, msg["function_call"], "function_call")
        if "refusal" in msg:
            c.text(msg["refusal"], "refusal")
        if "audio" in msg:
            audio = c.obj(msg["audio"], "audio", ("id",))
            if audio is not None and "id" in audio:
                c.nonempty_text(audio["id"], "audio.id")
            msg["audio"] = audio
        if "content" not in msg and not (
            {"tool_calls", "function_call", "audio", "refusal"} & set(msg)
        ):
            c.add(
                "content", "is required unless tool_calls, function_call, audio or refusal is set"
            )
    elif "content" not in msg:
        c.add("content", f"is required on a {role} message")

    if role == "tool":
        if "tool_call_id" in msg:
            c.nonempty_text(msg["tool_call_id"], "tool_call_id")
        else:
            c.add("tool_call_id", "is required on a tool message")

    if "content" in msg:
        msg["content"] = _check_content(c, msg["content"], role)
    return msg


def to_api_dict(message: object) -> dict[str, Any]:
    """Turn a dict, a :class:`Message` or an SDK message object into a plain API dict.

    It converts only; :func:`validate_message` checks. ``None`` fields are dropped, since the
    API treats them as absent and some servers reject them.
    """
    if isinstance(message, Message):
        return message.to_dict()
    if isinstance(message, Mapping):
        return {k: v for k, v in message.items() if v is not None}
    if isinstance(message, BaseModel):
        return _from_sdk(message)
    raise InvalidMessageError(
        [Problem(None, "", f"must be a dict or a message object, got {type(message).__name__}")]
    )


def _from_sdk(obj: BaseModel) -> dict[str, Any]:
    """An SDK response object (``ChatCompletionMessage``) as the request param it stands for.

    Response-only fields (``annotations``, audio transcripts) are dropped: the API does not
    accept them back; a response's audio is referred to by id.
    """
    data = obj.model_dump(mode="json", exclude_none=True)
    role = data.get("role")
    if role == "assistant":
        out: dict[str, Any] = {"role": "assistant"}
        for key in ("content", "refusal", "name", "tool_calls", "function_call"):
            if key in data:
                out[key] = data[key]
        if isinstance(data.get("audio"), Mapping) and "id" in data["audio"]:
            out["audio"] = {"id": data["audio"]["id"]}
        if "tool_calls" in out:
            out["tool_calls"] = [_strip_call(tc) for tc in out["tool_calls"]]
        return out
    return data


def _strip_call(tc: Any) -> Any:
    if not isinstance(tc, Mapping):
        return tc
    out = {k: v for k, v in tc.items() if k in ("id", "type", "function", "custom")}
    if isinstance(out.get("function"), Mapping):
        out["function"] = {k: v for k, v in out["function"].items() if k in ("name", "arguments")}
    return out


def validate_message(message: object, *, index: int | None = None) -> dict[str, Any]:
    """Check one message on its own (not its place in a conversation); return its API dict."""
    problems: list[Problem] = []
    msg = _normalize(message, index, problems)
    if problems or msg is None:
        raise InvalidMessageError(problems)
    return msg


def _normalize(
    message: object, index: int | None, problems: list[Problem]
) -> dict[str, Any] | None:
    if type(message) is dict and len(message) == 2:
        # the common {"role", "content": str} message, checked without the general walk
        role, content = message.get("role"), message.get("content")
        if type(content) is str and role in _PLAIN_ROLES and _text_problem(content) is None:
            return {"role": role, "content": content}
    try:
        raw = to_api_dict(message)
    except InvalidMessageError as exc:
        problems.extend(Problem(index, p.field, p.rule) for p in exc.problems)
        return None
    return _check(_Checker(index, problems), raw)


@dataclass
class ToolCallState:
    """The tool calls still waiting for results after the newest assistant ``tool_calls``.

    A conversation keeps this between writes so that each append is checked against what came
    before without reading the history: a tool message must answer one of ``calls``, and no
    other message may come while some are unanswered.
    """

    calls: list[str] = field(default_factory=list)
    answered: list[str] = field(default_factory=list)
    #: where the assistant message is: its index in the array being checked, or None if stored
    assistant_index: int | None = None
    #: its seq when it is a stored message
    assistant_seq: int | None = None
    #: the called functions' names, parallel to ``calls`` (a tool result is counted under it)
    names: list[str] = field(default_factory=list)

    @property
    def pending(self) -> list[str]:
        done = set(self.answered)
        return [c for c in self.calls if c not in done]

    def to_json(self) -> str | None:
        if not self.calls:
            return None
        return json.dumps(
            {
                "calls": self.calls,
                "names": self.names,
                "answered": self.answered,
                "seq": self.assistant_seq,
            },
            separators=(",", ":"),
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, text: str | None) -> ToolCallState:
        if not text:
            return cls()
        data = json.loads(text)
        return cls(
            list(data["calls"]),
            list(data["answered"]),
            None,
            data.get("seq"),
            list(data.get("names") or ()),
        )

    def assistant_stub(self) -> dict[str, Any] | None:
        """The open assistant message as far as counting its tool results needs it."""
        if not self.calls:
            return None
        return {
            "role": "assistant",
            "tool_calls": [
                {"id": cid, "type": "function", "function": {"name": name, "arguments": "{}"}}
                for cid, name in zip(self.calls, self.names or [""] * len(self.calls), strict=False)
            ],
        }

    def _origin(self) -> str:
        if self.assistant_index is not None:
            return f"messages[{self.assistant_index}]"
        if self.assistant_seq is not None:
            return f"the stored assistant message seq {self.assistant_seq}"
        return "the assistant message"

    def feed(
        self,
        msg: Mapping[str, Any],
        index: int | None,
        problems: list[Problem],
        seq: int | None = None,
    ) -> None:
        """Advance over one message, reporting where it breaks the pairing rules."""
        role = msg.get("role")
        if role == "tool":
            cid = msg.get("tool_call_id")
            if not isinstance(cid, str):
                return
            if not self.calls:
                problems.append(
                    Problem(
                        index,
                        "tool_call_id",
                        f"answers no tool call: a tool message must follow an assistant message "
                        f"whose tool_calls include {cid!r}",
                    )
                )
            elif cid in self.answered:
                problems.append(
                    Problem(index, "tool_call_id", f"duplicates the result for tool call {cid!r}")
                )
            elif cid not in self.calls:
                expected = ", ".join(map(repr, self.pending or self.calls))
                problems.append(
                    Problem(
                        index,
                        "tool_call_id",
                        f"{cid!r} matches no tool_calls id of {self._origin()} "
                        f"(expected one of {expected})",
                    )
                )
            else:
                self.answered.append(cid)
            return
        missing = self.pending
        if missing:
            ids = ", ".join(map(repr, missing))
            if self.assistant_index is not None:
                problems.append(
                    Problem(
                        self.assistant_index,
                        "tool_calls",
                        f"tool call(s) {ids} have no tool result before messages[{index}] "
                        "(every tool call must be answered before the next non-tool message)",
                    )
                )
            else:
                problems.append(
                    Problem(
                        index,
                        "role",
                        f"a {role} message cannot come while tool call(s) {ids} of "
                        f"{self._origin()} have no result: append their tool messages first",
                    )
                )
        self.calls, self.answered, self.names = [], [], []
        self.assistant_index, self.assistant_seq = None, None
        calls = msg.get("tool_calls") if role == "assistant" else None
        if calls:
            for tc in calls:
                if isinstance(tc, Mapping) and isinstance(tc.get("id"), str):
                    self.calls.append(tc["id"])
                    self.names.append(_call_name(tc))
            self.assistant_index, self.assistant_seq = index, seq

    def finish(self, problems: list[Problem]) -> None:
        """Report calls left unanswered at the end of a request."""
        missing = self.pending
        if missing:
            problems.append(
                Problem(
                    self.assistant_index,
                    "tool_calls",
                    f"tool call(s) {', '.join(map(repr, missing))} have no tool result "
                    "(every tool call must be answered before the next non-tool message)",
                )
            )


def _call_name(tc: Mapping[str, Any]) -> str:
    body = tc.get("function") if tc.get("type") != "custom" else tc.get("custom")
    name = body.get("name") if isinstance(body, Mapping) else None
    return name if isinstance(name, str) else ""


def validate_messages(
    messages: Iterable[object], *, allow_pending_tool_calls: bool = False
) -> list[dict[str, Any]]:
    """Check a whole ``messages`` array against the rules the API answers with HTTP 400.

    Returns the messages as plain API dicts. Raises :class:`InvalidMessageError` listing every
    problem by index and field. ``allow_pending_tool_calls`` accepts an array that ends while
    tool results are still due, as a stored conversation may between turns.
    """
    problems: list[Problem] = []
    out: list[dict[str, Any]] = []
    state = ToolCallState()
    for i, m in enumerate(messages):
        before = len(problems)
        msg = _normalize(m, i, problems)
        if msg is None:
            continue
        out.append(msg)
        if len(problems) == before:
            state.feed(msg, i, problems)
    if not out and not problems:
        problems.append(Problem(None, "messages", "must contain at least one message"))
    if not allow_pending_tool_calls:
        state.finish(problems)
    if problems:
        raise InvalidMessageError(problems)
    return out


class Message(BaseModel):
    """A chat message as a typed, immutable object; ``to_dict()`` gives the API form.

    The same rules as :func:`validate_message` apply on construction, so a ``Message`` that
    exists is one the API accepts on its own.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Role
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None
    function_call: dict[str, Any] | None = None
    audio: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _api_rules(self) -> Message:
        problems: list[Problem] = []
        _check(_Checker(None, problems), self.model_dump(exclude_none=True))
        if problems:
            raise ValueError("; ".join(str(p) for p in problems))
        return self

    def to_dict(self) -> dict[str, Any]:
        """The message as the API accepts it: a plain dict without ``None`` fields."""
        return self.model_dump(exclude_none=True)

    @classmethod
    def from_api(cls, message: object) -> Message:
        """Build from a dict or an SDK object, raising :class:`InvalidMessageError` if bad."""
        return cls.model_validate(validate_message(message))

    @classmethod
    def system(cls, content: str) -> Message:
        return cls(role="system", content=content)

    @classmethod
    def developer(cls, content: str) -> Message:
        return cls(role="developer", content=content)

    @classmethod
    def user(cls, content: str | list[dict[str, Any]], *, name: str | None = None) -> Message:
        return cls(role="user", content=content, name=name)

    @classmethod
    def assistant(
        cls, content: str | None = None, *, tool_calls: list[dict[str, Any]] | None = None
    ) -> Message:
        return cls(role="assistant", content=content, tool_calls=tool_calls)

    @classmethod
    def tool(cls, tool_call_id: str, content: str) -> Message:
        return cls(role="tool", tool_call_id=tool_call_id, content=content)
