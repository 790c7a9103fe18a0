"""Chat completion request parameters: the rules the API enforces, checked before sending.

``client.chat.completions.create(**kwargs)`` leaves most mistakes to the server, which answers
HTTP 400 with one problem at a time, after a network round trip. :func:`validate_params` checks
the keyword arguments locally and reports every problem at once, each as ``(parameter, rule)``.

The accepted parameter names, the shapes of ``tools``, ``tool_choice``, ``response_format`` and
the rest, and the allowed values of enum-like parameters all come from the installed SDK: its
``CompletionCreateParams`` TypedDict is validated by pydantic (see :mod:`chatledger.sdk_schema`),
so what a newer SDK adds passes without a release of chatledger. This module adds what the SDK's
types do not say (ranges, name patterns, list limits) and the rules that tie parameters
together. Messages are checked by :mod:`chatledger.messages`; here they only serve the
cross-checks that involve them.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import inspect
import math
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Annotated, Any, Final, TypeGuard, get_args, get_type_hints

import openai
from annotated_types import Len
from openai.resources.chat.completions import Completions
from openai.types.chat import chat_completion_allowed_tools_param as _allowed
from openai.types.chat import chat_completion_custom_tool_param as _custom
from openai.types.chat import completion_create_params as _sdk_params
from openai.types.chat.chat_completion_named_tool_choice_custom_param import (
    ChatCompletionNamedToolChoiceCustomParam,
)
from openai.types.chat.chat_completion_named_tool_choice_param import (
    ChatCompletionNamedToolChoiceParam,
)
from openai.types.shared_params.function_definition import FunctionDefinition
from openai.types.shared_params.response_format_json_schema import JSONSchema
from pydantic import AfterValidator, Field, StringConstraints
from pydantic_core import ErrorDetails, PydanticCustomError
from typing_extensions import is_typeddict

from chatledger.errors import InvalidParameterError
from chatledger.sdk_schema import Issue, SdkSchema, describe, explain, path, validate

__all__ = [
    "ACCEPTED_PARAMS",
    "PROMPT_CACHE_KEY_MAX_LENGTH",
    "conversation_cache_key",
    "validate_params",
]

# --- Limits -------------------------------------------------------------------------------
# Sources: the OpenAI API reference for POST /v1/chat/completions (the OpenAPI schema
# CreateChatCompletionRequest) and the installed SDK's docstrings in
# openai/types/chat/completion_create_params.py, which are generated from that schema.

#: "What sampling temperature to use, between 0 and 2." (minimum 0, maximum 2)
TEMPERATURE_RANGE: Final = (0.0, 2.0)
#: nucleus sampling probability mass (OpenAPI: minimum 0, maximum 1)
TOP_P_RANGE: Final = (0.0, 1.0)
#: presence_penalty and frequency_penalty: "Number between -2.0 and 2.0."
PENALTY_RANGE: Final = (-2.0, 2.0)
#: choices per request (OpenAPI: minimum 1, maximum 128)
N_RANGE: Final = (1, 128)
#: "Up to 4 sequences where the API will stop generating further tokens." (minItems 1)
MAX_STOP_SEQUENCES: Final = 4
#: logit_bias: "an associated bias value from -100 to 100"
LOGIT_BIAS_RANGE: Final = (-100, 100)
#: "An integer between 0 and 20 ... `logprobs` must be set to `true` if this parameter is used."
TOP_LOGPROBS_RANGE: Final = (0, 20)
#: tools: "A max of 128 functions are supported."; legacy functions: maxItems 128
MAX_TOOLS: Final = 128
MAX_FUNCTIONS: Final = 128
#: function and response-format names: "a-z, A-Z, 0-9, or contain underscores and dashes,
#: with a maximum length of 64"
NAME_PATTERN: Final = re.compile(r"[a-zA-Z0-9_-]{1,64}")
#: metadata: "Set of 16 key-value pairs ... Keys ... maximum length of 64 characters. Values
#: ... maximum length of 512 characters."
METADATA_MAX_KEYS: Final = 16
METADATA_MAX_KEY_LENGTH: Final = 64
METADATA_MAX_VALUE_LENGTH: Final = 512
#: safety_identifier: "with a maximum length of 128 characters"
SAFETY_IDENTIFIER_MAX_LENGTH: Final = 128
#: prompt_cache_key: the API refuses keys over 64 characters
PROMPT_CACHE_KEY_MAX_LENGTH: Final = 64
#: seed is a signed 64-bit integer (OpenAPI: minimum -2**63, maximum 2**63 - 1)
SEED_RANGE: Final = (-(2**63), 2**63 - 1)

# Parameters the SDK handles itself rather than sending; not part of the request body.
_CLIENT_OPTIONS: Final = frozenset({"extra_headers", "extra_query", "extra_body", "timeout"})
# Parameters where None means something other than "not given" (``timeout=None`` disables the
# SDK's timeout), so None is kept.
_NONE_IS_MEANINGFUL: Final = frozenset({"timeout"})


def conversation_cache_key(owner: str | None, conversation_id: str) -> str:
    """The ``prompt_cache_key`` a conversation's requests carry unless told otherwise: one per
    conversation, so that its requests reach the same cache; a hash, so that no id or owner
    (which may be an email) is sent to the provider."""
    digest = hashlib.sha256(f"{owner or ''}\x1f{conversation_id}".encode()).hexdigest()
    return f"chatledger-{digest[:40]}"


def _accepted_params() -> frozenset[str]:
    """Every keyword ``Completions.create`` of the installed SDK accepts, except ``messages``."""
    names = {
        p.name
        for p in inspect.signature(Completions.create).parameters.values()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }
    return frozenset((names | _CLIENT_OPTIONS) - {"self", "messages"})


#: The parameter names this module accepts, derived from the installed SDK at import time.
ACCEPTED_PARAMS: Final[frozenset[str]] = _accepted_params()

# --- The schema: the SDK's types, with our limits on chosen fields ---------------------------

_Base = _sdk_params.CompletionCreateParamsBase
_SDK_TYPES: Final = get_type_hints(_Base)
_SDK_TOOLS, _SDK_FUNCTIONS = _SDK_TYPES["tools"], _SDK_TYPES["functions"]
_RANGES: Final[dict[str, tuple[float, float]]] = {
    "temperature": TEMPERATURE_RANGE,
    "top_p": TOP_P_RANGE,
    "presence_penalty": PENALTY_RANGE,
    "frequency_penalty": PENALTY_RANGE,
}
_INTS: Final[dict[str, tuple[int, int | None]]] = {
    "n": N_RANGE,
    "max_tokens": (1, None),
    "max_completion_tokens": (1, None),
    "top_logprobs": TOP_LOGPROBS_RANGE,
    "seed": SEED_RANGE,
}
_NAME_RULE: Final = "must match ^[a-zA-Z0-9_-]{1,64}$ (letters, digits, _ and -, at most 64)"
_Name = Annotated[str, StringConstraints(pattern=f"^{NAME_PATTERN.pattern}$")]


def _json_schema(value: object, *, of_object: bool = False) -> object:
    """A JSON Schema: a dict; for function arguments one whose type, if given, is object."""
    if not isinstance(value, Mapping):
        raise PydanticCustomError("json_schema", f"must be a JSON Schema dict, got {_kind(value)}")
    if of_object and "type" in value and value["type"] != "object":
        got = describe(value["type"])
        raise PydanticCustomError(
            "json_schema", f'must be a JSON Schema of "type": "object", got {got}'
        )
    return value


_Parameters = Annotated[object, AfterValidator(functools.partial(_json_schema, of_object=True))]

_FIELDS: Final[dict[tuple[Any, str], Any]] = {
    **{
        (_Base, p): Annotated[float, Field(ge=lo, le=hi, allow_inf_nan=False)]
        for p, (lo, hi) in _RANGES.items()
    },
    **{(_Base, p): Annotated[int, Field(ge=lo, le=hi)] for p, (lo, hi) in _INTS.items()},
    (_Base, "model"): Annotated[str, Len(1)],
    (_Base, "stop"): Annotated[str, Len(1)]
    | Annotated[Sequence[Annotated[str, Len(1)]], Len(1, MAX_STOP_SEQUENCES)],
    (_Base, "logit_bias"): dict[
        Annotated[int, Field(ge=0)] | Annotated[str, StringConstraints(pattern=r"^[0-9]+$")],
        Annotated[
            float, Field(ge=LOGIT_BIAS_RANGE[0], le=LOGIT_BIAS_RANGE[1], allow_inf_nan=False)
        ],
    ],
    (_Base, "metadata"): Annotated[
        dict[
            Annotated[str, Len(0, METADATA_MAX_KEY_LENGTH)],
            Annotated[str, Len(0, METADATA_MAX_VALUE_LENGTH)],
        ],
        Len(0, METADATA_MAX_KEYS),
    ],
    (_Base, "safety_identifier"): Annotated[str, Len(0, SAFETY_IDENTIFIER_MAX_LENGTH)],
    (_Base, "prompt_cache_key"): Annotated[str, Len(0, PROMPT_CACHE_KEY_MAX_LENGTH)],
    (_Base, "tools"): Annotated[_SDK_TOOLS, Len(1, MAX_TOOLS)],
    (_Base, "functions"): Annotated[_SDK_FUNCTIONS, Len(1, MAX_FUNCTIONS)],
    (FunctionDefinition, "name"): _Name,
    (FunctionDefinition, "parameters"): _Parameters,
    (_sdk_params.Function, "name"): _Name,
    (_sdk_params.Function, "parameters"): _Parameters,
    (_custom.Custom, "name"): _Name,
    (JSONSchema, "name"): _Name,
    (JSONSchema, "schema"): Annotated[object, AfterValidator(_json_schema)],
    # the SDK types these as plain dicts; the API takes references like tool_choice's
    (_allowed.ChatCompletionAllowedToolsParam, "tools"): Sequence[
        ChatCompletionNamedToolChoiceParam | ChatCompletionNamedToolChoiceCustomParam
    ],
}
# ``stream`` is typed on the SDK's streaming and non-streaming subclasses only.
_ADDED: Final = {_Base: {"stream": bool}}
# Parameters whose value is an object the SDK types but no rule here concerns (``audio``,
# ``prediction``, ...) pass through unchecked; those below are checked by their SDK type.
_OBJECTS_CHECKED: Final = frozenset(
    {"tools", "tool_choice", "functions", "function_call", "response_format", "stream_options"}
)


def _has_object(tp: Any) -> bool:
    return is_typeddict(tp) or any(_has_object(a) for a in get_args(tp))


@functools.cache
def _checked() -> tuple[frozenset[str], Any]:
    """The checked parameter names and their validator, built on first use."""
    names = {n for n, tp in _SDK_TYPES.items() if n in _OBJECTS_CHECKED or not _has_object(tp)}
    names = (names - {"messages"}) | {"stream"}
    return frozenset(names), SdkSchema(_FIELDS, _ADDED, text=str).adapter(_Base, only=names)


# --- Helpers ----------------------------------------------------------------------------------


def _is_number(value: object) -> TypeGuard[int | float]:
    """A finite int or float; a bool is not a number here, though Python says it is."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value)


def _kind(value: object) -> str:
    return type(value).__name__


# None and the SDK's own "not given" sentinels all mean the parameter is not set.
_NOT_GIVEN: Final = (openai.NotGiven, openai.Omit)


def _number_rule(param: str, value: object) -> str:
    """The rule of a numeric parameter, worded with both its bounds."""
    if param in _RANGES:
        low, high = _RANGES[param]
        if _is_number(value):
            return f"must be between {low:g} and {high:g}, got {value!r}"
        return f"must be a finite number between {low:g} and {high:g}, got {describe(value)}"
    if param == "seed":
        return f"must be a signed 64-bit integer, got {describe(value)}"
    low_i, high_i = _INTS[param]
    where = f"between {low_i} and {high_i}" if high_i is not None else f">= {low_i}"
    return f"must be an integer {where}, got {describe(value)}"


def _rule(param: str, issue: Issue) -> str:
    """An issue as the rule text of ``(param, rule)``: where in the value, then what."""
    loc, rule, top = issue.loc[1:], issue.rule, len(issue.loc) == 1
    if top and (param in _RANGES or param in _INTS):
        return _number_rule(param, issue.value)
    if param == "model" and issue.kind == "missing":
        return "is required (e.g. 'gpt-4o')"
    if param == "logit_bias" and loc:
        key = describe(loc[-1]) if issue.key else str(loc[-1])[1:-1]
        if issue.key:
            return f"key {key} must be a token id: a non-negative int or a string of digits"
        low, high = LOGIT_BIAS_RANGE
        got = describe(issue.value)
        return f"value for token {key} must be a number from {low} to {high}, got {got}"
    if issue.kind == "literal_error" and top:
        if param == "function_call":
            return f"must be 'none', 'auto' or {{'name': ...}}, got {describe(issue.value)}"
        extra = " or a dict naming a tool" if param == "tool_choice" else ""
        return rule.replace(", got", f"{extra} (openai {openai.__version__}), got", 1)
    if param == "response_format" and isinstance(issue.value, type):
        return f"must be a dict, got the class {issue.value.__name__}" + (
            " (a pydantic model class is only accepted by client.chat.completions.parse(), "
            "for create() pass its JSON schema as a dict)"
        )
    if issue.key:
        where = path(loc[:-1])
        return f"{where} key {describe(loc[-1])} {rule}".lstrip()
    where = path(loc)
    return f"{where} {rule}" if where else rule


_PATTERNS: Final = {f"^{NAME_PATTERN.pattern}$": _NAME_RULE}
_NOUNS: Final = {"tools": "tool"}


def _schema_problems(adapter: Any, errors: list[ErrorDetails]) -> dict[str, list[str]]:
    """pydantic's errors as rules, by parameter."""
    out: dict[str, list[str]] = {}
    for issue in explain(adapter, errors, patterns=_PATTERNS, nouns=_NOUNS):
        param = str(issue.loc[0]) if issue.loc else "params"
        rules = out.setdefault(param, [])
        rule = _rule(param, issue)
        if rule not in rules:
            rules.append(rule)
    return out


# --- Cross-checks ---------------------------------------------------------------------------


def _mentions_json(messages: Sequence[Any]) -> bool:
    """Whether some message's text says "JSON" (any case), as JSON mode requires."""
    for message in messages:
        content = (
            message.get("content")
            if isinstance(message, Mapping)
            else getattr(message, "content", None)
        )
        if isinstance(content, str):
            if "json" in content.casefold():
                return True
        elif isinstance(content, (list, tuple)):
            for part in content:
                text = part.get("text") if isinstance(part, Mapping) else None
                if isinstance(text, str) and "json" in text.casefold():
                    return True
    return False


def _names(problems: list[tuple[str, str]], param: str, items: Sequence[Any]) -> dict[str, str]:
    """The valid names ``tools`` / ``functions`` define (``name -> kind``); reports duplicates."""
    names: dict[str, str] = {}
    first: dict[str, int] = {}
    for i, item in enumerate(items):
        kind = "function" if param == "functions" else item.get("type")
        body = item if param == "functions" else item.get(kind)
        name = body.get("name") if isinstance(body, Mapping) else None
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            continue
        if name in first:
            where = f"[{i}].name" if param == "functions" else f"[{i}].{kind}.name"
            problems.append(
                (
                    param,
                    f"{where} {name!r} duplicates the name of {param}[{first[name]}] "
                    "(names must be unique)",
                )
            )
        else:
            first[name] = i
            names[name] = str(kind)
    return names


def _named(
    problems: list[tuple[str, str]],
    param: str,
    ref: Mapping[str, Any],
    where: str,
    kind: str,
    names: dict[str, str],
    source: str,
) -> None:
    """Check that a name tool_choice / function_call refers to is one of the tools."""
    name = ref["name"]
    if names.get(name) != kind:
        known = ", ".join(repr(n) for n, k in names.items() if k == kind) or "none"
        problems.append(
            (
                param,
                f"{where}.name names {name!r}, but {source} has no {kind} of that name "
                f"({kind}s: {known})".lstrip("."),
            )
        )


def _choice(
    problems: list[tuple[str, str]],
    param: str,
    value: Any,
    given: Mapping[str, Any],
    names: dict[str, str] | None,
    refs: list[tuple[str, str, Mapping[str, Any]]],
) -> None:
    """tool_choice / function_call: allowed only with the tools they choose from, by name."""
    source = "tools" if param == "tool_choice" else "functions"
    if source not in given and value != "none":
        shown = f"{value!r} is" if isinstance(value, str) else "is"
        problems.append(
            (param, f"{shown} only allowed when {source} are given (the API answers 400)")
        )
    elif names is not None:
        for where, kind, ref in refs:
            _named(problems, param, ref, where, kind, names, source)


def _tool_choice_refs(value: Any) -> list[tuple[str, str, Mapping[str, Any]]]:
    """``(path, kind, {"name": ...})`` for each tool a (valid) tool_choice names."""
    if not isinstance(value, Mapping):
        return []
    kind = value["type"]
    if kind != "allowed_tools":
        return [(f".{kind}", kind, value[kind])]
    return [
        (f".allowed_tools.tools[{i}].{ref['type']}", ref["type"], ref[ref["type"]])
        for i, ref in enumerate(value["allowed_tools"]["tools"])
    ]


def _cross_checks(
    problems: list[tuple[str, str]],
    given: Mapping[str, Any],
    invalid: Collection[str],
    messages: Sequence[Any] | None,
) -> None:
    """The rules that tie parameters together, on parameters valid on their own."""
    valid = {k: v for k, v in given.items() if k not in invalid} if invalid else given
    if "max_tokens" in given and "max_completion_tokens" in given:
        problems.append(
            (
                "max_tokens",
                "cannot be combined with max_completion_tokens (the API answers "
                "400): keep max_completion_tokens only, max_tokens is deprecated",
            )
        )
    if "top_logprobs" in given and given.get("logprobs") is not True:
        problems.append(("top_logprobs", "is only allowed with logprobs=True"))
    if "stream_options" in given and given.get("stream") is not True:
        problems.append(("stream_options", "is only allowed with stream=True"))

    tool_names = _names(problems, "tools", given["tools"]) if "tools" in valid else None
    if "tool_choice" in valid:
        value = given["tool_choice"]
        _choice(problems, "tool_choice", value, given, tool_names, _tool_choice_refs(value))
    if "parallel_tool_calls" in given and "tools" not in given:
        problems.append(
            ("parallel_tool_calls", "is only allowed when tools are given (the API answers 400)")
        )
    fn_names = _names(problems, "functions", given["functions"]) if "functions" in valid else None
    if "function_call" in valid:
        value = given["function_call"]
        refs = [("", "function", value)] if isinstance(value, Mapping) else []
        _choice(problems, "function_call", value, given, fn_names, refs)

    if (
        "response_format" in valid
        and given["response_format"]["type"] == "json_object"
        and messages is not None
        and not _mentions_json(messages)
    ):
        problems.append(
            (
                "response_format",
                "json_object needs the word 'JSON' in some message (the API "
                "answers 400 otherwise): say e.g. 'Reply in JSON.' in the system message",
            )
        )


# --- The entry point ------------------------------------------------------------------------


def _unknown(name: str) -> str:
    guess = difflib.get_close_matches(name, sorted(ACCEPTED_PARAMS), n=1, cutoff=0.6)
    hint = (
        f", did you mean {guess[0]!r}?"
        if guess
        else ", send provider-specific fields in extra_body"
    )
    return (
        f"is not a parameter of client.chat.completions.create in openai {openai.__version__} "
        f"(the SDK would raise TypeError){hint}"
    )


def _by_name(
    problems: list[tuple[str, str]],
    given: Mapping[Any, Any],
    names: Collection[str],
    schema: dict[str, list[str]],
) -> None:
    """Each parameter's own problems, in the caller's order (``model`` first)."""
    problems.extend(("model", rule) for rule in schema.get("model", ()))
    problems.extend(
        (p, rule) for p in schema if p not in given and p != "model" for rule in schema[p]
    )
    for key in given:
        if key in names:
            if key != "model":
                problems.extend((key, rule) for rule in schema.get(key, ()))
        elif not isinstance(key, str):
            problems.append((describe(key), f"parameter names must be strings, got {_kind(key)}"))
        elif key == "messages":
            problems.append(
                (
                    key,
                    "is not checked here: pass it as validate_params(..., messages=...) "
                    "and check it with validate_messages()",
                )
            )
        elif key not in ACCEPTED_PARAMS:
            problems.append((key, _unknown(key)))


def validate_params(
    params: Mapping[str, Any], *, messages: Sequence[Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """Check ``client.chat.completions.create`` keyword arguments before anything is sent.

    ``params`` is every keyword argument except ``messages``; pass those as ``messages=`` to
    enable the checks that involve them (JSON mode needs the word "JSON" in some message).
    Every broken rule is collected and raised together as :class:`InvalidParameterError`, one
    ``(param, rule)`` per problem. Returns a new dict of the parameters without the ones set to
    ``None`` (or to the SDK's ``NOT_GIVEN``/``omit``), which mean "not given"; ``timeout=None``
    is kept, as it means "no timeout" to the SDK. Values are returned as given, never copied or
    converted.
    """
    if type(params) is not dict and not isinstance(params, Mapping):
        raise InvalidParameterError([("params", f"must be a mapping, got {_kind(params)}")])
    if messages is not None and not isinstance(messages, (list, tuple)):
        raise InvalidParameterError([("messages", f"must be a list, got {_kind(messages)}")])
    given = {
        key: value
        for key, value in params.items()
        if not (value is None or isinstance(value, _NOT_GIVEN))
        or (value is None and key in _NONE_IS_MEANINGFUL)
    }
    names, adapter = _checked()
    checked = {k: v for k, v in given.items() if k in names}
    _, errors = validate(adapter, checked)
    schema = _schema_problems(adapter, errors) if errors else {}
    problems: list[tuple[str, str]] = []
    if schema or len(checked) < len(given):
        _by_name(problems, given, names, schema)
    _cross_checks(problems, given, schema, messages)
    if problems:
        raise InvalidParameterError(problems)
    return given
