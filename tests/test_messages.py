"""Message rules: what the API refuses with HTTP 400 is refused here, naming index and field."""

from __future__ import annotations

from typing import Any, get_type_hints

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletionMessage
from openai.types.chat.chat_completion_content_part_image_param import ImageURL
from openai.types.chat.chat_completion_content_part_text_param import (
    ChatCompletionContentPartTextParam,
)

import chatledger as cl
from chatledger.messages import ROLES, to_api_dict


def problems(messages: list[Any], **kw: Any) -> list[tuple[int | None, str]]:
    with pytest.raises(cl.InvalidMessageError) as info:
        cl.validate_messages(messages, **kw)
    return [(p.index, p.field) for p in info.value.problems]


def call(cid: str, name: str = "get_weather", args: str = '{"city": "Paris"}') -> dict[str, Any]:
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}


GOOD: list[dict[str, Any]] = [
    {"role": "system", "content": "You are terse."},
    {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
    {"role": "user", "content": "Weather in Paris and Oslo?", "name": "alice_01"},
    {"role": "assistant", "content": None, "tool_calls": [call("c1"), call("c2")]},
    {"role": "tool", "tool_call_id": "c2", "content": "5C"},
    {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "12C"}]},
    {"role": "assistant", "content": "Paris 12C, Oslo 5C."},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "And this?"},
            {"type": "image_url", "image_url": {"url": "https://x.test/a.png", "detail": "low"}},
            {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
            {"type": "file", "file": {"file_id": "file-abc", "filename": "a.pdf"}},
        ],
    },
    {"role": "assistant", "refusal": "I can't help with that."},
    {"role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]},
    {"role": "user", "content": "legacy"},
    {"role": "assistant", "function_call": {"name": "lookup", "arguments": "{}"}},
    {"role": "function", "name": "lookup", "content": "found"},
]


def test_valid_conversation_passes_and_drops_none() -> None:
    out = cl.validate_messages(GOOD)
    assert len(out) == len(GOOD)
    assert "content" not in out[3]  # None fields are never emitted
    assert out[3]["tool_calls"][0]["function"]["arguments"] == '{"city": "Paris"}'
    for original, emitted in zip(GOOD, out, strict=True):
        assert emitted == {k: v for k, v in original.items() if v is not None}


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({"content": "hi"}, "role"),
        ({"role": "robot", "content": "hi"}, "role"),
        ({"role": "user"}, "content"),
        ({"role": "system", "content": 5}, "content"),
        ({"role": "user", "content": []}, "content"),
        ({"role": "user", "content": "hi", "tool_call_id": "x"}, "tool_call_id"),
        ({"role": "user", "content": "hi", "colour": "red"}, "colour"),
        ({"role": "user", "content": "hi", "name": "has space"}, "name"),
        ({"role": "user", "content": "hi", "name": "a/b"}, "name"),
        ({"role": "user", "content": "hi", "name": "x" * 65}, "name"),
        ({"role": "user", "content": "hi", "name": ""}, "name"),
        ({"role": "user", "content": "nul\x00byte"}, "content"),
        ({"role": "user", "content": "lone \ud800 surrogate"}, "content"),
        (
            {
                "role": "system",
                "content": [{"type": "image_url", "image_url": {"url": "https://a"}}],
            },
            "content[0].type",
        ),
        ({"role": "user", "content": [{"type": "text"}]}, "content[0].text"),
        ({"role": "user", "content": [{"type": "text", "text": 1}]}, "content[0].text"),
        (
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://a"}}]},
            "content[0].image_url.url",
        ),
        (
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": "https://a", "detail": "ultra"}}
                ],
            },
            "content[0].image_url.detail",
        ),
        (
            {
                "role": "user",
                "content": [{"type": "input_audio", "input_audio": {"data": "x", "format": "ogg"}}],
            },
            "content[0].input_audio.format",
        ),
        (
            {"role": "user", "content": [{"type": "file", "file": {"filename": "a.pdf"}}]},
            "content[0].file",
        ),
        ({"role": "user", "content": ["just a string"]}, "content[0]"),
        ({"role": "assistant"}, "content"),
        ({"role": "assistant", "tool_calls": []}, "tool_calls"),
        (
            {"role": "assistant", "tool_calls": [{"id": "a", "type": "function"}]},
            "tool_calls[0].function",
        ),
        (
            {"role": "assistant", "tool_calls": [call("a", name="bad name")]},
            "tool_calls[0].function.name",
        ),
        (
            {"role": "assistant", "tool_calls": [call("a", args="{not json")]},
            "tool_calls[0].function.arguments",
        ),
        ({"role": "assistant", "tool_calls": [call("a"), call("a")]}, "tool_calls[1].id"),
        (
            {"role": "assistant", "tool_calls": [{**call("a"), "type": "weird"}]},
            "tool_calls[0].type",
        ),
        ({"role": "tool", "content": "x"}, "tool_call_id"),
        ({"role": "function", "content": "x"}, "name"),
    ],
)
def test_single_message_rules_name_the_field(message: dict[str, Any], field: str) -> None:
    with pytest.raises(cl.InvalidMessageError) as info:
        cl.validate_message(message)
    assert field in info.value.fields, info.value
    assert isinstance(info.value, ValueError)
    assert field.split(".")[0].split("[")[0] in str(info.value)


def test_not_a_mapping() -> None:
    assert problems([42]) == [(0, "")]


def test_orphan_tool_message() -> None:
    msgs = [
        {"role": "user", "content": "hi"},
        {"role": "tool", "tool_call_id": "c9", "content": "x"},
    ]
    assert problems(msgs) == [(1, "tool_call_id")]


def test_tool_result_for_unknown_id_and_duplicate() -> None:
    msgs = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "tool_calls": [call("c1")]},
        {"role": "tool", "tool_call_id": "c1", "content": "x"},
        {"role": "tool", "tool_call_id": "c1", "content": "again"},
        {"role": "tool", "tool_call_id": "zz", "content": "other"},
    ]
    assert problems(msgs) == [(3, "tool_call_id"), (4, "tool_call_id")]


def test_unanswered_call_before_next_message_names_the_assistant() -> None:
    msgs = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "tool_calls": [call("c1"), call("c2")]},
        {"role": "tool", "tool_call_id": "c1", "content": "x"},
        {"role": "user", "content": "next"},
    ]
    with pytest.raises(cl.InvalidMessageError) as info:
        cl.validate_messages(msgs)
    (p,) = info.value.problems
    assert (p.index, p.field) == (1, "tool_calls")
    assert "'c2'" in p.rule and "messages[3]" in p.rule


def test_pending_calls_at_end() -> None:
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "tool_calls": [call("c1")]}]
    assert problems(msgs) == [(1, "tool_calls")]
    assert cl.validate_messages(msgs, allow_pending_tool_calls=True)[1]["tool_calls"]


def test_every_problem_is_reported_at_once() -> None:
    msgs = [
        {"role": "user"},
        {"role": "wizard", "content": "x"},
        {"role": "user", "content": "ok", "name": "bad name"},
    ]
    assert problems(msgs) == [(0, "content"), (1, "role"), (2, "name")]


def test_empty_array_is_refused() -> None:
    assert problems([]) == [(None, "messages")]


def test_same_id_in_later_turn_is_allowed() -> None:
    # local model servers reuse ids like "call_0" turn after turn; the API accepts that
    msgs = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "tool_calls": [call("call_0")]},
        {"role": "tool", "tool_call_id": "call_0", "content": "1"},
        {"role": "user", "content": "b"},
        {"role": "assistant", "tool_calls": [call("call_0")]},
        {"role": "tool", "tool_call_id": "call_0", "content": "2"},
    ]
    assert len(cl.validate_messages(msgs)) == 6


def test_sdk_response_object_becomes_request_param() -> None:
    sdk = ChatCompletionMessage.model_validate(
        {
            "role": "assistant",
            "content": None,
            "refusal": None,
            "annotations": [],
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "f", "arguments": '{"b": 1, "a": 2}'},
                }
            ],
        }
    )
    out = cl.validate_message(sdk)
    assert out == {
        "role": "assistant",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "f", "arguments": '{"b": 1, "a": 2}'},
            }
        ],
    }
    text = ChatCompletionMessage.model_validate({"role": "assistant", "content": "hé 🎉"})
    assert to_api_dict(text) == {"role": "assistant", "content": "hé 🎉"}


def test_message_model() -> None:
    m = cl.Message.user("hi", name="bob")
    assert m.to_dict() == {"role": "user", "content": "hi", "name": "bob"}
    assert cl.validate_message(m) == m.to_dict()
    assert cl.Message.from_api({"role": "tool", "tool_call_id": "x", "content": "y"}) == (
        cl.Message.tool("x", "y")
    )
    with pytest.raises(ValueError, match="name"):
        cl.Message(role="user", content="hi", name="white space")
    with pytest.raises(cl.InvalidMessageError):
        cl.Message.from_api({"role": "user"})


def test_error_message_is_readable() -> None:
    with pytest.raises(cl.InvalidMessageError) as info:
        cl.validate_messages([{"role": "user", "content": "hi"}, {"role": "tool", "content": 1}])
    text = str(info.value)
    assert "messages[1].tool_call_id: is required" in text
    assert "messages[1].content" in text


# ---- what the API accepts is accepted -------------------------------------------------------


def test_tool_message_may_carry_the_function_name() -> None:
    # the official cookbook's function-calling examples send it and the API accepts it, though
    # the SDK's ChatCompletionToolMessageParam has no such field
    msgs = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "tool_calls": [call("c1")]},
        {"role": "tool", "tool_call_id": "c1", "name": "get_weather", "content": "12C"},
    ]
    assert cl.validate_messages(msgs)[2] == msgs[2]
    assert cl.Message.tool("c1", "12C", name="get_weather").to_dict() == msgs[2]
    bad = {**msgs[2], "name": "get weather"}
    assert (2, "name") in problems([*msgs[:2], bad])


def test_fields_of_the_installed_sdk_are_accepted() -> None:
    # the shapes are the SDK's TypedDicts: a field or value a newer SDK adds passes
    part: dict[str, Any] = {"type": "text", "text": "cached"}
    if "prompt_cache_breakpoint" in get_type_hints(ChatCompletionContentPartTextParam):
        part["prompt_cache_breakpoint"] = {"mode": "explicit"}
    details = get_type_hints(ImageURL)["detail"].__args__
    image = {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}
    parts = [part, *({**image, "image_url": {**image["image_url"], "detail": d}} for d in details)]
    message = {"role": "user", "content": parts}
    assert cl.validate_message(message) == message


def test_output_keeps_the_callers_key_order_and_drops_nested_none() -> None:
    message = {
        "content": [
            {"text": "hi", "type": "text"},
            {"type": "image_url", "image_url": {"url": "https://x.test/a.png", "detail": None}},
        ],
        "name": None,
        "role": "user",
    }
    out = cl.validate_message(message)
    assert list(out) == ["content", "role"]
    assert list(out["content"][0]) == ["text", "type"]  # nested objects too
    assert out["content"][1]["image_url"] == {"url": "https://x.test/a.png"}
    call = {"function": {"arguments": "{}", "name": "f"}, "type": "function", "id": "c"}
    reply = cl.validate_message({"tool_calls": [call], "role": "assistant"})
    assert [
        list(reply),
        list(reply["tool_calls"][0]),
        list(reply["tool_calls"][0]["function"]),
    ] == [
        ["tool_calls", "role"],
        ["function", "type", "id"],
        ["arguments", "name"],
    ]
    assert cl.validate_message({"role": "user", "content": ({"type": "text", "text": "t"},)})


# ---- inputs that escaped untyped (issue 12, item 6) -----------------------------------------

NESTED_ARGS = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({"role": ["user"], "content": "x"}, "role"),  # was TypeError: unhashable list
        ({"role": {"user"}, "content": "x"}, "role"),
        ({"role": "user", "content": "x", 1: "y"}, "1"),  # was AttributeError: int field
        ({"role": "assistant", "tool_calls": [call("c1", args=NESTED_ARGS)]}, "arguments"),
        ({"role": "assistant", "function_call": {"name": "f", "arguments": NESTED_ARGS}}, "args"),
        ({"role": "user", "content": [{"type": 10**5000, "text": "x"}]}, "content[0].type"),
    ],
)
def test_hostile_shapes_raise_typed_errors(message: dict[Any, Any], field: str) -> None:
    with pytest.raises(cl.InvalidMessageError) as info:
        cl.validate_message(message)
    assert any(field.replace("args", "arguments") in f for f in info.value.fields), info.value
    assert str(info.value)


@pytest.mark.parametrize("messages", [5, "hi", {"role": "user", "content": "x"}, None])
def test_messages_must_be_a_list(messages: Any) -> None:
    assert problems(messages) == [(None, "messages")]


def deep(n: int) -> Any:
    value: Any = "x"
    for _ in range(n):
        value = [value]
    return value


# random JSON-like values and the things JSON has not: non-str keys, deep nesting, nan and inf,
# huge ints, bytes, sets
keys = (
    st.text(max_size=6)
    | st.integers()
    | st.floats()
    | st.booleans()
    | st.none()
    | st.binary(max_size=4)
    | st.tuples(st.integers())
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(0, 3).map(lambda k: 10 ** (5000 + k))  # repr() refuses ints this long
    | st.floats()
    | st.text(max_size=10)
    | st.binary(max_size=8)
    | st.sets(st.integers(), max_size=3)
)
hostile = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(keys, inner, max_size=4)
        | st.tuples(inner, inner)
    ),
    max_leaves=10,
) | st.integers(0, 3000).map(deep)
FIELDS = ["role", "content", "name", "tool_calls", "tool_call_id", "refusal", "function_call"]
FIELDS += ["audio", "type", "text", "image_url", "url", "function", "arguments", "id", "file"]
field_names = st.sampled_from(FIELDS) | keys
tag = st.sampled_from(["text", "image_url", "function", "custom", "refusal", "file"])
objects = st.dictionaries(field_names, hostile | tag | st.text(max_size=5), max_size=5)
message_like = st.builds(
    lambda role, rest: {"role": role, **rest},
    st.sampled_from(ROLES) | hostile,
    st.dictionaries(field_names, hostile | objects | st.lists(objects, max_size=3), max_size=4),
)


@settings(max_examples=200, deadline=None)
@given(value=hostile | message_like)
def test_fuzz_only_typed_errors_escape(value: Any) -> None:
    for check in (
        lambda: cl.validate_message(value),
        lambda: cl.validate_messages([value, {"role": "user", "content": "ok"}]),
        lambda: cl.validate_messages(value),
    ):
        try:
            check()
        except cl.ChatLedgerError as exc:
            assert str(exc)
