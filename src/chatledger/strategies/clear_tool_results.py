"""ClearToolResults: old tool results go out as a short placeholder (context editing)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from chatledger.errors import InvalidArgumentError
from chatledger.rows import Lookback, StoredMessage
from chatledger.window import WindowView

__all__ = ["DEFAULT_PLACEHOLDER", "ClearToolResults"]

DEFAULT_PLACEHOLDER = "[tool result cleared to save context]"


class ClearToolResults:
    """Send tool results older than the newest ``keep`` with their content replaced by
    ``placeholder``; the stored messages are untouched and every call keeps its result, so
    the window stays a valid API history.

    Old tool output (file contents, search results) is often most of an agent's context and
    rarely read again. Clearing moves in steps of ``step`` results: the cleared set changes
    once every ``step`` new results, not every turn (so between ``keep - step + 1`` and
    ``keep`` results go out in full), so a prompt held still by
    :class:`~chatledger.StablePrefix` stays cacheable between steps. It decides which
    messages go out how, never where the window starts: compose it with a budget
    (``[ClearToolResults(), TokenBudget(8000)]``), which plans on the stored counts, so the
    cleared window costs less than the budget allows. A result is only replaced when the
    placeholder costs fewer tokens.

    The anchors: Anthropic's ``clear_tool_uses`` context editing, the Agents SDK's trimming
    of tool output.
    """

    def __init__(
        self, keep: int = 3, placeholder: str = DEFAULT_PLACEHOLDER, *, step: int = 5
    ) -> None:
        for name, value, least in (("keep", keep, 0), ("step", step, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise InvalidArgumentError(name, f"must be an integer of at least {least}")
        if not isinstance(placeholder, str) or not placeholder.strip():
            raise InvalidArgumentError("placeholder", "must be a non-empty string")
        self.keep, self.step, self.placeholder = keep, step, placeholder

    def lookback(self) -> Lookback:
        return Lookback(passive=True)

    def apply(self, view: WindowView) -> int:
        return view.start  # never cuts

    def rewrite(self, tail: Sequence[StoredMessage]) -> Mapping[int, dict[str, Any]]:
        """The results older than the newest ``keep``, the count rounded up to whole steps
        (so between ``keep - step + 1`` and ``keep`` go out in full)."""
        results = [r for r in tail if r.role == "tool"]
        over = len(results) - self.keep
        if over <= 0:
            return {}
        cleared = results[: -(-over // self.step) * self.step]
        return {r.seq: {**r.message, "content": self.placeholder} for r in cleared}

    def __repr__(self) -> str:
        return f"ClearToolResults(keep={self.keep}, step={self.step})"
