"""Chat completion request parameters: the rules the API enforces, checked before sending.

``client.chat.completions.create(**kwargs)`` leaves most mistakes to the server, which answers
HTTP 400 with one problem at a time, after a network round trip. :func:`validate_params` checks
the keyword arguments locally in one walk over the dict and reports every problem at once, each
as ``(parameter, rule)``. The accepted parameter names and the allowed values of enum-like
parameters come from the installed SDK, so parameters a newer SDK adds pass without a release of
chatledger. Messages are checked by :mod:`chatledger.messages`; here they only serve the
cross-checks that involve them.
"""

from __future__ import annotations

import difflib
import inspect
import math
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Literal, TypeGuard, Union, get_args, get_origin

import openai
from openai.resources.chat.completions import Completions
from openai.types.chat import completion_create_params as _sdk_params
from openai.types.chat.chat_completion_allowed_tools_param import ChatCompletionAllowedToolsParam
from openai.types.chat.chat_completion_custom_tool_param import Custom as _SdkCustom
from openai.types.chat.chat_completion_stream_options_param import (
    ChatCompletionStreamOptionsParam,
)
from openai.types.shared_params.function_definition import FunctionDefinition
from openai.types.shared_params.response_format_json_schema import JSONSchema

from chatledger.errors import InvalidParameterError

__all__ = ["ACCEPTED_PARAMS", "validate_params"]

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
#: seed is a signed 64-bit integer (OpenAPI: minimum -2**63, maximum 2**63 - 1)
SEED_RANGE: Final = (-(2**63), 2**63 - 1)
#: tool_choice / function_call strings ("none" needs no tools; the others do)
TOOL_CHOICE_MODES: Final = ("none", "auto", "required")
FUNCTION_CALL_MODES: Final = ("none", "auto")
#: tool_choice {"type": "allowed_tools", "allowed_tools": {"mode": ...}}
ALLOWED_TOOLS_MODES: Final = ("auto", "required")
#: response_format types the SDK's ResponseFormat union accepts
RESPONSE_FORMAT_TYPES: Final = ("text", "json_object", "json_schema")
#: custom tool grammar syntaxes (SDK: CustomFormatGrammarGrammar.syntax)
GRAMMAR_SYNTAXES: Final = ("lark", "regex")

# Parameters the SDK handles itself rather than sending; not part of the request body.
_CLIENT_OPTIONS: Final = frozenset({"extra_headers", "extra_query", "extra_body", "timeout"})
# Parameters where None means something other than "not given" (``timeout=None`` disables the
# SDK's timeout), so None is kept.
_NONE_IS_MEANINGFUL: Final = frozenset({"timeout"})


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


def _literal_strings(tp: object) -> tuple[str, ...] | None:
    """The strings of a ``Literal[...]`` (or ``Optional`` of one); None for any other type."""
    origin = get_origin(tp)
    if origin is Literal:
        args = get_args(tp)
        return tuple(args) if all(isinstance(a, str) for a in args) else None
    if origin is Union or origin is types.UnionType:
        values: list[str] = []
        for arg in get_args(tp):
            if arg is type(None):
                continue
            sub = _literal_strings(arg)
            if sub is None:
                return None
            values.extend(sub)
        return tuple(values) or None
    return None


def _sdk_enums() -> dict[str, tuple[tuple[str, ...], bool]]:
    """``param -> (allowed strings, is a list of them)`` for the SDK's enum-typed parameters.

    Read from the SDK's TypedDict so that a newer SDK's values (a new ``reasoning_effort``
    level, say) are accepted without a chatledger release. Types that are not plain literals
    are skipped, as is everything if the SDK's annotations cannot be resolved.
    """
    try:
        hints = typing.get_type_hints(_sdk_params.CompletionCreateParamsBase)
    except Exception:  # pragma: no cover - depends on the SDK's internals
        return {}
    out: dict[str, tuple[tuple[str, ...], bool]] = {}
    for name, tp in hints.items():
        values = _literal_strings(tp)
        if values is not None:
            out[name] = (values, False)
            continue
        if get_origin(tp) in (Union, types.UnionType):
            members = [a for a in get_args(tp) if a is not type(None)]
            if len(members) != 1:
                continue
            tp = members[0]
        if get_origin(tp) is list:
            (item,) = get_args(tp) or (None,)
            values = _literal_strings(item)
            if values is not None:
                out[name] = (values, True)
    return out


def _keys(td: Any) -> frozenset[str]:
    """The field names of an SDK TypedDict (required and optional alike)."""
    return frozenset(td.__required_keys__ | td.__optional_keys__)


# Allowed keys of nested objects, from the SDK's TypedDicts: a field a newer SDK adds passes.
_FUNCTION_KEYS: Final = _keys(FunctionDefinition) | {"name"}
_LEGACY_FUNCTION_KEYS: Final = _keys(_sdk_params.Function) | {"name"}
_CUSTOM_KEYS: Final = _keys(_SdkCustom) | {"name"}
_JSON_SCHEMA_KEYS: Final = _keys(JSONSchema) | {"name"}
_STREAM_OPTION_KEYS: Final = _keys(ChatCompletionStreamOptionsParam)
_ALLOWED_TOOLS_KEYS: Final = _keys(ChatCompletionAllowedToolsParam) | {"mode", "tools"}

# Enum-typed parameters checked generically (reasoning_effort, service_tier, verbosity,
# modalities, ...), minus those with a dedicated check below.
_SDK_ENUMS: Final = _sdk_enums()


def _is_number(value: object) -> TypeGuard[int | float]:
    """A finite int or float; a bool is not a number here, though Python says it is."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value)


def _is_int(value: object) -> TypeGuard[int]:
    """An int that is not a bool (JSON has no bool-as-integer)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _kind(value: object) -> str:
    return type(value).__name__


def _fmt(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_list(value: object) -> bool:
    return isinstance(value, (list, tuple))


def _absent(value: object) -> bool:
    """None and the SDK's own "not given" sentinels all mean the parameter is not set."""
    return value is None or isinstance(value, (openai.NotGiven, openai.Omit))


class _Checker:
    """Collects ``(param, rule)`` problems while walking the parameters."""

    __slots__ = ("problems",)

    def __init__(self) -> None:
        self.problems: list[tuple[str, str]] = []

    def add(self, param: str, rule: str, path: str = "") -> None:
        """Record a problem; ``path`` locates it inside the parameter's value."""
        path = path.removeprefix(".")
        self.problems.append((param, f"{path} {rule}" if path else rule))

    def number(self, param: str, value: object, bounds: tuple[float, float]) -> None:
        low, high = bounds
        if _is_number(value):
            if not low <= value <= high:
                self.add(param, f"must be between {low:g} and {high:g}, got {value!r}")
        else:
            got = "a bool" if isinstance(value, bool) else _fmt(value)
            self.add(param, f"must be a finite number between {low:g} and {high:g}, got {got}")

    def integer(self, param: str, value: object, low: int, high: int | None = None) -> None:
        where = f"between {low} and {high}" if high is not None else f">= {low}"
        if _is_int(value):
            if value < low or (high is not None and value > high):
                self.add(param, f"must be an integer {where}, got {value!r}")
        else:
            got = "a bool" if isinstance(value, bool) else _fmt(value)
            self.add(param, f"must be an integer {where}, got {got}")

    def boolean(self, param: str, value: object, path: str = "") -> None:
        if not isinstance(value, bool):
            self.add(param, f"must be a bool (True or False), got {_fmt(value)}", path)

    def string(self, param: str, value: object, path: str = "", max_len: int = 0) -> bool:
        if not isinstance(value, str):
            self.add(param, f"must be a string, got {_kind(value)}", path)
            return False
        if max_len and len(value) > max_len:
            self.add(param, f"must be at most {max_len} characters, got {len(value)}", path)
            return False
        return True

    def obj(
        self,
        param: str,
        value: object,
        allowed: frozenset[str],
        required: Sequence[str] = (),
        path: str = "",
    ) -> Mapping[str, Any] | None:
        """Check an object's shape: a dict with the required keys and only allowed ones."""
        if not isinstance(value, Mapping):
            self.add(param, f"must be a dict, got {_kind(value)}", path)
            return None
        for key in value:
            if key not in allowed:
                where = f"{path}.{key}" if path else str(key)
                self.add(
                    param, f"is not a known field (allowed: {', '.join(sorted(allowed))})", where
                )
        for key in required:
            if _absent(value.get(key)):
                self.add(param, "is required", f"{path}.{key}" if path else key)
        return value

    def name(self, param: str, value: object, path: str) -> str | None:
        if not isinstance(value, str):
            self.add(param, f"must be a string, got {_kind(value)}", path)
            return None
        if not NAME_PATTERN.fullmatch(value):
            self.add(
                param,
                f"must match ^[a-zA-Z0-9_-]{{1,64}}$ (letters, digits, _ and -, at most 64), "
                f"got {_fmt(value)}",
                path,
            )
            return None
        return value

    def json_schema_object(self, param: str, value: object, path: str) -> None:
        """A JSON Schema for function arguments: a dict whose type, if given, is object."""
        if not isinstance(value, Mapping):
            self.add(param, f"must be a JSON Schema dict, got {_kind(value)}", path)
        elif "type" in value and value["type"] != "object":
            self.add(
                param, f'must be a JSON Schema of "type": "object", got {_fmt(value["type"])}', path
            )


# --- One check per parameter ---------------------------------------------------------------


def _check_model(c: _Checker, value: object) -> None:
    if c.string("model", value) and not value:
        c.add("model", "must be a non-empty model name, e.g. 'gpt-4o'")


def _range_check(bounds: tuple[float, float]) -> Callable[[_Checker, str, object], None]:
    def check(c: _Checker, param: str, value: object) -> None:
        c.number(param, value, bounds)

    return check


def _check_n(c: _Checker, param: str, value: object) -> None:
    c.integer(param, value, *N_RANGE)


def _check_positive_int(c: _Checker, param: str, value: object) -> None:
    c.integer(param, value, 1)


def _check_top_logprobs(c: _Checker, param: str, value: object) -> None:
    c.integer(param, value, *TOP_LOGPROBS_RANGE)


def _check_seed(c: _Checker, param: str, value: object) -> None:
    low, high = SEED_RANGE
    if not _is_int(value):
        c.add(param, f"must be an integer, got {_fmt(value)}")
    elif not low <= value <= high:
        c.add(param, f"must fit in a signed 64-bit integer, got {value}")


def _check_bool(c: _Checker, param: str, value: object) -> None:
    c.boolean(param, value)


def _check_str(c: _Checker, param: str, value: object) -> None:
    c.string(param, value)


def _check_safety_identifier(c: _Checker, param: str, value: object) -> None:
    c.string(param, value, max_len=SAFETY_IDENTIFIER_MAX_LENGTH)


def _check_stop(c: _Checker, param: str, value: object) -> None:
    if isinstance(value, str):
        if not value:
            c.add(param, "must not be an empty string (a stop sequence needs a character)")
        return
    if not _is_list(value):
        c.add(param, f"must be a string or a list of strings, got {_kind(value)}")
        return
    assert isinstance(value, (list, tuple))
    if not value:
        c.add(param, "must not be an empty list (leave it out instead)")
    if len(value) > MAX_STOP_SEQUENCES:
        c.add(param, f"must have at most {MAX_STOP_SEQUENCES} sequences, got {len(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            c.add(param, f"must be a non-empty string, got {_fmt(item)}", f"[{i}]")


_TOKEN_ID = re.compile(r"[0-9]+")


def _check_logit_bias(c: _Checker, param: str, value: object) -> None:
    if not isinstance(value, Mapping):
        c.add(param, f"must be a dict of token id -> bias, got {_kind(value)}")
        return
    low, high = LOGIT_BIAS_RANGE
    for key, bias in value.items():
        is_id = (_is_int(key) and key >= 0) or (
            isinstance(key, str) and _TOKEN_ID.fullmatch(key) is not None
        )
        if not is_id:
            c.add(
                param,
                f"key {_fmt(key)} must be a token id: a non-negative int or a string of digits",
            )
        if not _is_number(bias) or not low <= bias <= high:
            c.add(
                param,
                f"value for token {_fmt(key)} must be a number from {low} to {high}, "
                f"got {_fmt(bias)}",
            )


def _check_metadata(c: _Checker, param: str, value: object) -> None:
    if not isinstance(value, Mapping):
        c.add(param, f"must be a dict of str -> str, got {_kind(value)}")
        return
    if len(value) > METADATA_MAX_KEYS:
        c.add(param, f"must have at most {METADATA_MAX_KEYS} keys, got {len(value)}")
    for key, item in value.items():
        path = f"[{_fmt(key)}]"
        if not isinstance(key, str):
            c.add(param, f"key {_fmt(key)} must be a string")
        elif len(key) > METADATA_MAX_KEY_LENGTH:
            c.add(param, f"key must be at most {METADATA_MAX_KEY_LENGTH} characters", path)
        c.string(param, item, path, max_len=METADATA_MAX_VALUE_LENGTH)


def _check_stream_options(c: _Checker, param: str, value: object) -> None:
    opts = c.obj(param, value, _STREAM_OPTION_KEYS)
    if opts is None:
        return
    for key in ("include_usage", "include_obfuscation"):
        if not _absent(opts.get(key)):
            c.boolean(param, opts[key], f".{key}")


def _check_response_format(c: _Checker, param: str, value: object) -> str | None:
    """Check response_format; returns its type when it is valid, for the cross-checks."""
    if not isinstance(value, Mapping):
        hint = (
            " (a pydantic model class is only accepted by client.chat.completions.parse(), "
            "for create() pass its JSON schema as a dict)"
            if isinstance(value, type)
            else ""
        )
        c.add(
            param,
            'must be a dict such as {"type": "json_object"} or {"type": "json_schema", '
            f'"json_schema": {{...}}}}, got {_kind(value)}{hint}',
        )
        return None
    kind = value.get("type")
    if kind not in RESPONSE_FORMAT_TYPES:
        c.add(
            param,
            f"type must be one of {', '.join(RESPONSE_FORMAT_TYPES)}, got {_fmt(kind)}",
        )
        return None
    before = len(c.problems)
    if kind != "json_schema":
        c.obj(param, value, frozenset({"type"}))
        return kind if len(c.problems) == before else None
    c.obj(param, value, frozenset({"type", "json_schema"}), ("json_schema",))
    spec = value.get("json_schema")
    if spec is not None:
        js = c.obj(param, spec, _JSON_SCHEMA_KEYS, ("name",), ".json_schema")
        if js is not None:
            if not _absent(js.get("name")):
                c.name(param, js["name"], ".json_schema.name")
            if not _absent(js.get("schema")) and not isinstance(js["schema"], Mapping):
                c.add(
                    param,
                    f"must be a JSON Schema dict, got {_kind(js['schema'])}",
                    ".json_schema.schema",
                )
            if not _absent(js.get("strict")):
                c.boolean(param, js["strict"], ".json_schema.strict")
            if not _absent(js.get("description")):
                c.string(param, js["description"], ".json_schema.description")
    return kind if len(c.problems) == before else None


def _check_function_def(
    c: _Checker, param: str, fn: object, path: str, allowed: frozenset[str]
) -> str | None:
    """A function definition (in tools or legacy functions); returns its valid name."""
    d = c.obj(param, fn, allowed, ("name",), path)
    if d is None:
        return None
    name = c.name(param, d["name"], f"{path}.name") if not _absent(d.get("name")) else None
    if not _absent(d.get("description")):
        c.string(param, d["description"], f"{path}.description")
    if not _absent(d.get("parameters")):
        c.json_schema_object(param, d["parameters"], f"{path}.parameters")
    if not _absent(d.get("strict")):
        c.boolean(param, d["strict"], f"{path}.strict")
    return name


def _check_custom_def(c: _Checker, param: str, custom: object, path: str) -> str | None:
    d = c.obj(param, custom, _CUSTOM_KEYS, ("name",), path)
    if d is None:
        return None
    name = c.name(param, d["name"], f"{path}.name") if not _absent(d.get("name")) else None
    if not _absent(d.get("description")):
        c.string(param, d["description"], f"{path}.description")
    fmt = d.get("format")
    if _absent(fmt):
        return name
    fpath = f"{path}.format"
    ftype = fmt.get("type") if isinstance(fmt, Mapping) else None
    if ftype == "text":
        c.obj(param, fmt, frozenset({"type"}), ("type",), fpath)
    elif ftype == "grammar":
        f = c.obj(param, fmt, frozenset({"type", "grammar"}), ("grammar",), fpath)
        grammar = f.get("grammar") if f is not None else None
        if grammar is not None:
            g = c.obj(
                param,
                grammar,
                frozenset({"definition", "syntax"}),
                ("definition", "syntax"),
                f"{fpath}.grammar",
            )
            if g is not None:
                if not _absent(g.get("definition")):
                    c.string(param, g["definition"], f"{fpath}.grammar.definition")
                if not _absent(g.get("syntax")) and g["syntax"] not in GRAMMAR_SYNTAXES:
                    c.add(
                        param,
                        f"must be one of {', '.join(GRAMMAR_SYNTAXES)}, got {_fmt(g['syntax'])}",
                        f"{fpath}.grammar.syntax",
                    )
    else:
        c.add(param, "must be {'type': 'text'} or {'type': 'grammar', 'grammar': {...}}", fpath)
    return name


def _check_list(c: _Checker, param: str, value: object, limit: int) -> Sequence[Any] | None:
    if not _is_list(value):
        c.add(param, f"must be a list, got {_kind(value)}")
        return None
    assert isinstance(value, (list, tuple))
    if not value:
        c.add(param, "must not be an empty list (leave it out instead)")
    if len(value) > limit:
        c.add(param, f"must have at most {limit} entries, got {len(value)}")
    return value


def _check_tools(c: _Checker, param: str, value: object) -> dict[str, str] | None:
    """Check tools; returns ``name -> "function" | "custom"`` for the valid names."""
    tools = _check_list(c, param, value, MAX_TOOLS)
    if tools is None:
        return None
    names: dict[str, str] = {}
    first: dict[str, int] = {}
    for i, tool in enumerate(tools):
        path = f"[{i}]"
        kind = tool.get("type") if isinstance(tool, Mapping) else None
        if kind == "function":
            t = c.obj(param, tool, frozenset({"type", "function"}), ("function",), path)
            fn = t.get("function") if t is not None else None
            name = (
                _check_function_def(c, param, fn, f"{path}.function", _FUNCTION_KEYS)
                if fn is not None
                else None
            )
        elif kind == "custom":
            t = c.obj(param, tool, frozenset({"type", "custom"}), ("custom",), path)
            cu = t.get("custom") if t is not None else None
            name = _check_custom_def(c, param, cu, f"{path}.custom") if cu is not None else None
        else:
            if isinstance(tool, Mapping):
                c.add(param, f"must be 'function' or 'custom', got {_fmt(kind)}", f"{path}.type")
            else:
                c.add(param, f"must be a tool dict, got {_kind(tool)}", path)
            continue
        if name is None:
            continue
        if name in first:
            c.add(
                param,
                f"{name!r} duplicates the name of tools[{first[name]}] (names must be unique)",
                f"{path}.{kind}.name",
            )
        else:
            first[name] = i
            names[name] = str(kind)
    return names


def _check_functions(c: _Checker, param: str, value: object) -> dict[str, str] | None:
    """Check the legacy ``functions`` list; returns its valid names."""
    functions = _check_list(c, param, value, MAX_FUNCTIONS)
    if functions is None:
        return None
    names: dict[str, str] = {}
    first: dict[str, int] = {}
    for i, fn in enumerate(functions):
        name = _check_function_def(c, param, fn, f"[{i}]", _LEGACY_FUNCTION_KEYS)
        if name is None:
            continue
        if name in first:
            c.add(
                param,
                f"{name!r} duplicates the name of functions[{first[name]}] (names must be unique)",
                f"[{i}].name",
            )
        else:
            first[name] = i
            names[name] = "function"
    return names


def _check_enum(c: _Checker, param: str, value: object) -> None:
    allowed, is_list = _SDK_ENUMS[param]
    choices = ", ".join(allowed)
    if not is_list:
        if value not in allowed:
            c.add(
                param, f"must be one of {choices} (openai {openai.__version__}), got {_fmt(value)}"
            )
        return
    if not _is_list(value):
        c.add(param, f"must be a list of {choices}, got {_kind(value)}")
        return
    assert isinstance(value, (list, tuple))
    for i, item in enumerate(value):
        if item not in allowed:
            c.add(param, f"must be one of {choices}, got {_fmt(item)}", f"[{i}]")


_Check = Callable[[_Checker, str, object], None]

_CHECKS: Final[dict[str, _Check]] = {
    "temperature": _range_check(TEMPERATURE_RANGE),
    "top_p": _range_check(TOP_P_RANGE),
    "presence_penalty": _range_check(PENALTY_RANGE),
    "frequency_penalty": _range_check(PENALTY_RANGE),
    "n": _check_n,
    "max_tokens": _check_positive_int,
    "max_completion_tokens": _check_positive_int,
    "top_logprobs": _check_top_logprobs,
    "seed": _check_seed,
    "logprobs": _check_bool,
    "parallel_tool_calls": _check_bool,
    "stream": _check_bool,
    "store": _check_bool,
    "user": _check_str,
    "prompt_cache_key": _check_str,
    "safety_identifier": _check_safety_identifier,
    "stop": _check_stop,
    "logit_bias": _check_logit_bias,
    "metadata": _check_metadata,
    "stream_options": _check_stream_options,
}


# Parameters with a dedicated check, never the generic enum one.
_DEDICATED: Final = frozenset(
    {"model", "tools", "tool_choice", "functions", "function_call", "response_format", *_CHECKS}
)


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


def _named(
    c: _Checker,
    param: str,
    ref: object,
    path: str,
    kind: str,
    names: dict[str, str] | None,
    source: str,
) -> None:
    """Check that a name referred to by tool_choice / function_call is one of the tools."""
    if not isinstance(ref, Mapping):
        c.add(param, f"must be a dict with a name, got {_kind(ref)}", path)
        return
    for key in ref:
        if key != "name":
            c.add(param, "is not a known field (allowed: name)", f"{path}.{key}")
    name = ref.get("name")
    if not isinstance(name, str):
        c.add(param, "is required (the name of a tool to call)", f"{path}.name")
        return
    if names is not None and names.get(name) != kind:
        known = ", ".join(repr(n) for n, k in names.items() if k == kind) or "none"
        c.add(
            param,
            f"names {name!r}, but {source} has no {kind} of that name ({kind}s: {known})",
            f"{path}.name",
        )


def _check_tool_choice(
    c: _Checker, value: object, has_tools: bool, names: dict[str, str] | None
) -> None:
    param = "tool_choice"
    if isinstance(value, str):
        if value not in TOOL_CHOICE_MODES:
            c.add(
                param,
                f"must be one of {', '.join(TOOL_CHOICE_MODES)} or a dict naming a "
                f"tool, got {value!r}",
            )
            return
        if value != "none" and not has_tools:
            c.add(param, f"{value!r} is only allowed when tools are given (the API answers 400)")
        return
    if not isinstance(value, Mapping):
        c.add(param, f"must be a string or a dict, got {_kind(value)}")
        return
    kind = value.get("type")
    if kind not in ("function", "custom", "allowed_tools"):
        c.add(param, f"must be 'function', 'custom' or 'allowed_tools', got {_fmt(kind)}", ".type")
        return
    if not has_tools:
        c.add(param, "is only allowed when tools are given (the API answers 400)")
    c.obj(param, value, frozenset({"type", kind}), (kind,))
    body = value.get(kind)
    if body is None:
        return
    if kind != "allowed_tools":
        _named(c, param, body, f".{kind}", kind, names, "tools")
        return
    at = c.obj(param, body, _ALLOWED_TOOLS_KEYS, ("mode", "tools"), ".allowed_tools")
    if at is None:
        return
    if not _absent(at.get("mode")) and at["mode"] not in ALLOWED_TOOLS_MODES:
        c.add(
            param,
            f"must be one of {', '.join(ALLOWED_TOOLS_MODES)}, got {_fmt(at['mode'])}",
            ".allowed_tools.mode",
        )
    refs = at.get("tools")
    if refs is None:
        return
    if not _is_list(refs) or not refs:
        c.add(param, "must be a non-empty list of tool references", ".allowed_tools.tools")
        return
    for i, ref in enumerate(refs):
        path = f".allowed_tools.tools[{i}]"
        rkind = ref.get("type") if isinstance(ref, Mapping) else None
        if rkind not in ("function", "custom"):
            c.add(param, "must be {'type': 'function' | 'custom', ...} naming a tool", path)
            continue
        assert isinstance(ref, Mapping)
        c.obj(param, ref, frozenset({"type", rkind}), (rkind,), path)
        if ref.get(rkind) is not None:
            _named(c, param, ref[rkind], f"{path}.{rkind}", rkind, names, "tools")


def _check_function_call(
    c: _Checker, value: object, has_functions: bool, names: dict[str, str] | None
) -> None:
    param = "function_call"
    if isinstance(value, str):
        if value not in FUNCTION_CALL_MODES:
            c.add(param, f"must be 'none', 'auto' or {{'name': ...}}, got {value!r}")
        elif value != "none" and not has_functions:
            c.add(param, f"{value!r} is only allowed when functions are given")
        return
    if not has_functions:
        c.add(param, "is only allowed when functions are given")
    _named(c, param, value, "", "function", names, "functions")


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
    if not isinstance(params, Mapping):
        raise InvalidParameterError([("params", f"must be a mapping, got {_kind(params)}")])
    c = _Checker()
    given: dict[str, Any] = {}
    for key, value in params.items():
        if not _absent(value) or (value is None and key in _NONE_IS_MEANINGFUL):
            given[key] = value

    if "model" in given:
        _check_model(c, given["model"])
    else:
        c.add("model", "is required (e.g. 'gpt-4o')")

    for key, value in given.items():
        if not isinstance(key, str):
            c.add(str(key), f"parameter names must be strings, got {_kind(key)}")
        elif key == "messages":
            c.add(
                key,
                "is not checked here: pass it as validate_params(..., messages=...) "
                "and check it with validate_messages()",
            )
        elif key not in ACCEPTED_PARAMS:
            c.add(key, _unknown(key))
        elif key in _CHECKS:
            _CHECKS[key](c, key, value)
        elif key in _SDK_ENUMS and key not in _DEDICATED:
            _check_enum(c, key, value)

    if "max_tokens" in given and "max_completion_tokens" in given:
        c.add(
            "max_tokens",
            "cannot be combined with max_completion_tokens (the API answers "
            "400): keep max_completion_tokens only, max_tokens is deprecated",
        )
    if "top_logprobs" in given and given.get("logprobs") is not True:
        c.add("top_logprobs", "is only allowed with logprobs=True")
    if "stream_options" in given and given.get("stream") is not True:
        c.add("stream_options", "is only allowed with stream=True")

    tool_names = _check_tools(c, "tools", given["tools"]) if "tools" in given else None
    if "tool_choice" in given:
        _check_tool_choice(c, given["tool_choice"], "tools" in given, tool_names)
    if "parallel_tool_calls" in given and "tools" not in given:
        c.add("parallel_tool_calls", "is only allowed when tools are given (the API answers 400)")

    fn_names = (
        _check_functions(c, "functions", given["functions"]) if "functions" in given else None
    )
    if "function_call" in given:
        _check_function_call(c, given["function_call"], "functions" in given, fn_names)

    if "response_format" in given:
        kind = _check_response_format(c, "response_format", given["response_format"])
        if kind == "json_object" and messages is not None and not _mentions_json(messages):
            c.add(
                "response_format",
                "json_object needs the word 'JSON' in some message (the API "
                "answers 400 otherwise): say e.g. 'Reply in JSON.' in the system message",
            )

    if c.problems:
        raise InvalidParameterError(c.problems)
    return given
