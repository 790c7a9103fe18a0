"""Summarize: fold the oldest rounds into a running summary that is persisted and reused."""

from __future__ import annotations

from typing import Any

from chatledger.errors import InvalidArgumentError
from chatledger.model_catalogue import resolve_budget
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
    default) with ``template`` around the text. ``trigger`` and ``keep`` may both be fractions
    of the model's context window, turned into tokens for each conversation's model.
    """

    def __init__(
        self,
        summarizer: AnySummarizer,
        trigger: int | float = 4000,
        keep: int | float = 2000,
        *,
        role: str = "system",
        template: str = DEFAULT_TEMPLATE,
        timeout: float | None = 60.0,
    ) -> None:
        if not callable(summarizer):
            raise InvalidArgumentError("summarizer", "must be callable(previous, messages)")
        self.fractions: tuple[float, float] | None = None
        if isinstance(trigger, float) or isinstance(keep, float):
            if not (isinstance(trigger, float) and isinstance(keep, float)):
                raise InvalidArgumentError(
                    "keep", "give trigger and keep both in tokens or both as fractions"
                )
            resolve_budget(trigger, "gpt-4o")  # the fractions' range only
            resolve_budget(keep, "gpt-4o")
            self.fractions = (trigger, keep)
        else:
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
        self.summarizer, self.role, self.template, self.timeout = (
            summarizer,
            role,
            template,
            timeout,
        )
        self.trigger, self.keep = (0, 0) if self.fractions else (int(trigger), int(keep))

    def for_model(self, model: str) -> Summarize:
        """Thresholds in tokens for ``model`` (itself when given in tokens)."""
        if self.fractions is None:
            return self
        trigger, keep = (resolve_budget(f, model) for f in self.fractions)
        return Summarize(
            self.summarizer,
            trigger,
            min(keep, trigger),
            role=self.role,
            template=self.template,
            timeout=self.timeout,
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
        trigger, keep = self.fractions or (self.trigger, self.keep)
        return f"Summarize(trigger={trigger}, keep={keep})"
