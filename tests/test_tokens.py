"""Token accounting against every recorded API figure we could find, plus properties.

Each recorded case names its source. A "recorded figure" is a ``usage.prompt_tokens`` value the
API returned for a request, published next to that request. No test touches the network.
"""

from __future__ import annotations

import base64
import struct
import warnings
import zlib
from collections.abc import Mapping
from typing import Any

import pytest
import tiktoken
import tiktoken.load
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatledger import _bpe, _images
from chatledger.errors import EncodingIntegrityError, UnknownModelWarning
from chatledger.tokens import TokenCounter, count_tokens, encoding_for_model, system_text

Msg = dict[str, Any]

# ---------------------------------------------------------------------------------------------
# Helpers: tiny image / audio files built in memory (only their headers matter)
# ---------------------------------------------------------------------------------------------


def data_url(mime: str, raw: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(raw).decode()}"


def png(w: int, h: int) -> str:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    raw = (
        b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    )
    return data_url("image/png", raw + b"\x00" * 32)


def jpeg(w: int, h: int, *, sof: int = 0xC0, app_bytes: int = 16) -> str:
    app0 = b"\xff\xe0" + struct.pack(">H", app_bytes + 2) + b"JFIF\x00" + b"\x00" * (app_bytes - 5)
    dht = b"\xff\xc4" + struct.pack(">H", 5) + b"\x00\x00\x00"  # must not be taken for a SOF
    frame = struct.pack(">BHHB", 8, h, w, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    sofn = bytes([0xFF, sof]) + struct.pack(">H", len(frame) + 2) + frame
    return data_url(
        "image/jpeg", b"\xff\xd8" + app0 + dht + sofn + b"\xff\xda\x00\x02" + b"\x00" * 8
    )


def gif(w: int, h: int) -> str:
    return data_url("image/gif", b"GIF89a" + struct.pack("<HH", w, h) + b"\x00" * 16)


def webp(w: int, h: int, kind: str) -> str:
    if kind == "VP8 ":
        body = b"\x00\x00\x00" + b"\x9d\x01\x2a" + struct.pack("<HH", w, h) + b"\x00" * 8
    elif kind == "VP8L":
        bits = (w - 1) | ((h - 1) << 14)
        body = b"\x2f" + bits.to_bytes(4, "little") + b"\x00" * 8
    else:
        body = b"\x00" * 4 + (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
    chunk = kind.encode() + struct.pack("<I", len(body)) + body
    raw = b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk
    return data_url("image/webp", raw)


def wav(seconds: float, rate: int = 16000) -> str:
    data = b"\x00\x00" * int(seconds * rate)
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    raw = (
        b"RIFF"
        + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(data))
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", len(data))
        + data
    )
    return base64.b64encode(raw).decode()


def image_message(text: str, url: str, detail: str) -> Msg:
    return {
        "role": "user",
        "content": [
            {"type": "text", "text": text},
            {"type": "image_url", "image_url": {"url": url, "detail": detail}},
        ],
    }


# ---------------------------------------------------------------------------------------------
# 1. OpenAI cookbook, "How to count tokens with tiktoken"
#    https://github.com/openai/openai-cookbook/blob/main/examples/How_to_count_tokens_with_tiktoken.ipynb
# ---------------------------------------------------------------------------------------------

COOKBOOK_MESSAGES: list[Msg] = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate "
        "jargon into plain English.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "New synergies will help drive top-line growth.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities "
        "for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client "
        "deliverable.",
    },
]


@pytest.mark.parametrize(
    ("model", "api"),
    [
        # notebook revision of mid-2023 (gpt-3.5-turbo-0301 still served)
        ("gpt-3.5-turbo-0301", 127),
        ("gpt-3.5-turbo-0613", 129),
        ("gpt-4-0314", 129),
        ("gpt-4-0613", 129),
        # current notebook revision
        ("gpt-3.5-turbo", 129),
        ("gpt-4", 129),
        ("gpt-4o", 124),
        ("gpt-4o-mini", 124),
    ],
)
def test_cookbook_example_messages(model: str, api: int) -> None:
    assert count_tokens(COOKBOOK_MESSAGES, model) == api


COOKBOOK_TOOLS: list[Msg] = [
    {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {
                        "type": "string",
                        "description": "The city and state, e.g. San Francisco, CA",
                    },
                    "unit": {
                        "type": "string",
                        "description": "The unit of temperature to return",
                        "enum": ["celsius", "fahrenheit"],
                    },
                },
                "required": ["location"],
            },
        },
    }
]
COOKBOOK_TOOL_MESSAGES: list[Msg] = [
    {
        "role": "system",
        "content": "You are a helpful assistant that can answer to questions about the weather.",
    },
    {"role": "user", "content": "What's the weather like in San Francisco?"},
]


@pytest.mark.parametrize(
    ("model", "api"),
    [("gpt-3.5-turbo", 105), ("gpt-4", 105), ("gpt-4o", 101), ("gpt-4o-mini", 101)],
)
def test_cookbook_tools_example(model: str, api: int) -> None:
    # Cookbook section 7, "Counting tokens for chat completions with tool calls".
    assert count_tokens(COOKBOOK_TOOL_MESSAGES, model, COOKBOOK_TOOLS) == api


def test_cookbook_encoding_examples() -> None:
    # Cookbook sections 3 and 5: the token ids themselves.
    assert encoding_for_model("gpt-4").encode_ordinary("tiktoken is great!") == [
        83,
        1609,
        5963,
        374,
        2294,
        0,
    ]
    assert encoding_for_model("gpt-4o").encode_ordinary("お誕生日おめでとう") == [
        8930,
        9697,
        243,
        128225,
        8930,
        17693,
        4344,
        48669,
    ]
    assert len(encoding_for_model("gpt-4").encode_ordinary("お誕生日おめでとう")) == 9


# ---------------------------------------------------------------------------------------------
# 2. hmarr/openai-chat-tokens, tests (src/token-counts.test.ts); counts reported by the API for
#    gpt-3.5-turbo (legacy `functions` / `function_call` request fields).
#    https://github.com/hmarr/openai-chat-tokens
# ---------------------------------------------------------------------------------------------

_EMPTY = {"type": "object", "properties": {}}
_HELLO: list[Msg] = [{"role": "user", "content": "hello"}]
_SYS_HI: list[Msg] = [
    {"role": "system", "content": "Hello"},
    {"role": "user", "content": "Hi there"},
]
_SYS2_HI: list[Msg] = [
    {"role": "system", "content": "Hello:"},
    {"role": "system", "content": "Hello"},
    {"role": "user", "content": "Hi there"},
]

HMARR_CASES: list[tuple[list[Msg], list[Msg] | None, Any, int]] = [
    ([COOKBOOK_MESSAGES[0]], None, None, 25),
    ([COOKBOOK_MESSAGES[1]], None, None, 20),
    ([COOKBOOK_MESSAGES[2]], None, None, 19),
    ([COOKBOOK_MESSAGES[3]], None, None, 28),
    ([COOKBOOK_MESSAGES[4]], None, None, 26),
    ([COOKBOOK_MESSAGES[5]], None, None, 26),
    (_HELLO, None, None, 8),
    ([{"role": "user", "content": "hello world"}], None, None, 9),
    ([{"role": "system", "content": "hello"}], None, None, 8),
    ([{"role": "system", "content": "hello:"}], None, None, 9),
    (
        [
            {"role": "system", "content": "# Important: you're the best robot"},
            {"role": "user", "content": "hello robot"},
            {"role": "assistant", "content": "hello world"},
        ],
        None,
        None,
        27,
    ),
    (_HELLO, [{"name": "foo", "parameters": _EMPTY}], None, 31),
    (_HELLO, [{"name": "foo", "parameters": _EMPTY}], "none", 32),
    (_HELLO, [{"name": "foo", "parameters": _EMPTY}], "auto", 31),
    (_HELLO, [{"name": "foo", "parameters": _EMPTY}], {"name": "foo"}, 36),
    (_HELLO, [{"name": "foo", "description": "Do a foo", "parameters": _EMPTY}], None, 36),
    (
        _HELLO,
        [
            {
                "name": "bing_bong",
                "description": "Do a bing bong",
                "parameters": {"type": "object", "properties": {"foo": {"type": "string"}}},
            }
        ],
        None,
        49,
    ),
    (
        _HELLO,
        [
            {
                "name": "bing_bong",
                "description": "Do a bing bong",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "foo": {"type": "string"},
                        "bar": {"type": "number", "description": "A number"},
                    },
                },
            }
        ],
        None,
        57,
    ),
    (
        _HELLO,
        [
            {
                "name": "bing_bong",
                "description": "Do a bing bong",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "foo": {
                            "type": "object",
                            "properties": {
                                "bar": {"type": "string", "enum": ["a", "b", "c"]},
                                "baz": {"type": "boolean"},
                            },
                        }
                    },
                },
            }
        ],
        None,
        68,
    ),
    (
        [
            {"role": "user", "content": "hello world"},
            {"role": "function", "name": "do_stuff", "content": "{}"},
        ],
        None,
        None,
        15,
    ),
    (
        [
            {"role": "user", "content": "hello world"},
            {"role": "function", "name": "do_stuff", "content": '{"foo": "bar", "baz": 1.5}'},
        ],
        None,
        None,
        28,
    ),
    (
        [
            {
                "role": "function",
                "name": "dance_the_tango",
                "content": '{"a": { "b" : { "c": false}}}',
            }
        ],
        None,
        None,
        24,
    ),
    (
        [
            {
                "role": "assistant",
                "content": "",
                "function_call": {"name": "do_stuff", "arguments": '{"foo": "bar", "baz": 1.5}'},
            }
        ],
        None,
        None,
        26,
    ),
    (
        [
            {
                "role": "assistant",
                "content": "",
                "function_call": {
                    "name": "do_stuff",
                    "arguments": '{"foo":"bar", "baz":\n\n 1.5}',
                },
            }
        ],
        None,
        None,
        25,
    ),
    (
        [
            {"role": "system", "content": "You are an AI assistant trained to foo or bar"},
            {"role": "user", "content": "My name is suzie"},
            {
                "role": "function",
                "name": "foo",
                "content": '{"res":{"kind":"user","name":"suzie"}}',
            },
            {"role": "user", "content": 'I want to post a message with the text "hello world"'},
            {
                "role": "function",
                "name": "foo",
                "content": '{"res":{"kind":"post","text":"hello world"}}',
            },
        ],
        [
            {
                "name": "foo",
                "description": "Return the foo or the bar",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "res": {
                            "anyOf": [
                                {
                                    "type": "object",
                                    "properties": {
                                        "kind": {"type": "string", "const": "post"},
                                        "text": {"type": "string"},
                                    },
                                    "required": ["kind", "text"],
                                    "additionalProperties": False,
                                },
                                {
                                    "type": "object",
                                    "properties": {
                                        "kind": {"type": "string", "const": "user"},
                                        "name": {
                                            "type": "string",
                                            "enum": ["jane", "suzie", "adam"],
                                        },
                                    },
                                    "required": ["kind", "name"],
                                    "additionalProperties": False,
                                },
                            ],
                            "description": "The foo or the bar",
                        }
                    },
                    "required": ["res"],
                    "additionalProperties": False,
                },
            }
        ],
        {"name": "foo"},
        158,
    ),
    (
        _SYS_HI,
        [
            {
                "name": "do_stuff",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "foo": {
                            "anyOf": [
                                {
                                    "type": "object",
                                    "properties": {
                                        "kind": {"type": "string", "const": "a"},
                                        "baz": {"type": "boolean"},
                                    },
                                }
                            ]
                        }
                    },
                },
            }
        ],
        None,
        52,
    ),
    (
        _SYS_HI,
        [
            {
                "name": "do_stuff",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "foo": {
                            "anyOf": [
                                {
                                    "type": "object",
                                    "properties": {
                                        "kind": {"type": "string", "const": "a"},
                                        "baz": {"type": "boolean"},
                                    },
                                },
                                {
                                    "type": "object",
                                    "properties": {
                                        "kind": {"type": "string", "const": "b"},
                                        "qux": {"type": "number"},
                                    },
                                },
                                {
                                    "type": "object",
                                    "properties": {
                                        "kind": {"type": "string", "const": "c"},
                                        "idk": {"type": "string"},
                                    },
                                },
                            ]
                        }
                    },
                },
            }
        ],
        None,
        80,
    ),
    (
        _SYS_HI,
        [
            {
                "name": "do_stuff",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "foo": {"anyOf": [{"type": "string", "const": "a"}, {"type": "number"}]}
                    },
                },
            }
        ],
        None,
        44,
    ),
    (_SYS_HI, [{"name": "do_stuff", "parameters": _EMPTY}], None, 35),
    (
        [{"role": "system", "content": "Hello:"}, {"role": "user", "content": "Hi there"}],
        [{"name": "do_stuff", "parameters": _EMPTY}],
        None,
        35,
    ),
    (_SYS2_HI, [{"name": "do_stuff", "parameters": _EMPTY}], None, 40),
    (
        _SYS2_HI,
        [
            {"name": "do_stuff", "parameters": _EMPTY},
            {"name": "do_other_stuff", "parameters": _EMPTY},
        ],
        None,
        49,
    ),
    (
        _SYS2_HI,
        [
            {"name": "do_stuff", "parameters": _EMPTY},
            {"name": "do_other_stuff", "parameters": _EMPTY},
        ],
        {"name": "do_stuff"},
        55,
    ),
    (
        _HELLO,
        [
            {
                "name": "get_recipe",
                "parameters": {
                    "type": "object",
                    "required": ["ingredients", "instructions", "time_to_cook"],
                    "properties": {
                        "ingredients": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name", "unit", "amount"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "unit": {
                                        "enum": ["grams", "ml", "cups", "pieces", "teaspoons"],
                                        "type": "string",
                                    },
                                    "amount": {"type": "number"},
                                },
                            },
                        },
                        "instructions": {
                            "type": "array",
                            "items": {"type": "string"},
                            "description": "Steps to prepare the recipe (no numbering)",
                        },
                        "time_to_cook": {
                            "type": "number",
                            "description": "Total time to prepare the recipe in minutes",
                        },
                    },
                },
            }
        ],
        None,
        106,
    ),
    (
        _HELLO,
        [
            {
                "name": "function",
                "description": "description",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "quality": {
                            "type": "object",
                            "properties": {
                                "pros": {
                                    "type": "array",
                                    "items": {"type": "string"},
                                    "description": "Write 3 points why this text is well written",
                                }
                            },
                        }
                    },
                },
            }
        ],
        None,
        46,
    ),
    (
        _HELLO,
        [
            {
                "name": "function",
                "description": "desctiption1",
                "parameters": {
                    "type": "object",
                    "description": "desctiption2",
                    "properties": {
                        "mainField": {"type": "string", "description": "description3"},
                        "field number one": {
                            "type": "object",
                            "description": "description4",
                            "properties": {
                                "yesNoField": {
                                    "type": "string",
                                    "description": "description5",
                                    "enum": ["Yes", "No"],
                                },
                                "howIsInteresting": {
                                    "type": "string",
                                    "description": "description6",
                                },
                                "scoreInteresting": {
                                    "type": "number",
                                    "description": "description7",
                                },
                                "isInteresting": {
                                    "type": "string",
                                    "description": "description8",
                                    "enum": ["Yes", "No"],
                                },
                            },
                        },
                    },
                },
            }
        ],
        None,
        96,
    ),
]


@pytest.mark.parametrize(("messages", "functions", "function_call", "api"), HMARR_CASES)
def test_hmarr_recorded_counts(
    messages: list[Msg], functions: list[Msg] | None, function_call: Any, api: int
) -> None:
    assert count_tokens(messages, "gpt-3.5-turbo", functions, tool_choice=function_call) == api


def test_hmarr_functions_as_tools_are_the_same() -> None:
    # The same definitions wrapped as Chat Completions `tools` entries count the same.
    for messages, functions, choice, api in HMARR_CASES:
        if functions is None:
            continue
        tools = [{"type": "function", "function": f} for f in functions]
        if isinstance(choice, Mapping):
            choice = {"type": "function", "function": dict(choice)}
        assert count_tokens(messages, "gpt-3.5-turbo", tools, tool_choice=choice) == api


# ---------------------------------------------------------------------------------------------
# 3. Tool calls in history
# ---------------------------------------------------------------------------------------------

# forestwanglin/openai-java issue #5 ("Token Count Difference (Followup)"), gpt-4: "OpenAI
# Count: 35". https://github.com/forestwanglin/openai-java/issues/5
FORESTWANGLIN_TOOL_CALL: list[Msg] = [
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_Id8ycVMsW8gdsf7kSXfgAcf1",
                "type": "function",
                "function": {
                    "name": "get_current_weather",
                    "arguments": '{\n  "location": "Boston, MA"\n}',
                },
            }
        ],
    },
    {
        "role": "tool",
        "tool_call_id": "call_Id8ycVMsW8gdsf7kSXfgAcf1",
        "name": "get_current_weather",
        "content": "29 degree celcius",
    },
]


def test_forestwanglin_tool_call_and_result() -> None:
    assert count_tokens(FORESTWANGLIN_TOOL_CALL, "gpt-4") == 35


def test_tool_result_name_comes_from_the_call() -> None:
    # Same request without the (non-standard) `name` on the tool message: resolving the call by
    # tool_call_id finds the function name, so the count is unchanged.
    without_name = [FORESTWANGLIN_TOOL_CALL[0], dict(FORESTWANGLIN_TOOL_CALL[1])]
    del without_name[1]["name"]
    assert count_tokens(without_name, "gpt-4") == 35
    # Counted alone, the name is estimated, high.
    assert count_tokens(without_name, "gpt-4", resolve_tool_calls=False) > 35
    counter = TokenCounter("gpt-4")
    assert counter.message(without_name[1], answering=without_name[0]) == counter.message(
        FORESTWANGLIN_TOOL_CALL[1]
    )
    # Without the call in view the name is an estimate that errs high.
    assert counter.message(without_name[1]) > counter.message(
        without_name[1], answering=without_name[0]
    )


# Known deviations: recorded figures we do not reproduce exactly. (source, messages, model,
# api, ours). Kept as tests so a rule change that moves them is noticed.
_COMMUNITY_TOOL_CALL: list[Msg] = [
    {"role": "user", "content": [{"type": "text", "text": "How much is 2 plus 2?"}]},
    {
        "role": "assistant",
        "tool_calls": [
            {
                "id": "a",
                "type": "function",
                "function": {"name": "calculator", "arguments": '{"a":2, "b":2}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "a", "content": "4"},
]


def test_known_deviation_community_tool_call() -> None:
    # community.openai.com/t/strange-token-cost-calculation-for-tool-calls/538914
    # (gpt-3.5-turbo, Dec 2023): API 40. We count 39, one under; the same rule reproduces the
    # gpt-4 figure above exactly, and no other recorded figure separates the two. Counted
    # without matching the call, the estimated name makes it 46, over.
    assert count_tokens(_COMMUNITY_TOOL_CALL, "gpt-3.5-turbo") == 39
    assert count_tokens(_COMMUNITY_TOOL_CALL, "gpt-3.5-turbo", resolve_tool_calls=False) == 46


def test_parallel_tool_calls_are_estimated_high() -> None:
    # Parallel calls go through a hidden multi_tool_use wrapper; the recorded reports
    # (community.openai.com/t/916758 and /1375117) only say they cost much more than the JSON
    # of the calls. Our estimate must at least exceed two separate single calls' share.
    counter = TokenCounter("gpt-4o")
    call = {"type": "function", "function": {"name": "get_weather", "arguments": '{"city":"X"}'}}
    one = {"role": "assistant", "tool_calls": [{**call, "id": "c1"}]}
    two = {"role": "assistant", "tool_calls": [{**call, "id": "c1"}, {**call, "id": "c2"}]}
    assert counter.message(two) > counter.message(one)
    # Results of a parallel call are counted JSON-escaped: non-ASCII text costs more.
    result = {"role": "tool", "tool_call_id": "c1", "content": "날씨는 맑음"}
    assert counter.message(result, answering=two) > counter.message(result, answering=one)


# ---------------------------------------------------------------------------------------------
# 4. Images
#    Docs: https://platform.openai.com/docs/guides/images-vision#calculating-costs
# ---------------------------------------------------------------------------------------------


def test_docs_tile_examples() -> None:
    rule = _images.image_rule_for_model("gpt-4o")
    assert rule.tokens(1024, 1024, "high") == 765  # 4 tiles
    assert rule.tokens(2048, 4096, "high") == 1105  # 6 tiles
    assert rule.tokens(4096, 8192, "low") == 85


def test_docs_patch_examples() -> None:
    assert _images.patch_count(1024, 1024) == 1024
    assert _images.patch_count(1800, 2400) == 1452


def test_docs_rule_table() -> None:
    rule = _images.image_rule_for_model
    assert (rule("gpt-5").base, rule("gpt-5").tile) == (70, 140)
    assert (rule("gpt-5-chat-latest").base, rule("gpt-5-chat-latest").tile) == (70, 140)
    for model in ("gpt-4o", "gpt-4.1", "gpt-4.5-preview", "chatgpt-4o-latest"):
        assert (rule(model).base, rule(model).tile) == (85, 170)
    assert (rule("gpt-4o-mini").base, rule("gpt-4o-mini").tile) == (2833, 5667)
    for model in ("o1", "o1-pro", "o3"):
        assert (rule(model).base, rule(model).tile) == (75, 150)
    assert (rule("computer-use-preview").base, rule("computer-use-preview").tile) == (65, 129)
    multipliers = {
        "gpt-4.1-mini": 1.62,
        "gpt-4.1-nano": 2.46,
        "o4-mini": 1.72,
        "gpt-5-mini": 1.62,
        "gpt-5-nano": 2.46,
    }
    for model, factor in multipliers.items():
        assert rule(model).kind == "patch"
        assert rule(model).multiplier == factor


# community.openai.com/t/vision-more-than-one-way-to-send-a-request-undocumented-and-different-
# pricing-realized/1262691: a 128x64 image plus "repeat word from attached image", per model,
# with detail low and high.
VISION_TABLE = [
    ("gpt-4o-2024-11-20", 97, 267),
    ("gpt-4o-2024-08-06", 97, 267),
    ("gpt-4o-2024-05-13", 97, 267),
    ("gpt-4-turbo-2024-04-09", 97, 267),
    ("gpt-4.1-2025-04-14", 97, 267),
    ("gpt-4.5-preview-2025-02-27", 97, 267),
    ("gpt-4o-mini-2024-07-18", 2845, 8512),
    ("o3-2025-04-16", 86, 236),
    ("o4-mini-2025-04-16", 26, 26),
    ("gpt-4.1-mini-2025-04-14", 26, 26),
    ("gpt-4.1-nano-2025-04-14", 33, 33),
]


@pytest.mark.parametrize(("model", "low", "high"), VISION_TABLE)
def test_vision_table_recorded(model: str, low: int, high: int) -> None:
    url = png(128, 64)
    text = "repeat word from attached image"
    assert count_tokens([image_message(text, url, "low")], model) == low
    assert count_tokens([image_message(text, url, "high")], model) == high


def test_known_deviation_o1_images() -> None:
    # Same table: o1-2024-12-17 billed 22 / 44, far below the docs' 75 + 150 per tile that we
    # charge. We over-count, which keeps budgets safe.
    url = png(128, 64)
    text = "repeat word from attached image"
    assert count_tokens([image_message(text, url, "low")], "o1-2024-12-17") >= 22
    assert count_tokens([image_message(text, url, "high")], "o1-2024-12-17") >= 44


# community.openai.com/t/gpt-4-1-vision-price-calculations-incorrect-billing-on-full-model/1230130
# and /t/vision-pricing-calculator-inaccurate-resizing-rounding-vs-api-costs/1281361: one author,
# one short text prompt, many images. 8 is that prompt's share: the same posts bill every
# 4-tile gpt-4.1 image at 773 = 765 + 8.
_POST_TEXT = 8


@pytest.mark.parametrize(
    ("model", "size", "api"),
    [
        ("gpt-4.1", (1800, 2400), 773),
        ("gpt-4.1", (2400, 1800), 773),
        ("gpt-4.1", (1024, 1024), 773),
        ("gpt-4.1", (2049, 513), 1453),  # 512.75 rounds to 513: two rows of tiles
        ("gpt-4.1", (2050, 513), 773),  # 512.5 rounds to 512: one row
        ("gpt-4.1-mini", (2400, 1800), 2362),  # 1452 patches * 1.62
        ("gpt-4.1-mini", (4000, 1474), 2498),  # fitted to 2048 first: 64 x 24 = 1536 patches
    ],
)
def test_vision_forum_recorded(model: str, size: tuple[int, int], api: int) -> None:
    counter = TokenCounter(model)
    part = {"type": "image_url", "image_url": {"url": png(*size), "detail": "high"}}
    with_image = counter.message({"role": "user", "content": [part]})
    assert with_image - counter.message({"role": "user", "content": []}) == api - _POST_TEXT


@pytest.mark.parametrize(
    ("size", "api"),
    [((256, 256), 77), ((512, 512), 308), ((768, 1024), 922), ((1280, 720), 1104)],
)
def test_known_deviation_gpt5_mini_patches(size: tuple[int, int], api: int) -> None:
    # longform.social mirror of an OpenAI community post: gpt-5-mini measured at 1.20 tokens per
    # patch (image-only share), not the docs' 1.62. We follow the docs: over, never under.
    assert (
        _images.image_tokens(png(*size), "high", _images.image_rule_for_model("gpt-5-mini")) >= api
    )


@pytest.mark.parametrize(
    "url",
    [
        png(640, 480),
        jpeg(640, 480),
        jpeg(640, 480, sof=0xC2),  # progressive
        jpeg(640, 480, sof=0xC1),  # extended sequential
        jpeg(640, 480, app_bytes=60_000),  # header past the first decoded chunk
        gif(640, 480),
        webp(640, 480, "VP8 "),
        webp(640, 480, "VP8L"),
        webp(640, 480, "VP8X"),
    ],
)
def test_image_headers(url: str) -> None:
    assert _images.image_dimensions(url) == (640, 480)


def test_unknown_size_is_worst_case() -> None:
    tile = _images.image_rule_for_model("gpt-4o")
    patch = _images.image_rule_for_model("gpt-4.1-mini")
    remote = "https://example.com/cat.png"
    assert _images.image_tokens(remote, "high", tile) == 85 + 8 * 170
    assert _images.image_tokens(remote, "auto", tile) == 85 + 8 * 170
    assert _images.image_tokens(remote, "low", tile) == 85
    assert _images.image_tokens(remote, "low", patch) == 2489 + 1  # detail is ignored
    assert _images.image_tokens("data:image/png;base64,!!!", "high", tile) == 1445
    # The worst case really bounds every size.
    for w, h in [(1, 1), (768, 2048), (2048, 768), (10_000, 10), (5000, 5000), (769, 1537)]:
        assert tile.tokens(w, h, "high") <= tile.worst_case("high")
        assert patch.tokens(w, h) <= patch.worst_case()


# ---------------------------------------------------------------------------------------------
# 5. Estimates (no published rule): audio, files, custom tools, unknown parts
# ---------------------------------------------------------------------------------------------


def test_audio_estimate_from_wav_duration() -> None:
    counter = TokenCounter("gpt-4o-audio-preview")
    part = {"type": "input_audio", "input_audio": {"data": wav(2.5), "format": "wav"}}
    base = counter.message({"role": "user", "content": []})
    assert counter.message({"role": "user", "content": [part]}) - base == 25


def test_pdf_file_estimate_counts_pages() -> None:
    counter = TokenCounter("gpt-4o")
    pdf = b"%PDF-1.4\n1 0 obj << /Type /Pages /Count 2 >>\n2 0 obj << /Type /Page >>\n"
    pdf += b"3 0 obj << /Type /Page >>\n%%EOF"
    part = {"type": "file", "file": {"filename": "a.pdf", "file_data": data_url("x", pdf)}}
    one_page = counter.message({"role": "user", "content": [{"type": "file", "file": {}}]})
    two_pages = counter.message({"role": "user", "content": [part]})
    assert two_pages - 4 == 2 * (one_page - 4)


def test_custom_tools_and_refusals_are_counted() -> None:
    counter = TokenCounter("gpt-5")
    custom = [{"type": "custom", "custom": {"name": "run_sql", "description": "Run a query"}}]
    assert counter.tools(custom) > counter.tools([{"name": "run_sql", "parameters": _EMPTY}])
    refusal = {"role": "assistant", "content": None, "refusal": "I can't help with that."}
    assert counter.message(refusal) == 3 + 1 + counter.text("I can't help with that.")
    parts = {"role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]}
    assert counter.message(parts) == 3 + 1 + counter.text("No.")


# ---------------------------------------------------------------------------------------------
# 6. Encodings, models, API shape
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-5", "o200k_base"),
        ("gpt-5-mini-2025-08-07", "o200k_base"),
        ("gpt-4.1-nano", "o200k_base"),
        ("gpt-4.5-preview", "o200k_base"),
        ("gpt-4o-2024-08-06", "o200k_base"),
        ("chatgpt-4o-latest", "o200k_base"),
        ("o1-pro", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("o4-mini", "o200k_base"),
        ("gpt-oss-120b", "o200k_base"),
        ("openai/gpt-4o", "o200k_base"),
        ("ft:gpt-4o-mini-2024-07-18:acme::abc123", "o200k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-4-0613", "cl100k_base"),
        ("gpt-3.5-turbo-16k", "cl100k_base"),
        ("gpt-35-turbo", "cl100k_base"),
        ("ft:gpt-3.5-turbo-0125:acme::x", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),  # tiktoken's table
    ],
)
def test_encoding_name_for_model(model: str, encoding: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _bpe.encoding_name_for_model(model) == encoding
        assert TokenCounter(model).encoding_name == encoding


def test_unknown_model_warns_and_uses_o200k() -> None:
    with pytest.warns(UnknownModelWarning):
        assert _bpe.encoding_name_for_model("llama-3-70b") == "o200k_base"
    with pytest.warns(UnknownModelWarning, match="not bundled"):
        assert _bpe.encoding_name_for_model("text-davinci-003") == "o200k_base"


def test_bundled_encoding_matches_tiktoken_definition() -> None:
    enc = _bpe.load_encoding("o200k_base")
    assert enc.n_vocab == 200019
    assert enc.max_token_value == 200018
    assert _bpe.load_encoding("cl100k_base").n_vocab == 100277
    assert _bpe.load_encoding("o200k_base") is enc  # cached


def test_never_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("tiktoken loader called")

    monkeypatch.setattr(tiktoken, "get_encoding", boom)
    monkeypatch.setattr(tiktoken, "encoding_for_model", boom)
    monkeypatch.setattr(tiktoken.load, "load_tiktoken_bpe", boom)
    monkeypatch.setattr(tiktoken.load, "read_file_cached", boom)
    enc = _bpe.load_encoding.__wrapped__("cl100k_base")
    assert enc.encode_ordinary("hello world") == [15339, 1917]


def test_sha256_mismatch_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_bpe, "_expected_digests", lambda: {"cl100k_base.tiktoken": "0" * 64})
    with pytest.raises(EncodingIntegrityError, match="sha256"):
        _bpe.load_encoding.__wrapped__("cl100k_base")
    monkeypatch.setattr(_bpe, "_expected_digests", dict)
    with pytest.raises(EncodingIntegrityError, match="no sha256"):
        _bpe.load_encoding.__wrapped__("cl100k_base")


def test_malformed_rank_file_raises() -> None:
    with pytest.raises(EncodingIntegrityError, match="line 2"):
        _bpe._parse_ranks(b"IQ== 0\nnot-a-line\n", "x.tiktoken")


def test_counter_shape() -> None:
    counter = TokenCounter("gpt-4o")
    assert counter.model == "gpt-4o"
    assert counter.encoding_name == "o200k_base"
    assert counter.priming == 3
    assert TokenCounter("o3").priming == 2
    assert counter.tools(None) == 0
    assert counter.tools([]) == 0
    assert counter.text("hello world") == 2
    assert counter.message({"role": "user", "content": "hello"}) == 3 + 1 + 1
    assert counter.count([]) == 3


def test_profiles() -> None:
    p = {m: TokenCounter(m).profile for m in ("gpt-4o", "gpt-4o-2024-11-20", "gpt-4.1")}
    assert p["gpt-4o"] == p["gpt-4o-2024-11-20"] == p["gpt-4.1"]  # same encoding and rules
    assert TokenCounter("gpt-4o-mini").profile != p["gpt-4o"]  # image rule differs
    assert TokenCounter("gpt-4.1-mini").profile != p["gpt-4o"]
    assert TokenCounter("gpt-4").profile != p["gpt-4o"]  # encoding differs
    assert TokenCounter("gpt-3.5-turbo-0301").profile != TokenCounter("gpt-3.5-turbo").profile


def test_non_mapping_messages_go_through_to_api_dict() -> None:
    from openai.types.chat import ChatCompletionMessage

    sdk = ChatCompletionMessage(role="assistant", content="hello world")
    assert count_tokens([sdk], "gpt-4o") == count_tokens(
        [{"role": "assistant", "content": "hello world"}], "gpt-4o"
    )


def test_system_text_and_tool_join() -> None:
    assert system_text([{"role": "user", "content": "x"}]) is None
    assert system_text([{"role": "developer", "content": [{"type": "text", "text": "a"}]}]) == "a"
    counter = TokenCounter("gpt-4o")
    alone = counter.tools(COOKBOOK_TOOLS)
    joined = counter.tools(COOKBOOK_TOOLS, system="You are helpful.")
    assert joined in (alone - 4, alone - 3)  # merged into the system message (+ its newline)


# ---------------------------------------------------------------------------------------------
# 7. Properties
# ---------------------------------------------------------------------------------------------

MODELS = ["gpt-4o", "gpt-4", "gpt-3.5-turbo-0301", "gpt-4.1-mini", "o3"]
_text = st.text(max_size=40)
_name = st.from_regex(r"[a-z_]{1,12}", fullmatch=True)
_call = st.builds(
    lambda i, n, a: {
        "id": f"call_{i}",
        "type": "function",
        "function": {"name": n, "arguments": a},
    },
    st.integers(0, 3),
    _name,
    _text,
)
_message = st.one_of(
    st.builds(lambda r, c: {"role": r, "content": c}, st.sampled_from(["system", "user"]), _text),
    st.builds(lambda c, n: {"role": "user", "content": c, "name": n}, _text, _name),
    st.builds(lambda c: {"role": "assistant", "content": c}, _text),
    st.builds(
        lambda c, calls: {"role": "assistant", "content": c, "tool_calls": calls},
        st.none() | _text,
        st.lists(_call, min_size=1, max_size=3),
    ),
    st.builds(
        lambda i, c: {"role": "tool", "tool_call_id": f"call_{i}", "content": c},
        st.integers(0, 3),
        _text,
    ),
    st.builds(
        lambda parts: {"role": "user", "content": parts},
        st.lists(st.builds(lambda t: {"type": "text", "text": t}, _text), max_size=3),
    ),
)
_tools = st.none() | st.lists(
    st.builds(
        lambda n, d, props: {
            "type": "function",
            "function": {
                "name": n,
                "description": d,
                "parameters": {
                    "type": "object",
                    "properties": {p: {"type": "string", "description": d} for p in props},
                    "required": props[:1],
                },
            },
        },
        _name,
        _text,
        st.lists(_name, max_size=3, unique=True),
    ),
    max_size=3,
)
_fast = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_fast
@given(st.sampled_from(MODELS), st.lists(_message, max_size=8), _tools)
def test_count_identity(model: str, messages: list[Msg], tools: list[Msg] | None) -> None:
    # What the store relies on: stored per-message counts + priming + tools == count_tokens.
    counter = TokenCounter(model)
    system = system_text(messages)
    total = count_tokens(messages, model, tools)
    assert total == counter.count(messages, tools)
    parts = counter.messages(messages)
    assert total == sum(parts) + counter.priming + counter.tools(tools, system=system)
    # messages() is message() of each, tool results given the call they answer.
    calls: dict[str, Msg] = {}
    for msg, part in zip(messages, parts, strict=True):
        answering = calls.get(msg.get("tool_call_id", "")) if msg["role"] == "tool" else None
        assert part == counter.message(msg, answering=answering)
        calls.update({tc["id"]: msg for tc in msg.get("tool_calls", ())})
    # Counted alone, the plain sum of message() holds.
    alone = count_tokens(messages, model, tools, resolve_tool_calls=False)
    assert alone == (
        sum(counter.message(m) for m in messages)
        + counter.priming
        + counter.tools(tools, system=system)
    )
    assert counter.messages(messages, resolve_tool_calls=False) == [
        counter.message(m) for m in messages
    ]
    # Without a system message to host them, tools(tools) alone completes the sum.
    if system is None:
        assert counter.tools(tools, system=system) == counter.tools(tools)


@_fast
@given(st.sampled_from(MODELS), st.lists(_message, max_size=8), _message, _tools)
def test_appending_never_lowers(
    model: str, messages: list[Msg], extra: Msg, tools: list[Msg] | None
) -> None:
    assert count_tokens([*messages, extra], model, tools) >= count_tokens(messages, model, tools)


_special = st.sampled_from(
    ["<|endoftext|>", "<|endofprompt|>", "<|fim_prefix|>", "<|im_start|>", "<|start|>", "\ud800"]
)


@_fast
@given(st.sampled_from(MODELS), st.lists(st.one_of(_special, _text), min_size=1, max_size=6))
def test_special_token_text_never_raises(model: str, pieces: list[str]) -> None:
    text = "".join(pieces)
    counter = TokenCounter(model)
    messages: list[Msg] = [
        {"role": "system", "content": text},
        {"role": "user", "content": text, "name": "bob"},
        {"role": "user", "content": [{"type": "text", "text": text}]},
        {
            "role": "assistant",
            "content": text,
            "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": text}}
            ],
        },
        {"role": "tool", "tool_call_id": "c", "content": text},
    ]
    tools = [{"type": "function", "function": {"name": "f", "description": text}}]
    assert count_tokens(messages, model, tools) > 0
    assert counter.text(text) >= 0
    if "\ud800" not in text:
        # counted as the plain text it is, never as one special token
        assert counter.text(text) == len(counter.encoding.encode(text, disallowed_special=()))


def test_special_tokens_are_plain_text() -> None:
    counter = TokenCounter("gpt-4o")
    assert counter.text("<|endoftext|>") > 1
    assert counter.message({"role": "user", "content": "<|endoftext|>"}) == 4 + counter.text(
        "<|endoftext|>"
    )


def test_tool_call_arguments_are_counted_as_sent() -> None:
    # hmarr's cases above: arguments count as the JSON string the caller sent, spacing included.
    counter = TokenCounter("gpt-4o")
    call = {"role": "assistant", "content": None, "tool_calls": [_tc("f", '{"a": 1}')]}
    assert counter.message(call) == 3 + 1 + counter.text("f") + counter.text('{"a": 1}') + 3


def _tc(name: str, arguments: str) -> Msg:
    return {"id": "c", "type": "function", "function": {"name": name, "arguments": arguments}}
