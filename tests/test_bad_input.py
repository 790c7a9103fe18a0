"""Hostile and malformed input through the public API of both twins: every one is refused with
a typed error that names the problem, and the database is byte-for-byte unchanged afterwards."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

import chatledger as cl
from chatledger.store.schema import completions, conversations, messages, summaries
from twins import AnyConversation, AnyLedger, Opener

pytestmark = pytest.mark.twins

SQL = "x'); DROP TABLE chatledger_messages; --"
CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}


def deep(n: int) -> Any:
    value: Any = "bottom"
    for _ in range(n):
        value = [{"type": "text", "text": value}]
    return value


# (label, message) pairs: each must be refused by append() with InvalidMessageError
BAD_MESSAGES: list[tuple[str, Any]] = [
    ("not a dict", "hello"),
    ("a number", 42),
    ("None", None),
    ("a list", [{"role": "user", "content": "x"}]),
    ("no role", {"content": "x"}),
    ("unknown role", {"role": "root", "content": "x"}),
    ("role not a string", {"role": 1, "content": "x"}),
    ("role with SQL", {"role": SQL, "content": "x"}),
    ("no content", {"role": "user"}),
    ("content a number", {"role": "user", "content": 3.5}),
    ("content NaN", {"role": "user", "content": math.nan}),
    ("content bytes", {"role": "user", "content": b"bytes"}),
    ("content a dict", {"role": "user", "content": {"text": "x"}}),
    ("empty parts", {"role": "user", "content": []}),
    ("NUL byte", {"role": "user", "content": "a\x00b"}),
    ("lone surrogate", {"role": "user", "content": "a\ud83db"}),
    ("lone low surrogate", {"role": "user", "content": "\udc00"}),
    ("NUL in name", {"role": "user", "content": "x", "name": "a\x00"}),
    ("space in name", {"role": "user", "content": "x", "name": "two words"}),
    ("slash in name", {"role": "user", "content": "x", "name": "a/b"}),
    ("name too long", {"role": "user", "content": "x", "name": "n" * 65}),
    ("name SQL", {"role": "user", "content": "x", "name": SQL}),
    ("unknown field", {"role": "user", "content": "x", "extra": 1}),
    ("tool_call_id on user", {"role": "user", "content": "x", "tool_call_id": "c"}),
    ("tool_calls on user", {"role": "user", "content": "x", "tool_calls": [CALL]}),
    ("part not a dict", {"role": "user", "content": ["text"]}),
    ("part unknown type", {"role": "user", "content": [{"type": "video", "url": "x"}]}),
    ("part missing text", {"role": "user", "content": [{"type": "text"}]}),
    ("part text NaN", {"role": "user", "content": [{"type": "text", "text": math.nan}]}),
    ("deeply nested parts", {"role": "user", "content": deep(50)}),
    (
        "image url scheme",
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "javascript:alert(1)"}}],
        },
    ),
    (
        "image detail",
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "https://x.test/a.png", "detail": "max"}}
            ],
        },
    ),
    (
        "image extra key",
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "https://x.test/a.png", "x": 1}}
            ],
        },
    ),
    (
        "audio format",
        {
            "role": "user",
            "content": [{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "flac"}}],
        },
    ),
    ("file without data or id", {"role": "user", "content": [{"type": "file", "file": {}}]}),
    (
        "image part on system",
        {
            "role": "system",
            "content": [{"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}],
        },
    ),
    ("refusal part on user", {"role": "user", "content": [{"type": "refusal", "refusal": "no"}]}),
    ("assistant empty", {"role": "assistant"}),
    ("tool_calls not a list", {"role": "assistant", "tool_calls": CALL}),
    ("tool_calls empty", {"role": "assistant", "tool_calls": []}),
    (
        "tool call no id",
        {
            "role": "assistant",
            "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{}"}}],
        },
    ),
    ("tool call empty id", {"role": "assistant", "tool_calls": [{**CALL, "id": ""}]}),
    ("tool call bad type", {"role": "assistant", "tool_calls": [{**CALL, "type": "shell"}]}),
    (
        "tool call bad name",
        {
            "role": "assistant",
            "tool_calls": [{**CALL, "function": {"name": "rm -rf", "arguments": "{}"}}],
        },
    ),
    (
        "tool call args not JSON",
        {
            "role": "assistant",
            "tool_calls": [{**CALL, "function": {"name": "f", "arguments": "{'a': 1}"}}],
        },
    ),
    (
        "tool call args truncated",
        {
            "role": "assistant",
            "tool_calls": [{**CALL, "function": {"name": "f", "arguments": '{"a": '}}],
        },
    ),
    (
        "tool call args a dict",
        {
            "role": "assistant",
            "tool_calls": [{**CALL, "function": {"name": "f", "arguments": {"a": 1}}}],
        },
    ),
    ("duplicate tool call ids", {"role": "assistant", "tool_calls": [CALL, CALL]}),
    (
        "function_call args bad",
        {"role": "assistant", "function_call": {"name": "f", "arguments": "nope"}},
    ),
    ("audio without id", {"role": "assistant", "audio": {}}),
    ("refusal a number", {"role": "assistant", "refusal": 1}),
    ("tool without id", {"role": "tool", "content": "x"}),
    ("tool id a number", {"role": "tool", "tool_call_id": 5, "content": "x"}),
    ("orphan tool result", {"role": "tool", "tool_call_id": "c1", "content": "x"}),
    ("tool result SQL id", {"role": "tool", "tool_call_id": SQL, "content": "x"}),
    ("function without name", {"role": "function", "content": "x"}),
    (
        "function content parts",
        {"role": "function", "name": "f", "content": [{"type": "text", "text": "x"}]},
    ),
    ("too large", {"role": "user", "content": "x" * 70_000}),
    ("too large in parts", {"role": "user", "content": [{"type": "text", "text": "y" * 70_000}]}),
]


def snapshot(ledger: AnyLedger) -> list[list[tuple[Any, ...]]]:
    """Every row of every chatledger table, in key order."""
    with ledger.engine.connect() as conn:
        return [
            [tuple(r) for r in conn.execute(select(t).order_by(*t.primary_key.columns))]
            for t in (conversations, messages, summaries, completions)
        ]


@pytest.fixture
def small(open_ledger: Opener, db_url: str) -> AnyLedger:
    return open_ledger(db_url, max_message_bytes=64_000)


def test_corpus_is_big_enough() -> None:
    assert len(BAD_MESSAGES) + len(BAD_CALLS) >= 60


@pytest.mark.parametrize(("label", "message"), BAD_MESSAGES, ids=[b[0] for b in BAD_MESSAGES])
def test_bad_message_is_refused_and_nothing_written(
    small: AnyLedger, uid: str, label: str, message: Any
) -> None:
    conv = small.conversation(f"bad-{uid}", owner="tenant", system="sys")
    conv.append({"role": "user", "content": "a good message"})
    before = snapshot(small)
    with pytest.raises(cl.InvalidMessageError) as info:
        conv.append(message)
    problem = info.value.problems[0]
    assert problem.rule and str(problem) in str(info.value)
    with pytest.raises(cl.InvalidMessageError):
        conv.extend([{"role": "user", "content": "fine"}, message])  # atomic: none stored
    assert snapshot(small) == before, label


def _pending(conv: AnyConversation) -> None:
    conv.append({"role": "user", "content": "q"})
    conv.append({"role": "assistant", "tool_calls": [CALL]})


# (label, call, expected error): calls other than append that must refuse bad input
BAD_CALLS: list[tuple[str, Callable[[AnyLedger, AnyConversation], Any], type[Exception]]] = [
    ("id empty", lambda led, c: led.conversation(""), cl.InvalidArgumentError),
    ("id too long", lambda led, c: led.conversation("i" * 256), cl.InvalidArgumentError),
    ("id with newline", lambda led, c: led.conversation("a\nb"), cl.InvalidArgumentError),
    ("id with NUL", lambda led, c: led.conversation("a\x00b"), cl.InvalidArgumentError),
    ("id trailing space", lambda led, c: led.conversation("abc "), cl.InvalidArgumentError),
    ("id not a string", lambda led, c: led.conversation(123), cl.InvalidArgumentError),
    ("id lone surrogate", lambda led, c: led.conversation("a\ud800"), cl.InvalidArgumentError),
    ("owner SQL", lambda led, c: led.conversation("x", owner=SQL + " "), cl.InvalidArgumentError),
    (
        "owner quote",
        lambda led, c: led.get(c.id, owner="' OR '1'='1"),
        cl.ConversationNotFoundError,
    ),
    ("owner wildcard", lambda led, c: led.get(c.id, owner="%"), cl.ConversationNotFoundError),
    (
        "owner of another",
        lambda led, c: led.delete(c.id, owner="someone"),
        cl.ConversationNotFoundError,
    ),
    ("model empty", lambda led, c: led.conversation("m", model=""), cl.InvalidArgumentError),
    (
        "metadata NaN",
        lambda led, c: led.conversation("m", metadata={"x": math.nan}),
        cl.InvalidArgumentError,
    ),
    (
        "metadata not a dict",
        lambda led, c: led.conversation("m", metadata=[1]),
        cl.InvalidArgumentError,
    ),
    (
        "message metadata object",
        lambda led, c: c.append({"role": "user", "content": "x"}, metadata={"o": object()}),
        cl.InvalidArgumentError,
    ),
    (
        "idempotency key empty",
        lambda led, c: c.append({"role": "user", "content": "x"}, idempotency_key=""),
        cl.InvalidArgumentError,
    ),
    ("system NUL", lambda led, c: led.conversation("s", system="a\x00"), cl.InvalidMessageError),
    ("range negative", lambda led, c: c.messages(start=-5), cl.InvalidArgumentError),
    ("limit huge", lambda led, c: led.conversations(limit=10**9), cl.InvalidArgumentError),
    (
        "message after pending calls",
        lambda led, c: (_pending(c), c.append({"role": "user", "content": "x"})),
        cl.InvalidMessageError,
    ),
    ("temperature", lambda led, c: c.request(temperature=9), cl.InvalidParameterError),
    ("unknown param", lambda led, c: c.request(temprature=1), cl.InvalidParameterError),
    (
        "tool name",
        lambda led, c: c.request(tools=[{"type": "function", "function": {"name": "bad name"}}]),
        cl.InvalidParameterError,
    ),
    ("record garbage", lambda led, c: c.record("not a completion"), cl.InvalidArgumentError),
    (
        "record missing choice",
        lambda led, c: c.record(
            {
                "id": "r",
                "model": "m",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}}],
            },
            choice=3,
        ),
        cl.InvalidArgumentError,
    ),
]


@pytest.mark.parametrize(("label", "call", "error"), BAD_CALLS, ids=[b[0] for b in BAD_CALLS])
def test_bad_call_is_refused_and_nothing_written(
    small: AnyLedger,
    uid: str,
    label: str,
    call: Callable[[AnyLedger, AnyConversation], Any],
    error: type[Exception],
) -> None:
    conv = small.conversation(f"call-{uid}", owner="tenant", system="sys")
    if label == "message after pending calls":
        _pending(conv)
        call = lambda led, c: c.append({"role": "user", "content": "x"})  # noqa: E731
    before = snapshot(small)
    with pytest.raises(error) as info:
        call(small, conv)
    assert isinstance(info.value, cl.ChatLedgerError)
    assert str(info.value)
    assert snapshot(small) == before, label
