"""The fake OpenAI server speaks the API well enough for the real SDK, sync and async.

If these pass, a failure elsewhere in a test using ``FakeOpenAI`` is about chatledger, not about
the fake: every response here is parsed by the SDK's own models, SSE decoder and error mapping.
"""

from __future__ import annotations

import asyncio
import gc
import json
import threading
import time
import urllib.error
import urllib.request
import warnings
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessageParam

from openai_server import FakeOpenAI, Reply, Usage, fake_prompt_tokens

MODEL = "gpt-4o-mini"
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi there"}]
WEATHER_CALL = {"id": "call_w1", "name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}


def async_client(server: FakeOpenAI) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.url, api_key="test", max_retries=0)


def chunks_of(client: openai.OpenAI, **kwargs: Any) -> list[ChatCompletionChunk]:
    stream = client.chat.completions.create(model=MODEL, messages=HELLO, stream=True, **kwargs)
    with stream:
        return list(stream)


# -- plain replies ---------------------------------------------------------------------------


def test_plain_reply_is_a_full_chat_completion(server: FakeOpenAI, client: openai.OpenAI) -> None:
    server.queue(Reply(content="Hello! How can I help?"))
    completion = client.chat.completions.create(model=MODEL, messages=HELLO, temperature=0)

    assert isinstance(completion, ChatCompletion)
    assert completion.id.startswith("chatcmpl-")
    assert completion.object == "chat.completion"
    assert completion.model == MODEL
    assert completion.system_fingerprint
    [choice] = completion.choices
    assert choice.index == 0
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content == "Hello! How can I help?"
    assert choice.message.tool_calls is None
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens == fake_prompt_tokens({"messages": HELLO}) == 2 + 3
    assert usage.completion_tokens == 5
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert server.requests == [{"model": MODEL, "messages": HELLO, "temperature": 0}]
    assert server.log[-1].headers["authorization"] == "Bearer test"
    assert server.pending == 0


def test_default_reply_echoes_the_last_user_message(
    server: FakeOpenAI, client: openai.OpenAI
) -> None:
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ],
        },
    ]
    completion = client.chat.completions.create(model=MODEL, messages=messages)

    assert completion.choices[0].message.content == "echo: what is [image_url]"
    assert completion.usage is not None
    # fake count: words of every message + 3 per message
    assert completion.usage.prompt_tokens == (2 + 1 + 1 + 3) + 4 * 3
    assert completion.usage.completion_tokens == 4


def test_queue_then_responder_then_echo(server: FakeOpenAI, client: openai.OpenAI) -> None:
    server.queue("one", Reply(content="two"))
    texts = [client.chat.completions.create(model=MODEL, messages=HELLO) for _ in range(2)]
    server.responder = lambda body: f"{body['model']} answers {len(body['messages'])}"
    texts.append(client.chat.completions.create(model="gpt-4o", messages=HELLO))
    server.responder = None
    texts.append(client.chat.completions.create(model=MODEL, messages=HELLO))

    contents = [c.choices[0].message.content for c in texts]
    assert contents == ["one", "two", "gpt-4o answers 1", "echo: hi there"]


def test_usage_overrides(server: FakeOpenAI, client: openai.OpenAI) -> None:
    server.prompt_tokens = 1234
    first = client.chat.completions.create(model=MODEL, messages=HELLO)
    server.prompt_tokens = lambda body: 10 * len(body["messages"])
    second = client.chat.completions.create(model=MODEL, messages=HELLO)
    server.queue(
        Reply(content="a b", usage=Usage(prompt_tokens=7, cached_tokens=4, reasoning_tokens=30))
    )
    third = client.chat.completions.create(model=MODEL, messages=HELLO)

    assert first.usage is not None and first.usage.prompt_tokens == 1234
    assert second.usage is not None and second.usage.prompt_tokens == 10
    usage = third.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (7, 32, 39)
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 4
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 30


def test_tool_calls(server: FakeOpenAI, client: openai.OpenAI) -> None:
    server.queue(Reply(tool_calls=[WEATHER_CALL, {"name": "get_time", "arguments": "{}"}]))
    completion = client.chat.completions.create(model=MODEL, messages=HELLO)

    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 2
    first, second = calls
    assert first.type == "function" and second.type == "function"
    assert first.id == "call_w1"
    assert first.function.name == "get_weather"
    assert json.loads(first.function.arguments) == {"city": "Paris", "unit": "c"}
    assert second.id.startswith("call_") and second.function.name == "get_time"

    # the assistant turn and its tool results, sent back the way a client library does
    follow_up: list[ChatCompletionMessageParam] = [
        *HELLO,
        choice.message.model_dump(exclude_none=True),  # type: ignore[list-item]
        {"role": "tool", "tool_call_id": first.id, "content": "18 C"},
        {"role": "tool", "tool_call_id": second.id, "content": "noon"},
    ]
    answer = client.chat.completions.create(model=MODEL, messages=follow_up)
    assert answer.choices[0].message.content == "echo: hi there"
    assert server.last_request["messages"][1]["tool_calls"][0]["id"] == "call_w1"


def test_n_choices(server: FakeOpenAI, client: openai.OpenAI) -> None:
    server.queue("same", Reply(content=["left", "right"]))
    suffixed = client.chat.completions.create(model=MODEL, messages=HELLO, n=2)
    listed = client.chat.completions.create(model=MODEL, messages=HELLO, n=2)

    assert [c.index for c in suffixed.choices] == [0, 1]
    assert [c.message.content for c in suffixed.choices] == ["same", "same [1]"]
    assert [c.message.content for c in listed.choices] == ["left", "right"]
    assert listed.usage is not None and listed.usage.completion_tokens == 2


def test_finish_reasons_and_refusal(server: FakeOpenAI, client: openai.OpenAI) -> None:
    server.queue(
        Reply(content="cut sh", finish_reason="length"),
        Reply(content=None, finish_reason="content_filter"),
        Reply(refusal="I can't help with that."),
    )
    length, filtered, refused = (
        client.chat.completions.create(model=MODEL, messages=HELLO) for _ in range(3)
    )
    assert length.choices[0].finish_reason == "length"
    assert filtered.choices[0].finish_reason == "content_filter"
    assert filtered.choices[0].message.content is None
    assert refused.choices[0].message.refusal == "I can't help with that."
    assert refused.choices[0].message.content is None


def test_reply_knobs(server: FakeOpenAI, client: openai.OpenAI) -> None:
    server.queue(
        Reply(content="x", choices=3, omit_usage=True),
        Reply(content="slow stream here", chunk_delay=0.05),
    )
    three = client.chat.completions.create(model=MODEL, messages=HELLO)
    assert [c.message.content for c in three.choices] == ["x", "x [1]", "x [2]"]
    assert three.usage is None

    started = time.monotonic()
    chunks = chunks_of(client)
    assert len(chunks) == 5  # role, three words, finish
    assert time.monotonic() - started >= 4 * 0.05


# -- streaming -------------------------------------------------------------------------------


def test_stream_content(server: FakeOpenAI, client: openai.OpenAI) -> None:
    server.queue(Reply(content="The quick brown fox jumps."))
    chunks = chunks_of(client)

    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert all(c.usage is None for c in chunks)
    deltas = [c.choices[0].delta for c in chunks]
    assert deltas[0].role == "assistant"
    pieces = [d.content for d in deltas if d.content]
    assert len(pieces) == 5
    assert "".join(pieces) == "The quick brown fox jumps."
    assert [c.choices[0].finish_reason for c in chunks][-2:] == [None, "stop"]


def test_stream_tool_call_deltas(server: FakeOpenAI, client: openai.OpenAI) -> None:
    server.queue(Reply(tool_calls=[WEATHER_CALL, {"name": "get_time"}]))
    chunks = chunks_of(client)

    calls: dict[int, dict[str, str]] = {}
    argument_deltas = 0
    for chunk in chunks:
        for delta in chunk.choices[0].delta.tool_calls or []:
            call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            if delta.id:
                assert not call["id"], "id only in the first delta of a call"
                call["id"] = delta.id
            if delta.function and delta.function.name:
                call["name"] = delta.function.name
            if delta.function and delta.function.arguments:
                call["arguments"] += delta.function.arguments
                argument_deltas += delta.index == 0
    assert argument_deltas > 1
    assert calls[0]["id"] == "call_w1" and calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris", "unit": "c"}
    assert calls[1]["name"] == "get_time" and json.loads(calls[1]["arguments"]) == {}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_stream_helper_reassembles_n_choices_with_usage(
    server: FakeOpenAI, client: openai.OpenAI
) -> None:
    """The SDK's own accumulator agrees with the non-streamed shape (interleaved choices)."""
    server.queue(Reply(content="two words", tool_calls=[WEATHER_CALL]))
    with client.chat.completions.stream(
        model=MODEL, messages=HELLO, n=2, stream_options={"include_usage": True}
    ) as stream:
        final = stream.get_final_completion()

    assert [c.message.content for c in final.choices] == ["two words", "two words [1]"]
    for choice in final.choices:
        assert choice.finish_reason == "tool_calls"
        [call] = choice.message.tool_calls or []
        assert json.loads(call.function.arguments) == {"city": "Paris", "unit": "c"}
    assert final.usage is not None and final.usage.prompt_tokens == 5


def test_stream_include_usage(server: FakeOpenAI, client: openai.OpenAI) -> None:
    server.queue(Reply(content="a b c", usage=Usage(prompt_tokens=11)))
    chunks = chunks_of(client, stream_options={"include_usage": True})

    *body, last = chunks
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (11, 3)
    assert all(c.usage is None and len(c.choices) == 1 for c in body)


def test_broken_stream_raises_during_iteration(server: FakeOpenAI, client: openai.OpenAI) -> None:
    server.queue(Reply(content="one two three four five", break_stream_after=3))
    received: list[ChatCompletionChunk] = []
    stream = client.chat.completions.create(model=MODEL, messages=HELLO, stream=True)
    with pytest.raises(openai.APIConnectionError), stream:
        received.extend(stream)
    assert len(received) == 3
    # the server is fine afterwards
    assert client.chat.completions.create(model=MODEL, messages=HELLO).choices[0].message.content


# -- errors ----------------------------------------------------------------------------------


def test_scripted_400_carries_param_and_code(server: FakeOpenAI, client: openai.OpenAI) -> None:
    server.queue(
        Reply.api_error(
            400, "Invalid 'temperature': too high.", param="temperature", code="invalid_value"
        )
    )
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=HELLO, temperature=9)
    error = caught.value
    assert error.status_code == 400
    assert error.param == "temperature"
    assert error.code == "invalid_value"
    assert error.type == "invalid_request_error"
    assert "too high" in error.message


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": HELLO}, "model"),
        ({"model": MODEL}, "messages"),
        ({"model": MODEL, "messages": []}, "messages"),
        ({"model": MODEL, "messages": [{"content": "no role"}]}, "messages[0].role"),
        ({"model": MODEL, "messages": HELLO, "n": 0}, "n"),
        (
            {"model": MODEL, "messages": HELLO, "stream_options": {"include_usage": True}},
            "stream_options",
        ),
    ],
)
def test_request_validation(
    server: FakeOpenAI, client: openai.OpenAI, body: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.post("/chat/completions", body=body, cast_to=ChatCompletion)
    assert caught.value.param == param
    assert server.requests == [body]


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([{"role": "tool", "tool_call_id": "call_x", "content": "orphan"}], "messages.[0].role"),
        (
            [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "tool_calls": [{"id": "call_a"}, {"id": "call_b"}]},
                {"role": "tool", "tool_call_id": "call_a", "content": "only one answer"},
                {"role": "user", "content": "next"},
            ],
            "messages.[1].role",
        ),
        (
            [
                {"role": "assistant", "tool_calls": [{"id": "call_a"}]},
                {"role": "tool", "tool_call_id": "call_zzz", "content": "wrong id"},
            ],
            "messages.[1].tool_call_id",
        ),
    ],
)
def test_tool_messages_must_pair_with_tool_calls(
    client: openai.OpenAI, messages: list[dict[str, Any]], param: str
) -> None:
    """As the real API does: a window cut between a call and its results is rejected."""
    with pytest.raises(openai.BadRequestError) as caught:
        client.post(
            "/chat/completions", body={"model": MODEL, "messages": messages}, cast_to=object
        )
    assert caught.value.param == param


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (401, openai.AuthenticationError),
        (404, openai.NotFoundError),
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
        (503, openai.InternalServerError),
    ],
)
def test_status_errors(
    server: FakeOpenAI, client: openai.OpenAI, status: int, error_type: type[openai.APIStatusError]
) -> None:
    server.queue(Reply(status=status, headers={"x-request-id": "req_123"}))
    with pytest.raises(error_type) as caught:
        client.chat.completions.create(model=MODEL, messages=HELLO)
    assert caught.value.status_code == status
    assert caught.value.request_id == "req_123"


def test_rate_limit_body(server: FakeOpenAI, client: openai.OpenAI) -> None:
    server.queue(
        Reply.api_error(429, "Rate limit reached for requests", headers={"retry-after": "1"})
    )
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model=MODEL, messages=HELLO)
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.response.headers["retry-after"] == "1"


def test_delay_and_client_timeout(server: FakeOpenAI, client: openai.OpenAI) -> None:
    server.queue(Reply(content="too late", delay=5.0))
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model=MODEL, messages=HELLO, timeout=0.2)
    assert time.monotonic() - started < 2
    # the sleeping reply does not block others, and close() wakes it (fixture teardown)
    assert client.chat.completions.create(model=MODEL, messages=HELLO).choices[0].message.content


def test_models_and_unknown_paths(server: FakeOpenAI, client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == list(server.models)
    assert client.models.retrieve("gpt-4o").id == "gpt-4o"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")
    with pytest.raises(openai.NotFoundError) as caught:
        client.post("/embeddings", body={"model": "x", "input": "y"}, cast_to=object)
    assert "Invalid URL (POST /v1/embeddings)" in caught.value.message


def test_invalid_json_body(server: FakeOpenAI) -> None:
    request = urllib.request.Request(
        server.url + "/chat/completions", data=b"{not json", method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=5)
    with caught.value as response:
        assert response.status == 400
        assert "could not parse the JSON body" in json.load(response)["error"]["message"]
    assert server.requests == []
    assert server.log[-1].body == b"{not json"


def test_api_key_checked_when_set() -> None:
    with (
        FakeOpenAI(api_key="sk-right") as server,
        openai.OpenAI(base_url=server.url, api_key="sk-wrong", max_retries=0) as client,
    ):
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model=MODEL, messages=HELLO)
        client.api_key = "sk-right"
        assert client.chat.completions.create(model=MODEL, messages=HELLO).choices


def test_server_side_failure_is_a_500_and_reraised_on_exit() -> None:
    """A bug in a test's responder must not pass silently as some client-side error."""

    def responder(body: dict[str, Any]) -> Reply:
        raise KeyError("oops")

    with pytest.raises(AssertionError, match="oops"):  # noqa: SIM117 (the exit is what raises)
        with (
            FakeOpenAI() as server,
            openai.OpenAI(base_url=server.url, api_key="test", max_retries=0) as client,
        ):
            server.responder = responder
            with pytest.raises(openai.InternalServerError, match="FakeOpenAI failed"):
                client.chat.completions.create(model=MODEL, messages=HELLO)


# -- async -----------------------------------------------------------------------------------


async def test_async_client_plain_stream_and_concurrency() -> None:
    with FakeOpenAI() as server:
        async with async_client(server) as client:
            server.queue(Reply(content="async hello"))
            completion = await client.chat.completions.create(model=MODEL, messages=HELLO)
            assert completion.choices[0].message.content == "async hello"

            server.queue(Reply(content="streamed over async", tool_calls=[WEATHER_CALL]))
            stream = await client.chat.completions.create(
                model=MODEL,
                messages=HELLO,
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = [chunk async for chunk in stream]
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert text == "streamed over async"
            assert chunks[-1].usage is not None

            # requests are served concurrently: five 0.3 s replies take well under 1.5 s
            server.queue(*(Reply(content=str(i), delay=0.3) for i in range(5)))
            started = time.monotonic()
            answers = await asyncio.gather(
                *(client.chat.completions.create(model=MODEL, messages=HELLO) for _ in range(5))
            )
            assert time.monotonic() - started < 1.2
            assert sorted(a.choices[0].message.content or "" for a in answers) == list("01234")


async def test_async_errors_timeout_and_broken_stream() -> None:
    with FakeOpenAI() as server:
        async with async_client(server) as client:
            server.queue(Reply.api_error(400, "bad", param="messages"))
            with pytest.raises(openai.BadRequestError) as caught:
                await client.chat.completions.create(model=MODEL, messages=HELLO)
            assert caught.value.param == "messages"

            server.queue(Reply(delay=5.0))
            with pytest.raises(openai.APITimeoutError):
                await client.chat.completions.create(model=MODEL, messages=HELLO, timeout=0.2)

            server.queue(Reply(content="a b c d", break_stream_after=2))
            stream = await client.chat.completions.create(model=MODEL, messages=HELLO, stream=True)
            received = []
            with pytest.raises(openai.APIConnectionError):
                async for chunk in stream:
                    received.append(chunk)
            assert len(received) == 2


# -- lifecycle -------------------------------------------------------------------------------


def test_many_servers_shut_down_cleanly() -> None:
    """Closing joins every thread and socket, even with a client still holding keep-alives."""
    gc.collect()
    before = set(threading.enumerate())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        servers = [FakeOpenAI() for _ in range(10)]
        assert len({s.port for s in servers}) == 10
        with openai.OpenAI(base_url=servers[0].url, api_key="test", max_retries=0) as client:
            for server in servers:
                client.base_url = server.url  # keep-alive connections to earlier servers stay
                assert client.chat.completions.create(model=MODEL, messages=HELLO).choices
            servers[-1].queue(Reply(delay=30))  # a handler still sleeping when closed
            with pytest.raises(openai.APITimeoutError):
                client.chat.completions.create(model=MODEL, messages=HELLO, timeout=0.2)
            started = time.monotonic()
            for server in servers:
                server.close()
                server.close()  # idempotent
            assert time.monotonic() - started < 3
        gc.collect()
    assert set(threading.enumerate()) <= before
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
