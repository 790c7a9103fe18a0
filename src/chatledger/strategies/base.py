"""The strategy protocol: what a truncation strategy sees and what it may answer.

A strategy never touches the database. The conversation hands it a :class:`WindowView`: the
token counts of the pinned prefix and the summary, and one :class:`Entry` (seq, role, tokens,
round) per message of the newest part of the history, as much as the strategies asked for with
their :class:`Lookback`. The strategy answers with the seq at which the tail starts. The
view only offers starts that keep the window valid, so a strategy cannot split a tool call from
its results.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["Cut", "Entry", "Lookback", "Strategy", "WindowView"]


@dataclass(frozen=True, slots=True)
class Entry:
    """One stored message as strategies see it: no content, just its place and cost."""

    seq: int
    role: str
    tokens: int
    #: seq of the user message that opened its round (0 before the first user message)
    round_seq: int


@dataclass(frozen=True, slots=True)
class Lookback:
    """How much of the newest history a strategy may keep, so that only that much is read.

    ``tokens``: at most this many tokens of tail; ``rounds``: at most this many rounds. Both
    None means unbounded: the whole history after the prefix is read (the default for a
    strategy that does not say).
    """

    tokens: int | None = None
    rounds: int | None = None

    @property
    def unbounded(self) -> bool:
        return self.tokens is None and self.rounds is None


@dataclass(frozen=True, slots=True)
class Cut:
    """A strategy's answer: the tail starts at ``start``; ``drop_summary`` leaves the summary
    message out of the window (a hard budget that cannot afford it)."""

    start: int
    drop_summary: bool = False


@dataclass
class WindowView:
    """The window as the strategies before this one left it, and what it may become.

    ``start`` is the current tail start (the tail runs to ``last_seq``); a strategy may only
    move it forward, to one of :meth:`starts`. Token figures are the API's, from the counts
    stored with each message.
    """

    model: str
    last_seq: int
    prefix_tokens: int
    #: reply priming plus tool definitions: paid by every request
    overhead_tokens: int
    summary_tokens: int
    #: the summary in the window covers seq up to this (0: no summary)
    summary_upto: int
    start: int
    #: the newest messages, oldest first, as far back as the strategies' lookback reaches
    entries: Sequence[Entry]
    #: tokens of the tail from ``start`` (``start`` may lie before ``entries``)
    start_tokens: int

    def __post_init__(self) -> None:
        cum, total = [], 0
        for e in self.entries:
            total += e.tokens
            cum.append(total)
        self._cum = cum
        self._seqs = [e.seq for e in self.entries]
        self._anchor = (self.start, self.start_tokens)

    @property
    def fixed_tokens(self) -> int:
        """Tokens outside the tail: overhead, prefix and summary."""
        return self.overhead_tokens + self.prefix_tokens + self.summary_tokens

    def tail_tokens(self, start: int | None = None) -> int:
        """Tokens of the messages from ``start`` (default: the current start) to the newest."""
        s = self.start if start is None else start
        if s > self.last_seq:
            return 0
        if s == self._anchor[0]:
            return self._anchor[1]
        i = bisect_left(self._seqs, s)
        if i >= len(self._seqs) or self._seqs[i] != s:
            raise ValueError(f"seq {s} is outside the history this window read")
        return self._cum[-1] - (self._cum[i - 1] if i else 0)

    def move_to(self, start: int, summary_tokens: int, summary_upto: int) -> None:
        """Set the state a strategy's answer leaves (used by the conversation, not strategies)."""
        tokens = self.tail_tokens(start)
        self.start, self.summary_tokens, self.summary_upto = start, summary_tokens, summary_upto
        self._anchor = (start, tokens)

    def round_starts(self) -> list[int]:
        """Seqs of the user messages that open rounds, from the current start on."""
        return [e.seq for e in self.entries if e.role == "user" and e.seq >= self.start]

    @property
    def newest_round_start(self) -> int:
        """Where the newest round begins (the current start when no user message follows it)."""
        starts = self.round_starts()
        return starts[-1] if starts else self.start

    def starts(self) -> list[int]:
        """Every tail start that keeps the window valid, oldest first.

        The current start, each later round start, then, inside the newest round only, each
        message that is not a tool result: the tail begins mid-round only when even the newest
        whole round cannot be kept.
        """
        out = [self.start, *(s for s in self.round_starts() if s > self.start)]
        newest = out[-1]
        out.extend(
            e.seq for e in self.entries if e.seq > newest and e.role not in ("tool", "function")
        )
        return out


@runtime_checkable
class Strategy(Protocol):
    """What a truncation strategy implements.

    ``lookback`` says how much of the newest history the strategy could keep, so the
    conversation reads no more; ``apply`` returns the new tail start, one of
    ``view.starts()`` (an ``int``, or a :class:`Cut` to also leave the summary out).
    """

    def lookback(self) -> Lookback: ...

    def apply(self, view: WindowView) -> int | Cut: ...


def smallest_fitting(view: WindowView, allowed: int, starts: Sequence[int]) -> int | None:
    """The earliest start whose tail fits in ``allowed`` tokens, or None."""
    for s in starts:
        if view.tail_tokens(s) <= allowed:
            return s
    return None
