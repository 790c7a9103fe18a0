"""The fake server's prompt cache reports ``cached_tokens`` the way OpenAI's does.

Every figure here goes through the real SDK: what a window strategy's test reads from
``usage.prompt_tokens_details.cached_tokens`` is what these tests pin down.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam
from openai.types.completion_usage import CompletionUsage

from fake_prompt_cache import (
    CACHE_MIN_TOKENS,
    CACHE_STEP_TOKENS,
    PromptCache,
    fake_prompt_sequence,
    reported_cached_tokens,
)
from openai_server import FakeOpenAI, Reply, Usage, fake_prompt_tokens

MODEL = "gpt-4o-mini"
Messages = list[ChatCompletionMessageParam]


def words(count: int, tag: str) -> str:
    """``count`` distinct words: ``count`` fake tokens."""
    return " ".join(f"{tag}{i}" for i in range(count))


def chat(system: str, *turns: str) -> Messages:
    """A system prompt, then user and assistant turns alternating."""
    messages: Messages = [{"role": "system", "content": system}]
    for i, text in enumerate(turns):
        messages.append(
            {"role": "user", "content": text}
            if i % 2 == 0
            else {"role": "assistant", "content": text}
        )
    return messages


def usage_of(client: openai.OpenAI, messages: Messages, **kwargs: Any) -> CompletionUsage:
    completion = client.chat.completions.create(model=MODEL, messages=messages, **kwargs)
    usage: CompletionUsage | None = completion.usage
    assert usage is not None
    return usage


def cached(usage: CompletionUsage) -> int:
    assert usage.prompt_tokens_details is not None
    cached_tokens = usage.prompt_tokens_details.cached_tokens
    assert cached_tokens is not None
    return cached_tokens


@pytest.fixture
def caching(server: FakeOpenAI) -> Iterator[FakeOpenAI]:
    server.prompt_cache = PromptCache()
    yield server


# -- the rule --------------------------------------------------------------------------------


def test_reported_tokens_are_128_steps_from_1024() -> None:
    assert (CACHE_MIN_TOKENS, CACHE_STEP_TOKENS) == (1024, 128)
    assert [reported_cached_tokens(n) for n in (0, 1023, 1024, 1151, 1152, 2003)] == [
        0,
        0,
        1024,
        1024,
        1152,
        1920,
    ]


REFERENCE_BODIES: list[Mapping[str, Any]] = [
    {"messages": [{"role": "user", "content": "hi there"}]},
    {"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": None}]},
    {
        "messages": [
            {"role": "developer", "content": "  be\tbrief \n"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
                    "a loose part",
                ],
            },
            {
                "role": "assistant",
                "content": [{"type": "refusal", "refusal": "no can do"}],
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather"}}],
    },
    {"messages": [{"role": "user", "content": 42}, "not a message"]},
]


def reference_count(body: Mapping[str, Any]) -> int:
    """The fake count as documented: words of each message's text and tool calls, plus 3."""
    total = 0
    for message in body["messages"]:
        if not isinstance(message, Mapping):
            continue
        content = message.get("content")
        if isinstance(content, list):
            texts = [
                str(p.get(p["type"], "")) if p["type"] in ("text", "refusal") else f"[{p['type']}]"
                for p in content
                if isinstance(p, Mapping)
            ] + [str(p) for p in content if not isinstance(p, Mapping)]
            text = " ".join(texts)
        else:
            text = "" if content is None else str(content)
        total += 3 + len(text.split())
        for call in message.get("tool_calls") or []:
            total += len(call["function"]["name"].split())
            total += len(call["function"]["arguments"].split())
    return total


@pytest.mark.parametrize("body", REFERENCE_BODIES)
def test_the_cache_compares_exactly_the_tokens_prompt_tokens_counts(
    body: Mapping[str, Any],
) -> None:
    assert len(fake_prompt_sequence(body)) == fake_prompt_tokens(body) == reference_count(body)


def test_what_the_model_sees_but_the_count_leaves_out_still_breaks_the_prefix() -> None:
    base = dict(REFERENCE_BODIES[2])
    variants: list[dict[str, Any]] = [
        {**base, "tools": []},
        {**base, "response_format": {"type": "json_object"}},
        {**base, "messages": [*base["messages"][:3], {**base["messages"][3], "tool_call_id": "x"}]},
    ]
    sequence = fake_prompt_sequence(base)
    for variant in variants:
        changed = fake_prompt_sequence(variant)
        assert len(changed) == len(sequence)
        assert changed != sequence


# -- through the SDK -------------------------------------------------------------------------


def test_a_shared_2000_token_prefix_is_reported_in_128_token_steps(
    caching: FakeOpenAI, client: openai.OpenAI
) -> None:
    system = words(1997, "s")  # 1997 words + 3 = a 2000-token system message
    first = usage_of(client, chat(system, "question one"))
    second = usage_of(client, chat(system, "question two"))

    assert (first.prompt_tokens, cached(first)) == (2005, 0)
    # common: the system message (2000), the user message's start and header (2), "question"
    assert second.prompt_tokens == 2005
    assert cached(second) == (2000 + 2 + 1) // 128 * 128 == 1920
    assert second.total_tokens == second.prompt_tokens + second.completion_tokens


def test_the_whole_repeated_prompt_is_capped_at_prompt_tokens(
    caching: FakeOpenAI, client: openai.OpenAI
) -> None:
    messages = chat(words(1021, "s"))  # exactly 1024 tokens
    usage_of(client, messages)
    again = usage_of(client, messages)
    assert again.prompt_tokens == cached(again) == 1024

    caching.prompt_tokens = 1100  # a scripted count below the simulated prefix caps it too
    longer = chat(words(1997, "s"))
    usage_of(client, longer)
    capped = usage_of(client, longer)
    assert (capped.prompt_tokens, cached(capped)) == (1100, 1024)


def test_below_1024_tokens_nothing_is_cached(caching: FakeOpenAI, client: openai.OpenAI) -> None:
    system = words(1017, "s")  # 1020 tokens: the shared prefix is 1023
    usage_of(client, chat(system, "question one"))
    assert cached(usage_of(client, chat(system, "question two"))) == 0
    # one more shared token reaches the minimum
    usage_of(client, chat(words(1018, "s"), "question one"))
    assert cached(usage_of(client, chat(words(1018, "s"), "question two"))) == 1024


def test_the_cache_is_per_prompt_cache_key_model_and_organisation(
    caching: FakeOpenAI, client: openai.OpenAI
) -> None:
    system = words(1997, "s")
    usage_of(client, chat(system, "first"), prompt_cache_key="tenant-a")

    assert cached(usage_of(client, chat(system, "second"), prompt_cache_key="tenant-b")) == 0
    assert cached(usage_of(client, chat(system, "second"))) == 0  # no key: its own bucket
    other_model = client.chat.completions.create(
        model="gpt-4o", messages=chat(system, "second"), prompt_cache_key="tenant-a"
    )
    assert other_model.usage is not None and cached(other_model.usage) == 0
    with openai.OpenAI(
        base_url=caching.url, api_key="test", organization="org-other", max_retries=0
    ) as other_org:
        assert cached(usage_of(other_org, chat(system, "second"), prompt_cache_key="tenant-a")) == 0
    assert cached(usage_of(client, chat(system, "second"), prompt_cache_key="tenant-a")) == 1920


def test_a_changed_early_message_keeps_only_the_part_before_it(
    caching: FakeOpenAI, client: openai.OpenAI
) -> None:
    system = words(1197, "s")  # 1200 tokens
    history = [words(1000, "u"), "an answer", "a follow-up"]
    usage_of(client, chat(system, *history))
    edited = [words(1000, "u").replace("u0", "edited", 1), *history[1:]]
    usage = usage_of(client, chat(system, *edited))

    # the system message (1200), then the edited user message's start and header (2)
    assert cached(usage) == 1202 // 128 * 128 == 1152
    assert usage.prompt_tokens == 1200 + 1003 + 5 + 5


def test_streamed_usage_reports_the_same_cached_tokens(
    caching: FakeOpenAI, client: openai.OpenAI
) -> None:
    system = words(1997, "s")
    usage_of(client, chat(system, "question one"))
    stream = client.chat.completions.create(
        model=MODEL,
        messages=chat(system, "question two"),
        stream=True,
        stream_options={"include_usage": True},
    )
    with stream:
        *_, last = list(stream)
    assert last.usage is not None
    assert cached(last.usage) == 1920


def test_a_scripted_cached_count_wins(caching: FakeOpenAI, client: openai.OpenAI) -> None:
    system = words(1997, "s")
    usage_of(client, chat(system, "question one"))
    caching.queue(Reply(content="ok", usage=Usage(cached_tokens=64)))
    assert cached(usage_of(client, chat(system, "question two"))) == 64


def test_old_prompts_are_evicted(server: FakeOpenAI, client: openai.OpenAI) -> None:
    server.prompt_cache = PromptCache(entries=2)
    long_prompt = chat(words(1997, "s"), "question")
    usage_of(client, long_prompt)
    usage_of(client, chat("short one"))
    usage_of(client, chat("short two"))  # the long prompt is the third newest: evicted
    assert cached(usage_of(client, long_prompt)) == 0
    assert cached(usage_of(client, long_prompt)) == 1920

    server.prompt_cache.clear()
    assert len(server.prompt_cache) == 0
    assert cached(usage_of(client, long_prompt)) == 0


def test_changed_tools_break_the_prefix(caching: FakeOpenAI, client: openai.OpenAI) -> None:
    def tool(name: str) -> Sequence[ChatCompletionToolParam]:
        return [{"type": "function", "function": {"name": name, "parameters": {}}}]

    messages = chat(words(1997, "s"), "question")
    usage_of(client, messages, tools=tool("lookup"))
    assert cached(usage_of(client, messages, tools=tool("search"))) == 0
    assert cached(usage_of(client, messages, tools=tool("search"))) == 1920


def test_failed_requests_are_not_cached(caching: FakeOpenAI, client: openai.OpenAI) -> None:
    messages = chat(words(1997, "s"), "question")
    caching.queue(Reply.api_error(500))
    with pytest.raises(openai.InternalServerError):
        usage_of(client, messages)
    assert cached(usage_of(client, messages)) == 0


def test_off_by_default_and_on_by_constructor(server: FakeOpenAI, client: openai.OpenAI) -> None:
    messages = chat(words(1997, "s"), "question")
    assert server.prompt_cache is None
    assert [cached(usage_of(client, messages)) for _ in range(2)] == [0, 0]

    with (
        FakeOpenAI(prompt_cache=True) as fake,
        openai.OpenAI(base_url=fake.url, api_key="test", max_retries=0) as sdk,
    ):
        assert isinstance(fake.prompt_cache, PromptCache)
        assert [cached(usage_of(sdk, messages)) for _ in range(2)] == [0, 1920]
    given = PromptCache(entries=3)  # empty, so falsy: kept all the same
    with FakeOpenAI(prompt_cache=given) as fake:
        assert fake.prompt_cache is given
