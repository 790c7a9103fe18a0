"""Code as a user writes it, checked by ``mypy --strict`` in tests/test_typing.py.

Lines ending in ``# type: ignore[...]`` are wrong uses: mypy must flag each one (an ignore
that suppresses nothing is itself an error under --strict), so the test fails if the library's
types stop catching them.
"""

from __future__ import annotations

from typing import Any, assert_type

from openai import AsyncOpenAI, AsyncStream, OpenAI, Stream
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessageParam
from openai.types.responses import ResponseStreamEvent

import chatledger as cl
from chatledger.streaming import AsyncStreamRecorder, StreamRecorder

Messages = list[ChatCompletionMessageParam]


def sync_turn(ledger: cl.Ledger, client: OpenAI) -> str | None:
    conv = ledger.conversation("support-1", system="Be brief.", model="gpt-4o")
    conv.append({"role": "user", "content": "Where is my order?"})

    # the window goes straight to the SDK
    messages = conv.window(cl.TokenBudget(4000))
    assert_type(messages, Messages)
    response = client.chat.completions.create(model="gpt-4o", messages=messages)
    conv.record(response)
    response = client.chat.completions.create(
        model="gpt-4o", messages=conv.window([cl.LastRounds(5), cl.TokenBudget(4000)])
    )

    explained = conv.window(explain=True)
    assert_type(explained, cl.Window)
    assert_type(explained.prompt_tokens, int)
    flag: bool = len(messages) > 3
    assert_type(conv.window(explain=flag), Messages | cl.Window)

    reply = conv.chat(client, "And the refund?", max_tokens=200)
    assert_type(reply, ChatCompletion)
    streamed = conv.chat(client, "Tell me more.", stream=True)
    assert_type(streamed, StreamRecorder[ChatCompletionChunk])
    with streamed as chunks:
        for chunk in chunks:
            assert_type(chunk, ChatCompletionChunk)
    if streamed.record is not None:
        assert_type(streamed.record, cl.Recorded)
    again = conv.regenerate(client)
    assert_type(again, ChatCompletion)

    # the Responses API: kwargs for responses.create, the Response and its events recorded
    kwargs = conv.responses_request(cl.TokenBudget(4000), instructions=True, store=False)
    assert_type(kwargs, dict[str, Any])
    assert_type(conv.record(client.responses.create(**kwargs)), cl.Recorded)
    # (**kwargs makes the SDK's overloads answer Any: the stream's type is said once)
    stream: Stream[ResponseStreamEvent] = client.responses.create(**kwargs, stream=True)
    with conv.stream_response(stream) as events:
        for event in events:
            assert_type(event, ResponseStreamEvent)

    # wrong uses
    client.chat.completions.create(model="gpt-4o", messages=explained)  # type: ignore[call-overload]
    _ = events.output_text  # type: ignore[attr-defined]
    _ = conv.chat(client, "x").choices[0].delta  # type: ignore[attr-defined]
    _ = conv.chat(client, "x", stream=True).choices  # type: ignore[attr-defined]
    return reply.choices[0].message.content


async def async_turn(ledger: cl.AsyncLedger, client: AsyncOpenAI) -> str | None:
    conv = await ledger.conversation("support-2", system="Be brief.")
    await conv.append({"role": "user", "content": "Where is my order?"})

    messages = await conv.window(cl.TokenBudget(4000))
    assert_type(messages, Messages)
    response = await client.chat.completions.create(model="gpt-4o", messages=messages)
    await conv.record(response)

    explained = await conv.window(explain=True)
    assert_type(explained, cl.Window)

    reply = await conv.chat(client, "And the refund?")
    assert_type(reply, ChatCompletion)
    streamed = await conv.chat(client, "More.", stream=True)
    assert_type(streamed, AsyncStreamRecorder[ChatCompletionChunk])
    async with streamed as chunks:
        async for chunk in chunks:
            assert_type(chunk, ChatCompletionChunk)
    assert_type(await conv.regenerate(client, stream=False), ChatCompletion)

    kwargs = await conv.responses_request(include=["reasoning.encrypted_content"])
    assert_type(await conv.record(await client.responses.create(**kwargs)), cl.Recorded)
    stream: AsyncStream[ResponseStreamEvent] = await client.responses.create(**kwargs, stream=True)
    async with conv.stream_response(stream) as events:
        async for event in events:
            assert_type(event, ResponseStreamEvent)

    # wrong uses
    await client.chat.completions.create(model="gpt-4o", messages=explained)  # type: ignore[call-overload]
    await client.chat.completions.create(model="gpt-4o", messages=conv.window())  # type: ignore[call-overload]
    return reply.choices[0].message.content
