"""Summarize: fold the oldest rounds into a running summary that is persisted and reused."""

from __future__ import annotations

from typing import Any

from chatledger.errors import InvalidArgumentError
from chatledger.summarizers import AnySummarizer
from chatledger.window import Fold, Lookback, WindowView

__all__ = ["DEFAULT_TEMPLATE", "Summarize"]

DEFAULT_TEMPLATE = "Summary of the earlier conversation:\n{summary}"


class Summarize:
    """When the unsummarised tail exceeds ``trigger`` tokens, fold its oldest rounds into the
    summary until the tail is at most ``keep`` tokens.

    The summary is incremental (the previous summary plus the rounds leaving the window),
    stored, and reused by later turns and other processes: a window with nothing new to fold
    calls no summarizer. The newest round is never folded. If the summarizer fails (raises,
    times out after ``timeout`` seconds, or returns empty text), the turn still goes out with
    those rounds dropped instead, a warning is logged, and the next turn tries again.

    The summary enters the window as one message after the pinned prefix, ``role`` (system by
    default) with ``template`` around the text.
    """

    def __init__(
        self,
        summarizer: AnySummarizer,
        trigger: int = 4000,
        keep: int = 2000,
        *,
        role: str = "system",
        template: str = DEFAULT_TEMPLATE,
        timeout: float | None = 60.0,
    ) -> None:
        if not callable(summarizer):
            raise InvalidArgumentError("summarizer", "must be callable(previous, messages)")
        for name, value in (("trigger", trigger), ("keep", keep)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidArgumentError(name, "must be an integer of at least 1")
        if keep > trigger:
            raise InvalidArgumentError("keep", "must not exceed trigger")
        if role not in ("system", "developer", "user"):
            raise InvalidArgumentError("role", "must be system, developer or user")
        if "{summary}" not in template:
            raise InvalidArgumentError("template", "must contain {summary}")
        if timeout is not None and timeout <= 0:
            raise InvalidArgumentError("timeout", "must be positive or None")
        self.summarizer, self.trigger, self.keep, self.role, self.template, self.timeout = (
            summarizer,
            trigger,
            keep,
            role,
            template,
            timeout,
        )

    def summary_message(self, text: str) -> dict[str, Any]:
        """The summary as the message the window carries."""
        return {"role": self.role, "content": self.template.replace("{summary}", text)}

    def lookback(self) -> Lookback:
        return Lookback(tokens=self.trigger)

    def fold(self, view: WindowView) -> Fold | None:
        """The rounds to fold now, or None when the tail is within ``trigger``."""
        if view.tail_tokens() <= self.trigger:
            return None
        newest = view.newest_round_start
        cut = newest
        for s in [view.start, *(r for r in view.round_starts() if r > view.start)]:
            if s <= newest and view.tail_tokens(s) <= self.keep:
                cut = s
                break
        if cut <= view.start:
            return None
        return Fold(view.start, cut - 1)

    def apply(self, view: WindowView) -> int:
        """After the fold (done by the conversation), the tail stays where the fold left it."""
        return view.start

    def __repr__(self) -> str:
        return f"Summarize(trigger={self.trigger}, keep={self.keep})"
