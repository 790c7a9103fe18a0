"""LastRounds: keep the newest n rounds."""

from __future__ import annotations

from chatledger.errors import InvalidArgumentError
from chatledger.window import Lookback, WindowView

__all__ = ["LastRounds"]


class LastRounds:
    """Keep the pinned prefix and the newest ``n`` rounds.

    A round is a user message and everything after it up to the next user message: assistant
    replies, tool calls and their results. Counting rounds rather than messages is what keeps a
    tool call with its results.
    """

    def __init__(self, n: int) -> None:
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise InvalidArgumentError("n", "must be an integer of at least 1")
        self.n = n

    def lookback(self) -> Lookback:
        return Lookback(rounds=self.n)

    def apply(self, view: WindowView) -> int:
        rounds = view.round_starts()
        if len(rounds) <= self.n:
            return view.start
        return rounds[-self.n]

    def __repr__(self) -> str:
        return f"LastRounds({self.n})"
