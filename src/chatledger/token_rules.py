"""Which counting rules a model family gets: one frozen :class:`Rules` per family.

The families and every number in them were fitted to recorded API figures
(``tests/token_corpus``; evidence per rule in ``docs/tokens.md``). A :class:`Rules` key is part of
``TokenCounter.profile``: bump it whenever a number changes, so stored counts are redone.
"""

from __future__ import annotations

from dataclasses import dataclass

from chatledger.tool_rendering import CHAT, LEGACY, RenderStyle

__all__ = ["TOOLS_OVERHEAD", "Rules", "rules_for"]

TOOLS_OVERHEAD = 9  # the "# Tools / ## functions" wrapper around the namespace block


@dataclass(frozen=True, slots=True)
class Rules:
    """Counting rules of one model family; ``key`` goes into the profile."""

    key: str
    style: RenderStyle
    priming: int = 3
    per_message: int = 3
    per_name: int = 1
    tools_overhead: int = TOOLS_OVERHEAD
    merge: bool = True  # tool definitions join a leading system message
    choice_none: int = 1
    choice_required: int = 1
    choice_forced: int | None = 7  # + name; None: tool_choice is free
    call_extra: int = 0  # per assistant tool call in history, on top of name + args + 3
    assistant_extra: int = 0  # per assistant message (harmony's "<|channel|>final")
    compact_arguments: bool = True  # call arguments re-serialised as compact JSON
    split_text_and_calls: bool = False  # an assistant's text and its calls are two messages


# gpt-3.5-turbo-0613 / gpt-4-0613 era: hmarr's rendering, forced tool_choice 4 + name.
_LEGACY = Rules("legacy4", LEGACY, choice_forced=4, compact_arguments=False)
_LEGACY_0301 = Rules(
    "legacy0301", LEGACY, per_message=4, per_name=-1, choice_forced=4, compact_arguments=False
)
# gpt-3.5-turbo-0125/1106 and gpt-4-turbo: cl100k, but tools rendered as on gpt-4o.
_TURBO = Rules("turbo4", CHAT, choice_required=0, call_extra=4)
_CHAT = Rules("chat4", CHAT, choice_required=0, call_extra=3, split_text_and_calls=True)
_REASONING = Rules("reason2", CHAT, priming=2, choice_required=0, call_extra=3)
_O1_MINI = Rules("o1mini3", CHAT, choice_required=0, call_extra=3)
# o1-preview: recorded figures are 12 per message and 13 per request above the usual rules
# (two crewAI cassettes, 17 figures); an estimate, one token high per request.
_O1_PREVIEW = Rules("o1preview", CHAT, priming=16, per_message=15, call_extra=3)
_HARMONY = Rules(
    "harmony3", CHAT, priming=2, tools_overhead=TOOLS_OVERHEAD + 82, merge=False,
    choice_none=0, choice_required=0, choice_forced=None, call_extra=7, assistant_extra=2,
)  # fmt: skip
# Longest prefix wins (names normalised by chatledger.encodings.normalize_model).
_FAMILIES: tuple[tuple[str, Rules], ...] = tuple(
    sorted(
        {
            "gpt-3.5-turbo-0301": _LEGACY_0301,
            "gpt-3.5-turbo-0613": _LEGACY,
            "gpt-3.5-turbo-16k": _LEGACY,
            "gpt-3.5": _TURBO,
            "gpt-35": _TURBO,
            "gpt-4": _LEGACY,
            "gpt-4-turbo": _TURBO,
            "gpt-4-1106": _TURBO,
            "gpt-4-0125": _TURBO,
            "gpt-4-vision": _TURBO,
            "gpt-4o": _CHAT,
            "gpt-4.1": _CHAT,
            "gpt-4.5": _CHAT,
            "chatgpt-4o": _CHAT,
            "o1-mini": _O1_MINI,
            "o1-preview": _O1_PREVIEW,
            "o1": _REASONING,
            "o3": _REASONING,
            "o4": _REASONING,
            "codex-mini": _REASONING,
            "gpt-5": _HARMONY,
            "gpt-oss": _HARMONY,
        }.items(),
        key=lambda item: len(item[0]),
        reverse=True,
    )
)


def rules_for(normalized_model: str, encoding: str) -> Rules:
    """The rules of a normalised model name; by encoding for unknown models."""
    for prefix, rules in _FAMILIES:
        if normalized_model.startswith(prefix):
            return rules
    return _CHAT if encoding == "o200k_base" else _LEGACY
