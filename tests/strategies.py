"""Hypothesis strategies for valid chat messages and conversations."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

# any Unicode the API can carry: no surrogates, no NUL
texts = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=60,
)
names = st.from_regex(r"[A-Za-z0-9_\-\.é]{1,20}", fullmatch=True)
function_names = st.from_regex(r"[A-Za-z0-9_\-]{1,20}", fullmatch=True)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=6,
)
arguments = st.dictionaries(texts, json_values, max_size=4).map(
    lambda d: json.dumps(d, ensure_ascii=False)
)
text_parts = st.builds(lambda t: {"type": "text", "text": t}, texts)
image_parts = st.builds(
    lambda n, d: {
        "type": "image_url",
        "image_url": {"url": f"https://img.test/{n}.png", **({"detail": d} if d else {})},
    },
    st.integers(0, 999),
    st.sampled_from([None, "low", "high", "auto"]),
)
user_content = texts | st.lists(text_parts | image_parts, min_size=1, max_size=3)


@st.composite
def rounds(draw: st.DrawFn, round_no: int) -> list[dict[str, Any]]:
    """One round: a user message, maybe tool calls with their results, maybe a reply."""
    user: dict[str, Any] = {"role": "user", "content": draw(user_content)}
    if draw(st.booleans()):
        user["name"] = draw(names)
    out = [user]
    n_calls = draw(st.integers(0, 3))
    if n_calls:
        ids = [f"call_{round_no}_{i}" for i in range(n_calls)]
        calls = [
            {
                "id": cid,
                "type": "function",
                "function": {"name": draw(function_names), "arguments": draw(arguments)},
            }
            for cid in ids
        ]
        assistant: dict[str, Any] = {"role": "assistant", "tool_calls": calls}
        if draw(st.booleans()):
            assistant["content"] = draw(texts)
        out.append(assistant)
        for cid in draw(st.permutations(ids)):
            content: Any = draw(texts | st.lists(text_parts, min_size=1, max_size=2))
            out.append({"role": "tool", "tool_call_id": cid, "content": content})
    if draw(st.booleans()) or n_calls:
        out.append({"role": "assistant", "content": draw(texts)})
    return out


@st.composite
def conversations(draw: st.DrawFn, max_rounds: int = 6) -> list[dict[str, Any]]:
    """A valid conversation: an optional pinned prefix, then rounds."""
    out: list[dict[str, Any]] = []
    if draw(st.booleans()):
        out.append({"role": "system", "content": draw(texts)})
    if draw(st.booleans()):
        out.append(
            {"role": "developer", "content": draw(st.lists(text_parts, min_size=1, max_size=2))}
        )
    for r in range(draw(st.integers(1, max_rounds))):
        out.extend(draw(rounds(r)))
    return out
