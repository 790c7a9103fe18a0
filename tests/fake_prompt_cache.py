"""OpenAI's automatic prompt caching, simulated for :class:`openai_server.FakeOpenAI`.

What the real API does (platform.openai.com/docs/guides/prompt-caching): it keeps the prompts
it has recently seen, per ``prompt_cache_key`` (and organisation), and serves the longest
prefix of a new prompt that matches one of them from cache, from 1,024 tokens on and in steps
of 128, reporting it as ``usage.prompt_tokens_details.cached_tokens``. Strategies that keep a
window's prefix stable exist to earn those hits, so their tests need a server that reports them.

The simulation runs on :func:`fake_prompt_sequence`, the token sequence whose length IS the
fake prompt token count: a prefix counted by ``prompt_tokens`` is exactly the prefix compared
here. Whatever the model sees but the fake count leaves out (tool definitions, tool call ids,
message names) is folded into the fixed tokens each message already has, so changing it breaks
the prefix without changing the count.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "CACHE_MIN_TOKENS",
    "CACHE_STEP_TOKENS",
    "DEFAULT_CACHE_ENTRIES",
    "PromptCache",
    "fake_prompt_sequence",
    "reported_cached_tokens",
]

CACHE_MIN_TOKENS = 1024
"""The shortest prefix the API serves from cache."""
CACHE_STEP_TOKENS = 128
"""Cached prefixes are reported in multiples of this."""
DEFAULT_CACHE_ENTRIES = 16
"""Recent prompts kept per cache bucket; older ones are evicted, like prefixes gone stale."""

REQUEST_PREAMBLE_FIELDS = ("tools", "response_format")
"""Request fields rendered ahead of the messages: a change to them breaks the whole prefix."""

CacheBucket = tuple[str | None, str, str | None]
"""(organisation, model, prompt_cache_key): prompts share a cache only within one bucket."""


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _content_tokens(content: Any) -> list[str]:
    """The words ``message_text`` gives for ``content``; a non-text part's word carries a
    digest of the part, so two different images are different tokens."""
    if content is None:
        return []
    if isinstance(content, str):
        return content.split()
    if not isinstance(content, list):
        return str(content).split()
    tokens: list[str] = []
    for part in content:
        if not isinstance(part, Mapping):
            tokens += str(part).split()
            continue
        kind = part.get("type")
        if kind in ("text", "refusal"):
            tokens += str(part.get(kind, "")).split()
            continue
        words = f"[{kind}]".split()
        if words:
            words[0] += f"#{_digest(part)}"
        tokens += words
    return tokens


def fake_prompt_sequence(body: Mapping[str, Any]) -> list[str]:
    """The FAKE prompt tokens of a request, in order: per message a start token (its role), a
    header token (its name and tool_call_id), the words of its text and tool calls, and an end
    token (its tool call ids). ``len()`` of it is the fake ``prompt_tokens``: words + 3 a message.

    The first start token also carries a digest of the request's tools and response format,
    which the real API renders before the messages.
    """
    preamble = {field: body[field] for field in REQUEST_PREAMBLE_FIELDS if field in body}
    tokens: list[str] = []
    for message in body.get("messages") or []:
        if not isinstance(message, Mapping):
            continue
        start = f"<|start|>{message.get('role')}"
        if not tokens and preamble:
            start += f"#{_digest(preamble)}"
        header = f"<|header|>{_digest([message.get('name'), message.get('tool_call_id')])}"
        tokens += [start, header, *_content_tokens(message.get("content"))]
        call_ids = []
        for call in message.get("tool_calls") or []:
            function = (call.get("function") or {}) if isinstance(call, Mapping) else {}
            tokens += str(function.get("name", "")).split()
            tokens += str(function.get("arguments", "")).split()
            call_ids.append(call.get("id") if isinstance(call, Mapping) else None)
        tokens.append(f"<|end|>{_digest(call_ids)}" if call_ids else "<|end|>")
    return tokens


def reported_cached_tokens(common_prefix: int) -> int:
    """What the API reports for a prefix of ``common_prefix`` tokens found in its cache: rounded
    down to a multiple of 128, and nothing below 1,024."""
    if common_prefix < CACHE_MIN_TOKENS:
        return 0
    return common_prefix - common_prefix % CACHE_STEP_TOKENS


def _common_prefix(a: Sequence[str], b: Sequence[str]) -> int:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


class PromptCache:
    """Recent prompts per bucket (organisation, model, ``prompt_cache_key``), the newest
    ``entries`` of each kept. Thread-safe: the server's handler threads share one."""

    def __init__(self, entries: int = DEFAULT_CACHE_ENTRIES) -> None:
        if entries < 1:
            raise ValueError(f"entries must be at least 1, got {entries}")
        self.entries = entries
        self._buckets: dict[CacheBucket, deque[tuple[str, ...]]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def bucket(body: Mapping[str, Any], organization: str | None) -> CacheBucket:
        key = body.get("prompt_cache_key")
        return (organization, str(body.get("model")), None if key is None else str(key))

    def match_and_store(self, bucket: CacheBucket, sequence: Sequence[str]) -> int:
        """The longest prefix ``sequence`` shares with a prompt kept in ``bucket`` (raw token
        count, not yet rounded); then ``sequence`` becomes that bucket's newest prompt."""
        prompt = tuple(sequence)
        with self._lock:
            recent = self._buckets.setdefault(bucket, deque(maxlen=self.entries))
            longest = max((_common_prefix(prompt, seen) for seen in recent), default=0)
            if prompt in recent:
                recent.remove(prompt)  # seen again: it is fresh again
            recent.append(prompt)
        return longest

    def clear(self) -> None:
        """Forget every prompt, as if they had all expired."""
        with self._lock:
            self._buckets.clear()

    def __len__(self) -> int:
        with self._lock:
            return sum(len(recent) for recent in self._buckets.values())
