"""OpenAI-format windows to Anthropic's Messages API format.

Every expected value is written out by hand from the Anthropic Messages API reference (system
as a top-level string; user/assistant turns of content blocks; ``image`` sources ``base64`` /
``url``; ``tool_use`` with ``id``, ``name``, ``input``; ``tool_result`` with ``tool_use_id``
and ``content`` in a user turn, before any text; strict alternation), not computed by the code
under test.
"""

from __future__ import annotations

from typing import Any

import pytest

import chatledger as cl
from chatledger.integrations.anthropic import anthropic_tools, to_anthropic

PNG = (  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def call(cid: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": arguments}}


def test_text_turns_and_system() -> None:
    system, messages = to_anthropic(
        [
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            {"role": "user", "content": "Hello", "name": "alice"},
            {"role": "assistant", "content": "Bonjour"},
            {"role": "user", "content": "How are you?"},
        ]
    )
    assert system == "You are terse.\n\nAnswer in French."
    assert messages == [
        {"role": "user", "content": [{"type": "text", "text": "Hello"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Bonjour"}]},
        {"role": "user", "content": [{"type": "text", "text": "How are you?"}]},
    ]


def test_no_system_is_none() -> None:
    assert to_anthropic([{"role": "user", "content": "hi"}]) == (
        None,
        [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    )
    assert to_anthropic([]) == (None, [])


def test_images_data_url_and_http_url() -> None:
    _, messages = to_anthropic(
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in these?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "low"},
                    },
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                ],
            }
        ]
    )
    assert messages == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in these?"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                },
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
            ],
        }
    ]


def test_pdf_file_part_becomes_document() -> None:
    _, messages = to_anthropic(
        [
            {
                "role": "user",
                "content": [
                    {
                        "type": "file",
                        "file": {
                            "file_data": "data:application/pdf;base64,JVBERi0=",
                            "filename": "a.pdf",
                        },
                    },
                    {"type": "text", "text": "Summarise it."},
                ],
            }
        ]
    )
    assert messages == [
        {
            "role": "user",
            "content": [
                {
                    "type": "document",
                    "source": {
                        "type": "base64",
                        "media_type": "application/pdf",
                        "data": "JVBERi0=",
                    },
                },
                {"type": "text", "text": "Summarise it."},
            ],
        }
    ]


def test_tool_calls_and_parallel_results() -> None:
    system, messages = to_anthropic(
        [
            {"role": "user", "content": "Weather in Paris and Oslo?"},
            {
                "role": "assistant",
                "content": "Checking both.",
                "tool_calls": [
                    call("call_1", "get_weather", '{"city": "Paris"}'),
                    call("call_2", "get_weather", '{"city": "Oslo", "unit": "c"}'),
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18C, sunny"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "4C"}]},
            {"role": "assistant", "content": "Paris 18C, Oslo 4C."},
        ]
    )
    assert system is None
    assert messages == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Oslo?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking both."},
                {
                    "type": "tool_use",
                    "id": "call_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {
                    "type": "tool_use",
                    "id": "call_2",
                    "name": "get_weather",
                    "input": {"city": "Oslo", "unit": "c"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18C, sunny"},
                {
                    "type": "tool_result",
                    "tool_use_id": "call_2",
                    "content": [{"type": "text", "text": "4C"}],
                },
            ],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "Paris 18C, Oslo 4C."}]},
    ]


def test_tool_call_without_text_and_empty_arguments() -> None:
    _, messages = to_anthropic(
        [
            {"role": "user", "content": "Time?"},
            {"role": "assistant", "content": "", "tool_calls": [call("t1", "now", "")]},
            {"role": "tool", "tool_call_id": "t1", "content": ""},
        ]
    )
    assert messages == [
        {"role": "user", "content": [{"type": "text", "text": "Time?"}]},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t1", "name": "now", "input": {}}],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1"}]},
    ]


def test_user_message_after_tool_results_joins_their_turn_after_them() -> None:
    _, messages = to_anthropic(
        [
            {"role": "user", "content": "Look it up"},
            {"role": "assistant", "tool_calls": [call("c1", "search", '{"q": "x"}')]},
            {"role": "tool", "tool_call_id": "c1", "content": "found x"},
            {"role": "user", "content": "Thanks, and y?"},
        ]
    )
    assert messages[-1] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "c1", "content": "found x"},
            {"type": "text", "text": "Thanks, and y?"},
        ],
    }
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]


def test_consecutive_same_role_messages_are_merged() -> None:
    _, messages = to_anthropic(
        [
            {"role": "user", "content": "one"},
            {"role": "user", "content": "two"},
            {"role": "assistant", "content": "a"},
            {"role": "assistant", "content": "b"},
        ]
    )
    assert messages == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}],
        },
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
        },
    ]


def test_summary_and_mid_conversation_system_go_to_system() -> None:
    system, messages = to_anthropic(
        [
            {"role": "system", "content": "Be kind."},
            {"role": "system", "content": "Summary of earlier turns: the user likes tea."},
            {"role": "user", "content": "Recommend a drink."},
        ]
    )
    assert system == "Be kind.\n\nSummary of earlier turns: the user likes tea."
    assert messages == [
        {"role": "user", "content": [{"type": "text", "text": "Recommend a drink."}]}
    ]


def test_window_starting_with_assistant_is_left_as_is() -> None:
    _, messages = to_anthropic([{"role": "assistant", "content": "Earlier reply"}])
    assert messages == [
        {"role": "assistant", "content": [{"type": "text", "text": "Earlier reply"}]}
    ]


def test_refusal_and_empty_messages() -> None:
    _, messages = to_anthropic(
        [
            {"role": "user", "content": "Do something bad"},
            {"role": "assistant", "refusal": "I can't help with that."},
            {"role": "user", "content": ""},
        ]
    )
    assert messages == [
        {"role": "user", "content": [{"type": "text", "text": "Do something bad"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "I can't help with that."}]},
    ]


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (
            {
                "role": "user",
                "content": [
                    {"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}}
                ],
            },
            "input_audio",
        ),
        (
            {"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]},
            "file_data",
        ),
        (
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "data:image/png,raw"}}],
            },
            "base64",
        ),
        ({"role": "assistant", "tool_calls": [call("c", "f", "[1, 2]")]}, "JSON object"),
        (
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "c", "type": "custom", "custom": {"name": "f", "input": "x"}}
                ],
            },
            "custom",
        ),
        ({"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}}, "function_call"),
        ({"role": "function", "name": "f", "content": "x"}, "function"),
        (
            {
                "role": "system",
                "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}],
            },
            "system prompt",
        ),
    ],
)
def test_what_anthropic_cannot_carry_raises(message: dict[str, Any], error: str) -> None:
    with pytest.raises(cl.InvalidArgumentError, match=error):
        to_anthropic([message])


def test_converts_a_real_window(ledger: cl.Ledger, uid: str) -> None:
    conv = ledger.conversation(uid, system="You help with weather.")
    conv.extend(
        [
            {"role": "user", "content": "Paris?"},
            {"role": "assistant", "tool_calls": [call("w1", "get_weather", '{"city":"Paris"}')]},
            {"role": "tool", "tool_call_id": "w1", "content": "20C"},
            {"role": "assistant", "content": "20C in Paris."},
        ]
    )
    system, messages = to_anthropic(conv.window(cl.TokenBudget(2000)))
    assert system == "You help with weather."
    assert messages == [
        {"role": "user", "content": [{"type": "text", "text": "Paris?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "w1", "name": "get_weather", "input": {"city": "Paris"}}
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "w1", "content": "20C"}],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "20C in Paris."}]},
    ]


def test_anthropic_tools() -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather in a city.",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
                "strict": True,
            },
        },
        {"type": "function", "function": {"name": "now"}},
        {
            "type": "function",
            "name": "flat",
            "description": "Responses form.",
            "parameters": {"type": "object", "properties": {}},
        },
    ]
    assert anthropic_tools(tools) == [
        {
            "name": "get_weather",
            "description": "Current weather in a city.",
            "input_schema": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
        {"name": "now", "input_schema": {"type": "object", "properties": {}}},
        {
            "name": "flat",
            "description": "Responses form.",
            "input_schema": {"type": "object", "properties": {}},
        },
    ]
    assert anthropic_tools(None) == []
    with pytest.raises(cl.InvalidArgumentError, match="custom"):
        anthropic_tools([{"type": "custom", "custom": {"name": "x"}}])


def test_cache_breakpoints_on_the_stable_prefix() -> None:
    msgs: list[dict[str, Any]] = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "1"},
        {"role": "user", "content": "two"},
        {"role": "assistant", "content": "2"},
        {"role": "user", "content": "three"},
    ]
    system, turns = to_anthropic(msgs, cache=True)
    assert system == [
        {"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}
    ]
    marked = [
        (i, b["text"]) for i, t in enumerate(turns) for b in t["content"] if "cache_control" in b
    ]
    # the end of what the previous turn sent, and the end of this one: 3 of the API's 4
    assert marked == [(3, "2"), (4, "three")]
    # the same without cache: nothing marked, the system a string
    plain_system, plain = to_anthropic(msgs)
    assert plain_system == "You are terse."
    assert all("cache_control" not in b for t in plain for b in t["content"])
    # a one-turn window has one mark, and no system one when there is no system
    system, turns = to_anthropic([{"role": "user", "content": "hi"}], cache=True)
    assert system is None
    assert turns == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}],
        }
    ]
