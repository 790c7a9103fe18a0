"""The benchmark's deterministic workload: a system prompt, then user / assistant rounds.

User messages are 20-200 tokens, assistant replies 50-600, and every 10th round the assistant
calls a tool and gets its result before replying. The same seed gives the same history, so
every peer is measured on identical conversations.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

SYSTEM = "You are a helpful assistant for a travel agency. Be precise and brief."
_WORDS = [
    "the",
    "trip",
    "hotel",
    "flight",
    "museum",
    "train",
    "budget",
    "day",
    "night",
    "city",
    "river",
    "park",
    "dinner",
    "breakfast",
    "ticket",
    "booking",
    "price",
    "guide",
    "tour",
    "walk",
    "beach",
    "mountain",
    "weather",
    "rain",
    "sun",
    "morning",
    "evening",
    "family",
    "friends",
    "quiet",
    "busy",
    "old",
    "new",
    "famous",
    "local",
    "market",
    "coffee",
    "tea",
    "wine",
    "bread",
    "cheese",
]


def _text(rng: random.Random, tokens: int) -> str:
    # about one token per word for this vocabulary; exact counts are not needed here
    return " ".join(rng.choice(_WORDS) for _ in range(tokens)).capitalize() + "."


def rounds(seed: int = 7) -> Iterator[list[dict[str, Any]]]:
    """Rounds forever: [user, (assistant tool call, tool result,) assistant reply]."""
    rng = random.Random(seed)
    i = 0
    while True:
        i += 1
        out: list[dict[str, Any]] = [{"role": "user", "content": _text(rng, rng.randint(20, 200))}]
        if i % 10 == 0:
            cid = f"call_{i}"
            out.append(
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": cid,
                            "type": "function",
                            "function": {
                                "name": "search_hotels",
                                "arguments": json.dumps({"city": rng.choice(_WORDS), "n": i}),
                            },
                        }
                    ],
                }
            )
            out.append({"role": "tool", "tool_call_id": cid, "content": _text(rng, 60)})
        out.append({"role": "assistant", "content": _text(rng, rng.randint(50, 600))})
        yield out


def history(n_messages: int, seed: int = 7) -> list[dict[str, Any]]:
    """A system prompt and whole rounds, ``n_messages`` in all (the last round may be cut to a
    user message so the history ends where a new turn begins)."""
    out: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}]
    for r in rounds(seed):
        if len(out) + len(r) > n_messages:
            break
        out.extend(r)
    while len(out) < n_messages:
        out.append({"role": "user", "content": "And what about tomorrow?"})
        if len(out) < n_messages:
            out.append({"role": "assistant", "content": "Tomorrow looks fine."})
    if out[-1]["role"] != "user":
        out[-1] = {"role": "user", "content": "And what about tomorrow?"}
    return out


def is_correct_window(
    window: list[dict[str, Any]], stored: list[dict[str, Any]], budget: int, model: str
) -> tuple[bool, str]:
    """The correctness check applied to every peer: system prompt kept, tool pairs valid, the
    newest message present, within the budget as the API counts it."""
    import chatledger as cl

    if not window or window[0] != stored[0]:
        return False, "system prompt dropped"
    if window[-1] != stored[-1]:
        return False, "newest message missing"
    try:
        cl.validate_messages(window)
    except cl.InvalidMessageError as exc:
        return False, f"invalid for the API: {exc.problems[0]}"
    n = cl.count_tokens(window, model)
    if n > budget:
        return False, f"{n} tokens over the budget of {budget}"
    return True, "ok"
