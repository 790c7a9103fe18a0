"""Request parameters: what the API refuses with HTTP 400 (or the SDK with TypeError) is refused
here before sending, naming the parameter and the rule; good values pass through untouched."""

from __future__ import annotations

import copy
import inspect
import math
from typing import Any, get_args

import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.resources.chat.completions import Completions
from pydantic import BaseModel

from chatledger.errors import ChatLedgerError, InvalidParameterError
from chatledger.params import (
    ACCEPTED_PARAMS,
    MAX_STOP_SEQUENCES,
    MAX_TOOLS,
    METADATA_MAX_KEYS,
    validate_params,
)
from test_messages import deep, hostile, keys

M: dict[str, Any] = {"model": "gpt-4o"}
WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        "strict": True,
    },
}
CODE: dict[str, Any] = {
    "type": "custom",
    "custom": {
        "name": "run-code_2",
        "description": "Runs Python.",
        "format": {"type": "grammar", "grammar": {"definition": "start: /.+/", "syntax": "lark"}},
    },
}
TOOLS = [WEATHER, CODE]
LOOKUP = {"name": "lookup", "description": "Find a record.", "parameters": {"type": "object"}}


def refused(params: dict[str, Any], **kw: Any) -> InvalidParameterError:
    with pytest.raises(InvalidParameterError) as info:
        validate_params(params, **kw)
    return info.value


def fn_tool(name: str, **fields: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, **fields}}


class Answer(BaseModel):
    text: str


# ---- good values pass unchanged ---------------------------------------------------------

GOOD: list[dict[str, Any]] = [
    {"temperature": 0},
    {"temperature": 2},
    {"temperature": 0.7},
    {"top_p": 0},
    {"top_p": 1.0},
    {"top_p": 0.25},
    {"n": 1},
    {"n": 128},
    {"presence_penalty": -2},
    {"presence_penalty": 2.0},
    {"frequency_penalty": -0.5},
    {"stop": "\n"},
    {"stop": ["a", "b", "c", "d"]},
    {"stop": ("END",)},
    {"logit_bias": {"50256": -100, 1234: 100, "0": 0.5}},
    {"logit_bias": {}},
    {"logprobs": True},
    {"logprobs": False},
    {"logprobs": True, "top_logprobs": 0},
    {"logprobs": True, "top_logprobs": 20},
    {"max_tokens": 1},
    {"max_completion_tokens": 4096},
    {"response_format": {"type": "text"}},
    {"response_format": {"type": "json_object"}},
    {"response_format": {"type": "json_schema", "json_schema": {"name": "a"}}},
    {
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "answer-V2_x",
                "description": "The answer.",
                "schema": {"type": "object", "properties": {"text": {"type": "string"}}},
                "strict": True,
            },
        }
    },
    {"tools": TOOLS},
    {"tools": [fn_tool("x" * 64)]},
    {"tools": [fn_tool(f"f{i}") for i in range(MAX_TOOLS)]},
    {"tools": [{"type": "custom", "custom": {"name": "free", "format": {"type": "text"}}}]},
    {"tools": TOOLS, "tool_choice": "auto"},
    {"tools": TOOLS, "tool_choice": "required"},
    {"tools": TOOLS, "tool_choice": "none"},
    {"tool_choice": "none"},
    {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
    {"tools": TOOLS, "tool_choice": {"type": "custom", "custom": {"name": "run-code_2"}}},
    {
        "tools": TOOLS,
        "tool_choice": {
            "type": "allowed_tools",
            "allowed_tools": {
                "mode": "required",
                "tools": [
                    {"type": "function", "function": {"name": "get_weather"}},
                    {"type": "custom", "custom": {"name": "run-code_2"}},
                ],
            },
        },
    },
    {"tools": TOOLS, "parallel_tool_calls": False},
    {"functions": [LOOKUP], "function_call": "auto"},
    {"functions": [LOOKUP], "function_call": {"name": "lookup"}},
    {"functions": [{"name": "bare"}]},
    {"function_call": "none"},
    {"seed": 42},
    {"seed": -(2**63)},
    {"seed": 2**63 - 1},
    {"user": "user-7"},
    {"stream": False},
    {"stream": True},
    {"stream": True, "stream_options": {"include_usage": True, "include_obfuscation": False}},
    {"stream": True, "stream_options": {}},
    {"reasoning_effort": "low"},
    {"reasoning_effort": "high"},
    {"service_tier": "flex"},
    {"verbosity": "medium"},
    {"store": True},
    {"metadata": {"k": "v"}},
    {"metadata": {f"k{i}": "v" for i in range(METADATA_MAX_KEYS)}},
    {"metadata": {"k" * 64: "v" * 512}},
    {"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}},
    {"prediction": {"type": "content", "content": "old text"}},
    {"web_search_options": {"search_context_size": "low"}},
    {"prompt_cache_key": "tenant-1"},
    {"safety_identifier": "s" * 128},
    {"extra_headers": {"X-Trace": "1"}, "extra_query": {"a": "b"}, "extra_body": {"top_k": 5}},
    {"timeout": 30.0},
]


@pytest.mark.parametrize("params", GOOD, ids=lambda p: ",".join(p))
def test_good_values_pass_unchanged(params: dict[str, Any]) -> None:
    given_params = {**M, **params}
    snapshot = copy.deepcopy(given_params)
    out = validate_params(given_params)
    assert out == snapshot
    assert out is not given_params
    assert given_params == snapshot  # the input is never modified
    for key, value in given_params.items():
        assert out[key] is value  # values are passed through, not copied or converted


def test_every_reasoning_effort_of_the_sdk_passes() -> None:
    from openai.types.shared.reasoning_effort import ReasoningEffort

    (literal,) = [arg for arg in get_args(ReasoningEffort) if arg is not type(None)]
    for effort in get_args(literal):
        assert validate_params({**M, "reasoning_effort": effort})["reasoning_effort"] == effort


# ---- every rule refuses bad values, naming the parameter and the rule ---------------------

BAD: list[tuple[dict[str, Any], str, str]] = [
    # (params without model, the parameter named, a word of the rule)
    ({"temperature": 2.1}, "temperature", "between 0 and 2"),
    ({"temperature": -0.1}, "temperature", "between 0 and 2"),
    ({"temperature": True}, "temperature", "bool"),
    ({"temperature": "1"}, "temperature", "number"),
    ({"temperature": math.nan}, "temperature", "finite"),
    ({"temperature": math.inf}, "temperature", "finite"),
    ({"top_p": 1.5}, "top_p", "between 0 and 1"),
    ({"top_p": -0.01}, "top_p", "between 0 and 1"),
    ({"top_p": False}, "top_p", "bool"),
    ({"n": 0}, "n", "between 1 and 128"),
    ({"n": 129}, "n", "between 1 and 128"),
    ({"n": 2.0}, "n", "integer"),
    ({"n": True}, "n", "bool"),
    ({"presence_penalty": 2.5}, "presence_penalty", "between -2 and 2"),
    ({"presence_penalty": -math.inf}, "presence_penalty", "finite"),
    ({"frequency_penalty": -3}, "frequency_penalty", "between -2 and 2"),
    ({"frequency_penalty": True}, "frequency_penalty", "bool"),
    ({"stop": []}, "stop", "empty"),
    ({"stop": ["a"] * (MAX_STOP_SEQUENCES + 1)}, "stop", "at most 4"),
    ({"stop": ["ok", ""]}, "stop", "non-empty"),
    ({"stop": ["ok", 1]}, "stop", "string"),
    ({"stop": 5}, "stop", "string"),
    ({"stop": ""}, "stop", "empty"),
    ({"logit_bias": [1, 2]}, "logit_bias", "dict"),
    ({"logit_bias": {"-5": 1}}, "logit_bias", "token id"),
    ({"logit_bias": {"abc": 1}}, "logit_bias", "token id"),
    ({"logit_bias": {-1: 1}}, "logit_bias", "non-negative"),
    ({"logit_bias": {True: 1}}, "logit_bias", "token id"),
    ({"logit_bias": {"5": 101}}, "logit_bias", "-100 to 100"),
    ({"logit_bias": {"5": -100.5}}, "logit_bias", "-100 to 100"),
    ({"logit_bias": {"5": True}}, "logit_bias", "number"),
    ({"logit_bias": {"5": math.nan}}, "logit_bias", "number"),
    ({"logprobs": "yes"}, "logprobs", "bool"),
    ({"logprobs": 1}, "logprobs", "bool"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs", "between 0 and 20"),
    ({"logprobs": True, "top_logprobs": -1}, "top_logprobs", "between 0 and 20"),
    ({"logprobs": True, "top_logprobs": 2.0}, "top_logprobs", "integer"),
    ({"top_logprobs": 5}, "top_logprobs", "logprobs=True"),
    ({"logprobs": False, "top_logprobs": 5}, "top_logprobs", "logprobs=True"),
    ({"max_tokens": 0}, "max_tokens", ">= 1"),
    ({"max_tokens": 1.5}, "max_tokens", "integer"),
    ({"max_tokens": True}, "max_tokens", "bool"),
    ({"max_completion_tokens": -1}, "max_completion_tokens", ">= 1"),
    ({"max_completion_tokens": "100"}, "max_completion_tokens", "integer"),
    ({"max_tokens": 10, "max_completion_tokens": 10}, "max_tokens", "max_completion_tokens"),
    ({"response_format": "json_object"}, "response_format", "must be a dict"),
    ({"response_format": Answer}, "response_format", "parse()"),
    ({"response_format": {"type": "xml"}}, "response_format", "one of text, json_object"),
    ({"response_format": {}}, "response_format", "one of text, json_object"),
    ({"response_format": {"type": "text", "strict": True}}, "response_format", "not a known"),
    ({"response_format": {"type": "json_schema"}}, "response_format", "required"),
    (
        {"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}},
        "response_format",
        "json_schema.name is required",
    ),
    (
        {"response_format": {"type": "json_schema", "json_schema": {"name": "my schema"}}},
        "response_format",
        "must match",
    ),
    (
        {"response_format": {"type": "json_schema", "json_schema": {"name": "n" * 65}}},
        "response_format",
        "at most 64",
    ),
    (
        {"response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": "x"}}},
        "response_format",
        "JSON Schema dict",
    ),
    (
        {"response_format": {"type": "json_schema", "json_schema": {"name": "a", "strict": 1}}},
        "response_format",
        "bool",
    ),
    (
        {"response_format": {"type": "json_schema", "json_schema": {"name": "a", "x": 1}}},
        "response_format",
        "not a known field",
    ),
    (
        {"response_format": {"type": "json_schema", "json_schema": "a"}},
        "response_format",
        "dict",
    ),
    ({"tools": {"get_weather": WEATHER}}, "tools", "list"),
    ({"tools": []}, "tools", "empty"),
    ({"tools": [fn_tool(f"f{i}") for i in range(MAX_TOOLS + 1)]}, "tools", "at most 128"),
    ({"tools": [{"type": "retrieval"}]}, "tools", "'function' or 'custom'"),
    ({"tools": ["get_weather"]}, "tools", "tool dict"),
    ({"tools": [{"type": "function"}]}, "tools", "function is required"),
    ({"tools": [{"type": "function", "function": {}}]}, "tools", "name is required"),
    ({"tools": [fn_tool("get.weather")]}, "tools", "must match"),
    ({"tools": [fn_tool("")]}, "tools", "must match"),
    ({"tools": [fn_tool("x" * 65)]}, "tools", "at most 64"),
    ({"tools": [fn_tool("f", description=1)]}, "tools", "string"),
    ({"tools": [fn_tool("f", parameters="{}")]}, "tools", "JSON Schema"),
    ({"tools": [fn_tool("f", parameters={"type": "array"})]}, "tools", '"type": "object"'),
    ({"tools": [fn_tool("f", strict="yes")]}, "tools", "bool"),
    ({"tools": [fn_tool("f", returns={})]}, "tools", "not a known field"),
    ({"tools": [{**WEATHER, "extra": 1}]}, "tools", "not a known field"),
    ({"tools": [fn_tool("f"), fn_tool("g"), fn_tool("f")]}, "tools", "unique"),
    (
        {"tools": [WEATHER, {"type": "custom", "custom": {"name": "get_weather"}}]},
        "tools",
        "unique",
    ),
    ({"tools": [{"type": "custom", "custom": {}}]}, "tools", "name is required"),
    (
        {"tools": [{"type": "custom", "custom": {"name": "c", "format": "lark"}}]},
        "tools",
        "grammar",
    ),
    (
        {
            "tools": [
                {
                    "type": "custom",
                    "custom": {
                        "name": "c",
                        "format": {
                            "type": "grammar",
                            "grammar": {"definition": "x", "syntax": "peg"},
                        },
                    },
                }
            ]
        },
        "tools",
        "lark, regex",
    ),
    ({"tool_choice": "any"}, "tool_choice", "one of none, auto, required"),
    ({"tool_choice": "auto"}, "tool_choice", "only allowed when tools are given"),
    ({"tool_choice": "required"}, "tool_choice", "only allowed when tools are given"),
    (
        {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
        "tool_choice",
        "only allowed when tools are given",
    ),
    (
        {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
        "tool_choice",
        "'nope'",
    ),
    (
        {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "run-code_2"}}},
        "tool_choice",
        "no function of that name",
    ),
    (
        {"tools": TOOLS, "tool_choice": {"type": "custom", "custom": {"name": "get_weather"}}},
        "tool_choice",
        "no custom of that name",
    ),
    (
        {"tools": TOOLS, "tool_choice": {"type": "function", "function": {}}},
        "tool_choice",
        "required",
    ),
    ({"tools": TOOLS, "tool_choice": {"type": "function"}}, "tool_choice", "required"),
    ({"tools": TOOLS, "tool_choice": {"type": "tool"}}, "tool_choice", "allowed_tools"),
    ({"tools": TOOLS, "tool_choice": 1}, "tool_choice", "string or a dict"),
    (
        {
            "tools": TOOLS,
            "tool_choice": {
                "type": "allowed_tools",
                "allowed_tools": {"mode": "maybe", "tools": []},
            },
        },
        "tool_choice",
        "auto, required",
    ),
    (
        {
            "tools": TOOLS,
            "tool_choice": {
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "auto",
                    "tools": [{"type": "function", "function": {"name": "missing"}}],
                },
            },
        },
        "tool_choice",
        "'missing'",
    ),
    ({"parallel_tool_calls": True}, "parallel_tool_calls", "only allowed when tools are given"),
    ({"tools": TOOLS, "parallel_tool_calls": "yes"}, "parallel_tool_calls", "bool"),
    ({"functions": LOOKUP}, "functions", "list"),
    ({"functions": []}, "functions", "empty"),
    ({"functions": [{"name": f"f{i}"} for i in range(129)]}, "functions", "at most 128"),
    ({"functions": [LOOKUP, LOOKUP]}, "functions", "unique"),
    ({"functions": [{"name": "bad name"}]}, "functions", "must match"),
    ({"functions": [{"description": "no name"}]}, "functions", "name is required"),
    ({"functions": [{"name": "f", "strict": True}]}, "functions", "not a known field"),
    ({"functions": [LOOKUP], "function_call": "required"}, "function_call", "'none', 'auto'"),
    ({"function_call": "auto"}, "function_call", "only allowed when functions are given"),
    ({"function_call": {"name": "lookup"}}, "function_call", "only allowed when functions"),
    ({"functions": [LOOKUP], "function_call": {"name": "nope"}}, "function_call", "'nope'"),
    ({"functions": [LOOKUP], "function_call": {"name": 1}}, "function_call", "string"),
    (
        {"functions": [LOOKUP], "function_call": {"name": "lookup", "x": 1}},
        "function_call",
        "known",
    ),
    ({"seed": 1.5}, "seed", "integer"),
    ({"seed": "1"}, "seed", "integer"),
    ({"seed": 2**63}, "seed", "64-bit"),
    ({"seed": True}, "seed", "integer"),
    ({"user": 7}, "user", "string"),
    ({"stream": "true"}, "stream", "bool"),
    ({"stream_options": {"include_usage": True}}, "stream_options", "stream=True"),
    ({"stream": False, "stream_options": {"include_usage": True}}, "stream_options", "stream=True"),
    ({"stream": True, "stream_options": "usage"}, "stream_options", "dict"),
    ({"stream": True, "stream_options": {"include_usage": "yes"}}, "stream_options", "bool"),
    ({"stream": True, "stream_options": {"include_obfuscation": 0}}, "stream_options", "bool"),
    ({"stream": True, "stream_options": {"usage": True}}, "stream_options", "not a known field"),
    ({"reasoning_effort": "extreme"}, "reasoning_effort", "one of"),
    ({"reasoning_effort": 1}, "reasoning_effort", "one of"),
    ({"service_tier": "turbo"}, "service_tier", "one of"),
    ({"verbosity": "loud"}, "verbosity", "one of"),
    ({"modalities": "text"}, "modalities", "list"),
    ({"modalities": ["text", "video"]}, "modalities", "one of"),
    ({"store": "yes"}, "store", "bool"),
    ({"metadata": [("k", "v")]}, "metadata", "dict"),
    ({"metadata": {f"k{i}": "v" for i in range(METADATA_MAX_KEYS + 1)}}, "metadata", "at most 16"),
    ({"metadata": {"k" * 65: "v"}}, "metadata", "at most 64"),
    ({"metadata": {"k": "v" * 513}}, "metadata", "at most 512"),
    ({"metadata": {"k": 5}}, "metadata", "string"),
    ({"metadata": {5: "v"}}, "metadata", "string"),
    ({"safety_identifier": "s" * 129}, "safety_identifier", "at most 128"),
    ({"safety_identifier": 1}, "safety_identifier", "string"),
    ({"prompt_cache_key": 1}, "prompt_cache_key", "string"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "messages", "messages="),
]


@pytest.mark.parametrize(("params", "param", "word"), BAD, ids=lambda v: str(v)[:40])
def test_bad_values_are_refused_naming_param_and_rule(
    params: dict[str, Any], param: str, word: str
) -> None:
    exc = refused({**M, **params})
    assert param in exc.params
    rules = " | ".join(rule for p, rule in exc.problems if p == param)
    assert word in rules
    assert f"{param}: " in str(exc)
    assert all("; " not in rule for _, rule in exc.problems)  # "; " separates problems


@pytest.mark.parametrize(
    ("params", "word"),
    [
        ({}, "required"),
        ({"model": None}, "required"),
        ({"model": openai.NOT_GIVEN}, "required"),
        ({"model": ""}, "non-empty"),
        ({"model": 4}, "string"),
    ],
)
def test_model_is_required_and_a_non_empty_string(params: dict[str, Any], word: str) -> None:
    exc = refused(params)
    assert exc.params == ["model"]
    assert word in exc.problems[0][1]


def test_non_mapping_params_are_refused() -> None:
    exc = refused([("model", "gpt-4o")])  # type: ignore[arg-type]
    assert exc.params == ["params"]


# ---- all problems at once; None dropped -----------------------------------------------------


def test_every_problem_is_collected_at_once() -> None:
    exc = refused(
        {
            "temperature": 3,
            "top_p": True,
            "n": 0,
            "stop": ["a", "b", "c", "d", "e"],
            "seed": "x",
            "temprature": 1,
            "max_tokens": 5,
            "max_completion_tokens": 5,
            "tool_choice": "required",
            "parallel_tool_calls": True,
            "stream_options": {"include_usage": True},
            "response_format": {"type": "json_object"},
        },
        messages=[{"role": "user", "content": "hi"}],
    )
    assert exc.params == [
        "model",
        "temperature",
        "top_p",
        "n",
        "stop",
        "seed",
        "temprature",
        "max_tokens",
        "stream_options",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
    ]
    for param, rule in exc.problems:
        assert f"{param}: {rule}" in str(exc)


def test_none_values_are_dropped_and_not_checked() -> None:
    params = {
        **M,
        "temperature": None,
        "tools": None,
        "tool_choice": None,
        "stop": None,
        "n": 2,
        "stream_options": None,
        "seed": openai.NOT_GIVEN,
        "user": openai.omit,
    }
    out = validate_params(params)
    assert out == {"model": "gpt-4o", "n": 2}
    assert "temperature" in params  # a new dict: the input keeps its keys


def test_a_none_does_not_count_as_given_in_cross_checks() -> None:
    # tools=None is "no tools": a tool_choice that needs tools is still refused
    exc = refused({**M, "tools": None, "tool_choice": "auto"})
    assert exc.params == ["tool_choice"]
    # and max_tokens=None does not clash with max_completion_tokens
    assert validate_params({**M, "max_tokens": None, "max_completion_tokens": 5}) == {
        **M,
        "max_completion_tokens": 5,
    }


def test_timeout_none_is_kept_because_it_means_no_timeout() -> None:
    assert validate_params({**M, "timeout": None}) == {**M, "timeout": None}


# ---- unknown parameters -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("temprature", "temperature"),
        ("max_token", "max_tokens"),
        ("toolchoice", "tool_choice"),
        ("response_fromat", "response_format"),
        ("reasoning", "reasoning_effort"),
        ("stream_option", "stream_options"),
    ],
)
def test_unknown_parameter_is_refused_with_a_suggestion(name: str, suggestion: str) -> None:
    exc = refused({**M, name: 1})
    assert exc.params == [name]
    assert f"did you mean {suggestion!r}" in exc.problems[0][1]
    assert "TypeError" in exc.problems[0][1]


def test_unknown_parameter_without_a_close_match_points_to_extra_body() -> None:
    exc = refused({**M, "zzz": 1})
    assert exc.params == ["zzz"]
    assert "did you mean" not in exc.problems[0][1]
    assert "extra_body" in exc.problems[0][1]


def test_accepted_names_come_from_the_installed_sdk() -> None:
    sdk = set(inspect.signature(Completions.create).parameters) - {"self", "messages"}
    assert sdk <= ACCEPTED_PARAMS
    assert {"extra_headers", "extra_query", "extra_body", "timeout"} <= ACCEPTED_PARAMS
    assert "messages" not in ACCEPTED_PARAMS
    assert ACCEPTED_PARAMS - sdk <= {"extra_headers", "extra_query", "extra_body", "timeout"}
    # a parameter the SDK accepts but no rule here covers passes through untouched
    for name in sorted(ACCEPTED_PARAMS):
        if name in ("audio", "prediction", "web_search_options", "moderation"):
            value: Any = {"anything": ["goes"]}
            assert validate_params({**M, name: value})[name] is value


# ---- JSON mode needs the word "JSON" in the messages --------------------------------------

JSON_MODE = {**M, "response_format": {"type": "json_object"}}


def test_json_mode_without_messages_cannot_be_checked_and_passes() -> None:
    assert validate_params(JSON_MODE) == JSON_MODE


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": "What is 2+2?"}],
        [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"}],
        [{"role": "user", "content": [{"type": "text", "text": "Answer, please"}]}],
        [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "json"}}]}],
    ],
)
def test_json_mode_is_refused_when_no_message_says_json(messages: list[dict[str, Any]]) -> None:
    exc = refused(JSON_MODE, messages=messages)
    assert exc.params == ["response_format"]
    assert "JSON" in exc.problems[0][1]


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "system", "content": "Reply in JSON."}, {"role": "user", "content": "Hi"}],
        [{"role": "user", "content": "give me json"}],
        [{"role": "developer", "content": "Use JsOn output"}],
        [
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "JSON"}],
            }
        ],
        [{"role": "assistant", "content": None}, {"role": "user", "content": "as JSON"}],
    ],
)
def test_json_mode_passes_when_some_message_says_json(messages: list[dict[str, Any]]) -> None:
    assert validate_params(JSON_MODE, messages=messages) == JSON_MODE


def test_json_mode_reads_message_objects_too() -> None:
    class Msg:
        role = "system"
        content = "Output JSON only."

    assert validate_params(JSON_MODE, messages=[Msg()]) == JSON_MODE  # type: ignore[list-item]


def test_json_word_rule_applies_only_to_json_object() -> None:
    schema = {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}}
    no_json = [{"role": "user", "content": "hello"}]
    for fmt in ({"type": "text"}, schema):
        params = {**M, "response_format": fmt}
        assert validate_params(params, messages=no_json) == params


# ---- property: any dict of valid values passes, minus its None values ---------------------

names = st.from_regex(r"[a-zA-Z0-9_-]{1,64}", fullmatch=True)
texts = st.text(max_size=20)
json_schemas = st.fixed_dictionaries(
    {"type": st.just("object")}, optional={"properties": st.just({"a": {"type": "string"}})}
)


@st.composite
def tool_lists(draw: st.DrawFn) -> list[dict[str, Any]]:
    tool_names = draw(st.lists(names, min_size=1, max_size=5, unique=True))
    tools: list[dict[str, Any]] = []
    for name in tool_names:
        if draw(st.booleans()):
            fn = draw(
                st.fixed_dictionaries(
                    {"name": st.just(name)},
                    optional={
                        "description": texts,
                        "parameters": json_schemas,
                        "strict": st.booleans(),
                    },
                )
            )
            tools.append({"type": "function", "function": fn})
        else:
            custom = draw(
                st.fixed_dictionaries(
                    {"name": st.just(name)},
                    optional={"description": texts, "format": st.just({"type": "text"})},
                )
            )
            tools.append({"type": "custom", "custom": custom})
    return tools


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


INDEPENDENT: dict[str, st.SearchStrategy[Any]] = {
    "temperature": st.floats(0, 2) | st.integers(0, 2),
    "top_p": st.floats(0, 1),
    "n": st.integers(1, 128),
    "presence_penalty": st.floats(-2, 2),
    "frequency_penalty": st.floats(-2, 2) | st.integers(-2, 2),
    "stop": st.text(min_size=1, max_size=8)
    | st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=4),
    "logit_bias": st.dictionaries(
        st.integers(0, 200_000) | st.integers(0, 200_000).map(str),
        st.integers(-100, 100) | st.floats(-100, 100),
        max_size=4,
    ),
    "seed": st.integers(-(2**63), 2**63 - 1),
    "user": texts,
    "store": st.booleans(),
    "reasoning_effort": st.sampled_from(["low", "medium", "high"]),
    "service_tier": st.sampled_from(["auto", "default", "flex"]),
    "verbosity": st.sampled_from(["low", "medium", "high"]),
    "modalities": st.lists(st.sampled_from(["text", "audio"]), min_size=1, max_size=2),
    "metadata": st.dictionaries(st.text(max_size=64), st.text(max_size=512), max_size=16),
    "prompt_cache_key": texts,
    "safety_identifier": st.text(max_size=128),
    "extra_body": st.dictionaries(texts, st.integers(), max_size=2),
    "timeout": st.floats(0.1, 600),
}


@st.composite
def valid_params(draw: st.DrawFn) -> dict[str, Any]:
    params: dict[str, Any] = {"model": draw(st.sampled_from(["gpt-4o", "o3", "my-fine-tune"]))}
    for key, strategy in INDEPENDENT.items():
        if draw(st.booleans()):
            # timeout=None is kept (it means "no timeout"): tested on its own above
            params[key] = draw(strategy if key == "timeout" else maybe(strategy))
    # one of the two token limits, never both
    limit = draw(st.sampled_from([None, "max_tokens", "max_completion_tokens"]))
    if limit:
        params[limit] = draw(st.integers(1, 100_000))
    # logprobs, and top_logprobs only with logprobs=True
    logprobs = draw(maybe(st.booleans()))
    params["logprobs"] = logprobs
    if logprobs:
        params["top_logprobs"] = draw(maybe(st.integers(0, 20)))
    # stream, and stream_options only with stream=True
    stream = draw(maybe(st.booleans()))
    params["stream"] = stream
    if stream:
        params["stream_options"] = draw(
            maybe(
                st.fixed_dictionaries(
                    {},
                    optional={"include_usage": st.booleans(), "include_obfuscation": st.booleans()},
                )
            )
        )
    # tools, and what refers to them
    if draw(st.booleans()):
        tools = draw(tool_lists())
        params["tools"] = tools
        pick = draw(st.sampled_from(tools))
        kind = pick["type"]
        named = {"type": kind, kind: {"name": pick[kind]["name"]}}
        params["tool_choice"] = draw(maybe(st.sampled_from(["none", "auto", "required", named])))
        params["parallel_tool_calls"] = draw(maybe(st.booleans()))
    else:
        params["tool_choice"] = draw(maybe(st.just("none")))
    params["response_format"] = draw(
        maybe(
            st.sampled_from([{"type": "text"}, {"type": "json_object"}])
            | st.builds(
                lambda name, schema, strict: {
                    "type": "json_schema",
                    "json_schema": {"name": name, "schema": schema, "strict": strict},
                },
                names,
                json_schemas,
                st.booleans(),
            )
        )
    )
    keys = list(params)
    order = draw(st.permutations(keys))
    return {k: params[k] for k in order}


@settings(max_examples=300, deadline=None)
@given(params=valid_params())
def test_any_dict_of_valid_values_passes_minus_its_nones(params: dict[str, Any]) -> None:
    snapshot = copy.deepcopy(params)
    messages = [{"role": "system", "content": "Answer in JSON."}]
    out = validate_params(params, messages=messages)
    assert out == {k: v for k, v in snapshot.items() if v is not None}
    assert list(out) == [k for k, v in params.items() if v is not None]  # order kept
    assert params == snapshot


# ---- inputs that escaped untyped (issue 12, item 6); fuzz ----------------------------------

DEEP_KEY: Any = ()
for _ in range(100_000):
    DEEP_KEY = (DEEP_KEY,)


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"temperature": deep(100_000)}, "temperature"),  # was RecursionError (repr)
        ({"stop": deep(100_000)}, "stop"),
        ({"metadata": {DEEP_KEY: "v"}}, "metadata"),  # was RecursionError (repr of the key)
        ({"logit_bias": {DEEP_KEY: 1}}, "logit_bias"),
        ({"seed": 10**5000}, "seed"),  # was ValueError: int too long to show
        (
            {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": ["f"]}}},
            "tool_choice",  # was TypeError: unhashable list as a name
        ),
        ({"tools": [{"type": "function", "function": {"name": "f", 1: 2}}]}, "tools"),
        ({3: 1}, "3"),
    ],
    ids=lambda v: str(v)[:30] if not isinstance(v, dict) else ",".join(map(str, v))[:30],
)
def test_hostile_values_raise_typed_errors(params: dict[Any, Any], param: str) -> None:
    exc = refused({**M, **params})
    assert param in exc.params
    assert str(exc)


def test_messages_argument_must_be_a_list() -> None:
    assert refused(JSON_MODE, messages=5).params == ["messages"]  # type: ignore[arg-type]


param_names = st.sampled_from(sorted(ACCEPTED_PARAMS)) | keys
words = st.sampled_from(["function", "custom", "auto", "none", "json_object", "allowed_tools"])
objects = st.dictionaries(
    st.sampled_from(["type", "function", "custom", "name", "json_schema", "mode", "tools"]) | keys,
    hostile | words | names,
    max_size=4,
)
param_values = hostile | words | objects | st.lists(objects, max_size=3)


@settings(max_examples=200, deadline=None)
@given(
    params=st.dictionaries(param_names, param_values, max_size=5) | hostile,
    messages=st.none() | hostile,
)
def test_fuzz_only_typed_errors_escape(params: Any, messages: Any) -> None:
    try:
        validate_params(params, messages=messages)
    except ChatLedgerError as exc:
        assert str(exc)
