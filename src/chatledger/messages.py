"""Chat messages: the rules the API enforces, checked before anything is stored or sent.

A message travels as a plain dict, exactly as ``client.chat.completions.create(messages=...)``
accepts it. Input may also be an SDK response object (``ChatCompletionMessage``) or a
:class:`Message`; both are turned into that dict. Validation collects every problem with its
index and field path instead of stopping at the first, so one error tells the caller all there
is to fix.

The shape of each role's message (fields, types, literal values) is the openai SDK's own param
TypedDict, validated by pydantic (see :mod:`chatledger.sdk_schema`), so a field the API gains
is accepted with the SDK that knows it. What types cannot say is checked here: name patterns,
JSON arguments, image URL schemes, NUL and lone surrogates, unique tool call ids, what an
assistant message needs. Pairing tool results with calls across messages is
:class:`~chatledger.tool_state.ToolCallState`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

from annotated_types import Len
from openai.types.chat import (
    ChatCompletionAssistantMessageParam,
    ChatCompletionDeveloperMessageParam,
    ChatCompletionFunctionMessageParam,
    ChatCompletionSystemMessageParam,
    ChatCompletionToolMessageParam,
    ChatCompletionUserMessageParam,
)
from openai.types.chat import chat_completion_assistant_message_param as _assistant
from openai.types.chat import chat_completion_content_part_image_param as _image
from openai.types.chat import chat_completion_content_part_input_audio_param as _audio
from openai.types.chat import chat_completion_content_part_param as _part
from openai.types.chat import chat_completion_message_custom_tool_call_param as _custom_call
from openai.types.chat import chat_completion_message_function_tool_call_param as _call
from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints, model_validator
from pydantic_core import PydanticCustomError

from chatledger.errors import InvalidMessageError, Problem
from chatledger.sdk_schema import (
    SdkSchema,
    check_text,
    describe,
    explain,
    path,
    text_problem,
    validate,
)
from chatledger.tool_state import ToolCallState

__all__ = ["ROLES", "Message", "Role", "to_api_dict", "validate_message", "validate_messages"]

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]
ROLES: tuple[str, ...] = ("system", "developer", "user", "assistant", "tool", "function")

# The pattern the API enforces on ``messages[i].name`` (it answers 400 otherwise), max 64.
_NAME = r"^[^\s<|\\/>\x00]{1,64}$"
# The pattern the API enforces on function names, in tool definitions and in tool_calls.
_FUNCTION_NAME = r"^[a-zA-Z0-9_-]+$"
# Ids are short: a regex (run by pydantic-core, no Python call) checks them for NUL cheaply.
_ID = r"^[^\x00]+$"
_PATTERNS = {
    _NAME: "must be 1-64 characters with no whitespace and none of < | \\ / >",
    _FUNCTION_NAME: "must match ^[a-zA-Z0-9_-]+$ (letters, digits, _ and -)",
    _ID: "must be a non-empty string",
}
_PLAIN_ROLES = frozenset({"system", "developer", "user", "assistant"})
_NOUNS = {"content": "content part", "tool_calls": "tool call"}


def _json_text(value: str) -> str:
    """Tool call arguments: the JSON text the model produced, parsed only to check it."""
    check_text(value)
    try:
        json.loads(value)
    except (ValueError, RecursionError):
        why = "must be a JSON string (as the model produced it)"
        raise PydanticCustomError("json", why) from None
    return value


def _url(value: str) -> str:
    check_text(value)
    if not value.startswith(("http://", "https://", "data:image/")):
        raise PydanticCustomError("url", "must be an http(s) URL or a data:image/ URL")
    return value


def _file_source(value: dict[str, Any]) -> dict[str, Any]:
    if "file_data" not in value and "file_id" not in value:
        raise PydanticCustomError("file", "needs file_data or file_id")
    return value


_Name = Annotated[str, StringConstraints(pattern=_NAME)]
_FunctionName = Annotated[str, StringConstraints(pattern=_FUNCTION_NAME)]
_Id = Annotated[str, StringConstraints(pattern=_ID)]
# base64 payloads can be megabytes: memchr in Python beats the regex engine there
_Data = Annotated[str, Len(1), AfterValidator(check_text)]
_Arguments = Annotated[str, AfterValidator(_json_text)]

_BY_ROLE: dict[str, Any] = {
    "system": ChatCompletionSystemMessageParam,
    "developer": ChatCompletionDeveloperMessageParam,
    "user": ChatCompletionUserMessageParam,
    "assistant": ChatCompletionAssistantMessageParam,
    "tool": ChatCompletionToolMessageParam,
    "function": ChatCompletionFunctionMessageParam,
}
# Our rules on the SDK's fields, by (TypedDict, field).
_FIELDS: dict[tuple[Any, str], Any] = {
    **{(td, "name"): _Name for role, td in _BY_ROLE.items() if role != "tool"},
    (ChatCompletionToolMessageParam, "tool_call_id"): _Id,
    (_assistant.Audio, "id"): _Id,
    (_assistant.FunctionCall, "name"): _FunctionName,
    (_assistant.FunctionCall, "arguments"): _Arguments,
    (_call.ChatCompletionMessageFunctionToolCallParam, "id"): _Id,
    (_call.Function, "name"): _FunctionName,
    (_call.Function, "arguments"): _Arguments,
    (_custom_call.ChatCompletionMessageCustomToolCallParam, "id"): _Id,
    (_image.ImageURL, "url"): Annotated[str, Len(1), AfterValidator(_url)],
    (_audio.InputAudio, "data"): _Data,
    (_part.File, "file"): Annotated[_part.FileFile, AfterValidator(_file_source)],
    (_part.FileFile, "file_data"): _Data,
    (_part.FileFile, "file_id"): _Id,
    (_part.FileFile, "filename"): _Id,
}
# Fields the API accepts that the SDK's TypedDicts lack: the official cookbook's
# function-calling examples send the function's name on tool results.
_ADDED: dict[Any, dict[str, Any]] = {ChatCompletionToolMessageParam: {"name": _Name}}


@functools.cache
def _adapters() -> dict[str, Any]:
    """One validator per role, built on first use (building takes tens of milliseconds)."""
    schema = SdkSchema(_FIELDS, _ADDED)
    return {role: schema.adapter(td) for role, td in _BY_ROLE.items()}


def _assistant_rules(msg: Mapping[str, Any], problems: list[Problem], index: int | None) -> None:
    """Rules across an assistant message's fields; they read unvalidated input, so that they
    are reported together with pydantic's errors."""
    if "content" not in msg and not (
        {"tool_calls", "function_call", "audio", "refusal"} & set(msg)
    ):
        problems.append(
            Problem(
                index,
                "content",
                "is required unless tool_calls, function_call, audio or refusal is set",
            )
        )
    calls = msg.get("tool_calls")
    seen: set[str] = set()
    for i, call in enumerate(calls if isinstance(calls, (list, tuple)) else ()):
        cid = call.get("id") if isinstance(call, Mapping) else None
        if isinstance(cid, str) and cid:
            if cid in seen:
                problems.append(
                    Problem(
                        index,
                        f"tool_calls[{i}].id",
                        f"duplicates tool call id {cid!r} in the same message",
                    )
                )
            seen.add(cid)


def _in_order(out: Any, raw: Any) -> Any:
    """``out`` with the keys of every object in ``raw``'s order: what was stored comes back as
    it was sent (pydantic emits its schema's order)."""
    if isinstance(out, dict) and isinstance(raw, Mapping):
        keys = [k for k in raw if k in out] + [k for k in out if k not in raw]
        return {k: _in_order(out[k], raw.get(k)) for k in keys}
    if isinstance(out, list) and isinstance(raw, (list, tuple)) and len(out) == len(raw):
        return [_in_order(o, r) for o, r in zip(out, raw, strict=True)]
    return out


def _check(
    raw: Mapping[str, Any], index: int | None, problems: list[Problem]
) -> dict[str, Any] | None:
    """Validate one message dict (``None`` fields already dropped); None if it has problems."""
    role = raw.get("role")
    adapter = _adapters().get(role) if isinstance(role, str) else None
    if adapter is None or not isinstance(role, str):
        rule = "is required" if role is None else f"must be one of {', '.join(ROLES)}"
        problems.append(
            Problem(index, "role", rule + ("" if role is None else f", got {describe(role)}"))
        )
        return None
    out, errors = validate(adapter, raw)
    own: list[Problem] = []
    if role == "assistant":
        _assistant_rules(raw, own, index)
    if not errors and not own:
        ordered: dict[str, Any] = _in_order(out, raw)  # the caller's key order, at every depth
        return ordered
    for issue in explain(adapter, errors, patterns=_PATTERNS, nouns=_NOUNS):
        rule = issue.rule
        if len(issue.loc) == 1 and issue.kind == "missing":
            rule = f"is required on a {role} message"
        elif len(issue.loc) == 1 and issue.kind == "extra_forbidden":
            rule = rule.replace("is not a known field", f"is not allowed on a {role} message")
        elif issue.loc[:1] == ("content",) and issue.loc[-1:] == ("type",):
            rule += f" for a {role} message"
        problems.append(Problem(index, path(issue.loc), rule))
    problems.extend(own)
    return None


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
    """The message as an API dict, or None with its problems appended to ``problems``."""
    if type(message) is dict and len(message) == 2:
        # the common {"role", "content": str} message, checked without building a validator
        role, content = message.get("role"), message.get("content")
        if (
            type(content) is str
            and type(role) is str
            and role in _PLAIN_ROLES
            and text_problem(content) is None
        ):
            return {"role": role, "content": content}
    try:
        raw = to_api_dict(message)
    except InvalidMessageError as exc:
        problems.extend(Problem(index, p.field, p.rule) for p in exc.problems)
        return None
    return _check(raw, index, problems)


def validate_messages(
    messages: Iterable[object], *, allow_pending_tool_calls: bool = False
) -> list[dict[str, Any]]:
    """Check a whole ``messages`` array against the rules the API answers with HTTP 400.

    Returns the messages as plain API dicts. Raises :class:`InvalidMessageError` listing every
    problem by index and field. ``allow_pending_tool_calls`` accepts an array that ends while
    tool results are still due, as a stored conversation may between turns.
    """
    if type(messages) is not list and (
        isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Iterable)
    ):
        got = type(messages).__name__
        raise InvalidMessageError([Problem(None, "messages", f"must be a list, got {got}")])
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
        _check(self.model_dump(exclude_none=True), None, problems)
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
    def tool(cls, tool_call_id: str, content: str, *, name: str | None = None) -> Message:
        return cls(role="tool", tool_call_id=tool_call_id, content=content, name=name)
