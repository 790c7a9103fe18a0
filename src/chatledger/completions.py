"""Reading a chat completion response: the message to store and the usage to bill.

A response arrives as the SDK's ``ChatCompletion`` or as its dict. What is stored must be a
message the API accepts back on the next turn, so a reply cut off mid tool call (finish reason
``length``, or a stream that broke) keeps its text and drops the tool calls whose arguments
never completed, and says so in its status.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from chatledger.errors import InvalidArgumentError

__all__ = ["Reply", "UsageFields", "parse_completion", "status_for"]


@dataclass(frozen=True, slots=True)
class UsageFields:
    """Usage as the API reported it (``estimated`` when it did not, e.g. a broken stream)."""

    model: str
    response_id: str | None
    system_fingerprint: str | None
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    estimated: bool = False
    #: prompt tokens written to the provider's cache, where it reports them (None: not said)
    cache_write_tokens: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Reply:
    """What one response becomes: the chosen message, its status and the usage record."""

    message: dict[str, Any] | None
    status: str | None
    usage: UsageFields
    dropped_tool_calls: int = 0
    #: what the reply adds to its stored message's metadata (a Responses API reply's
    #: reasoning items, see :mod:`chatledger.responses`); None for a chat completion
    metadata: dict[str, Any] | None = None


def _cache_writes(usage: dict[str, Any], details: dict[str, Any]) -> int | None:
    """Cache-write tokens under the names providers use: OpenAI-style
    ``prompt_tokens_details.cache_write_tokens`` (or ``cache_creation_tokens``), Anthropic's
    ``cache_creation_input_tokens``. None when none is reported."""
    for where, name in (
        (details, "cache_write_tokens"),
        (details, "cache_creation_tokens"),
        (usage, "cache_creation_input_tokens"),
    ):
        if where.get(name) is not None:
            return _int(where.get(name))
    return None


def status_for(finish_reason: str | None) -> str | None:
    """The stored message's status: None for a normal reply, else why it is not one."""
    if finish_reason in (None, "stop", "tool_calls", "function_call"):
        return None
    return finish_reason  # "length", "content_filter", or "incomplete" for a broken stream


def _as_dict(completion: object) -> dict[str, Any]:
    if isinstance(completion, BaseModel):
        return completion.model_dump(mode="json", exclude_none=True)
    if isinstance(completion, Mapping):
        return dict(completion)
    raise InvalidArgumentError(
        "completion", f"must be a ChatCompletion or its dict, got {type(completion).__name__}"
    )


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _complete_call(tc: Mapping[str, Any]) -> bool:
    fn = tc.get("function")
    if tc.get("type", "function") == "custom":
        return isinstance(tc.get("custom"), Mapping)
    if not isinstance(fn, Mapping) or not fn.get("name") or not tc.get("id"):
        return False
    try:
        json.loads(fn.get("arguments") or "")
    except ValueError:
        return False
    return True


def message_from(raw: Mapping[str, Any], finish_reason: str | None) -> tuple[dict[str, Any], int]:
    """The assistant message to store from a response message, and how many tool calls were
    dropped because they never completed."""
    msg: dict[str, Any] = {"role": "assistant"}
    content = raw.get("content")
    if isinstance(content, str):
        msg["content"] = content
    refusal = raw.get("refusal")
    if isinstance(refusal, str) and refusal:
        msg["refusal"] = refusal
    calls = [c for c in raw.get("tool_calls") or [] if isinstance(c, Mapping)]
    good = []
    for c in calls:
        if _complete_call(c):
            call = {"id": c["id"], "type": c.get("type", "function")}
            if call["type"] == "custom":
                call["custom"] = dict(c["custom"])
            else:
                call["function"] = {
                    "name": c["function"]["name"],
                    "arguments": c["function"]["arguments"],
                }
            good.append(call)
    if good:
        msg["tool_calls"] = good
    fc = raw.get("function_call")
    if isinstance(fc, Mapping) and fc.get("name"):
        try:
            json.loads(fc.get("arguments") or "")
            msg["function_call"] = {"name": fc["name"], "arguments": fc["arguments"]}
        except ValueError:
            pass
    audio = raw.get("audio")
    if isinstance(audio, Mapping) and audio.get("id"):
        msg["audio"] = {"id": audio["id"]}
    if len(msg) == 1:
        msg["content"] = ""  # nothing usable arrived: an empty reply, never a corrupt one
    return msg, len(calls) - len(good)


def parse_completion(completion: object, *, choice: int = 0) -> Reply:
    """The message of choice ``choice`` and the usage of the whole response (all choices)."""
    data = _as_dict(completion)
    raw_choices = data.get("choices") or []
    if not isinstance(raw_choices, (list, tuple)):
        raise InvalidArgumentError("completion", "choices must be a list")
    choices = [c for c in raw_choices if isinstance(c, Mapping)]
    if not isinstance(choice, int) or isinstance(choice, bool) or choice < 0:
        raise InvalidArgumentError("choice", "must be a non-negative integer")
    picked = next((c for c in choices if c.get("index", 0) == choice), None)
    if picked is None and choices and choice == 0:
        picked = choices[0]
    if choices and picked is None:
        raise InvalidArgumentError("choice", f"the response has no choice {choice}")
    finish = picked.get("finish_reason") if picked else None
    message, dropped = (
        message_from(picked.get("message") or {}, finish) if picked is not None else (None, 0)
    )
    usage = data.get("usage") or {}
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    extra: dict[str, Any] = {}
    if len(choices) > 1:
        extra["choices"] = [
            {
                "index": c.get("index"),
                "finish_reason": c.get("finish_reason"),
                "message": message_from(c.get("message") or {}, c.get("finish_reason"))[0],
            }
            for c in choices
        ]
        extra["chosen"] = choice
    for key in ("service_tier",):
        if data.get(key) is not None:
            extra[key] = data[key]
    fields = UsageFields(
        model=str(data.get("model") or ""),
        response_id=data.get("id"),
        system_fingerprint=data.get("system_fingerprint"),
        finish_reason=finish,
        prompt_tokens=_int(usage.get("prompt_tokens")),
        completion_tokens=_int(usage.get("completion_tokens")),
        cached_tokens=_int(prompt_details.get("cached_tokens")),
        reasoning_tokens=_int(completion_details.get("reasoning_tokens")),
        estimated=not usage,
        extra=extra,
        cache_write_tokens=_cache_writes(usage, prompt_details),
    )
    status = status_for(finish)
    if dropped and status is None:
        status = "incomplete"
    return Reply(message, status, fields, dropped)
