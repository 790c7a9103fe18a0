"""Building a window: run the strategies over what the store read, and report the result.

The plan is a generator shared by the sync and async conversations: it yields a
:class:`FoldRequest` whenever a :class:`Summarize` wants rounds folded, and the caller (which
owns the I/O: reading those messages, calling the summarizer, storing the summary) sends back
the new summary or None when summarising failed. Everything else is pure.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from chatledger.errors import ChatLedgerError, InvalidArgumentError
from chatledger.records import StoredMessage
from chatledger.strategies.base import Cut, Lookback, Strategy, WindowView
from chatledger.strategies.summarize import Summarize
from chatledger.strategies.token_budget import TokenBudget
from chatledger.tokens import TokenCounter

__all__ = ["FoldRequest", "Plan", "Span", "SummaryPart", "Window", "chain_of", "plan_window"]


def chain_of(strategy: Strategy | Sequence[Strategy] | None) -> list[Strategy]:
    """One strategy, a list of them applied in order, or None for the whole history."""
    if strategy is None:
        return []
    if isinstance(strategy, (list, tuple)):
        items: list[Strategy] = list(strategy)
    else:
        items = [cast(Strategy, strategy)]
    for i, s in enumerate(items):
        if not (callable(getattr(s, "apply", None)) and callable(getattr(s, "lookback", None))):
            raise InvalidArgumentError(
                f"strategy[{i}]", "must have lookback() and apply(view) (see chatledger.Strategy)"
            )
    return items


def combined_lookback(chain: Sequence[Strategy]) -> Lookback | None:
    """What to read for the whole chain: the union of the strategies' needs (None: all)."""
    if not chain:
        return None
    tokens: list[int] = []
    rounds: list[int] = []
    for s in chain:
        lb = s.lookback()
        if lb.unbounded:
            return None
        if lb.tokens is not None:
            tokens.append(lb.tokens)
        if lb.rounds is not None:
            rounds.append(lb.rounds)
    return Lookback(max(tokens) if tokens else None, max(rounds) if rounds else None)


@dataclass(frozen=True, slots=True)
class FoldRequest:
    """Fold ``from_seq..upto_seq`` into the summary, on top of ``previous``."""

    strategy: Summarize
    from_seq: int
    upto_seq: int
    previous: str | None


@dataclass(frozen=True, slots=True)
class SummaryPart:
    """The summary a window carries (or would have carried, had it not been dropped)."""

    upto_seq: int
    tokens: int
    text: str
    created: bool
    message: dict[str, Any]


@dataclass
class Plan:
    start: int
    summary: SummaryPart | None
    summary_dropped: bool = False
    summary_failed: bool = False
    steps: list[str] = field(default_factory=list)
    allowed: int | None = None


def plan_window(
    chain: Sequence[Strategy],
    view: WindowView,
    stored_summary: tuple[int, str] | None,
    counter: TokenCounter,
) -> Generator[FoldRequest, tuple[int, str] | None, Plan]:
    """Apply the strategies in order; yield a fold request where a Summarize asks for one."""
    summ = next((s for s in chain if isinstance(s, Summarize)), None)
    summary: SummaryPart | None = None
    if summ is not None and stored_summary is not None:
        upto, text = stored_summary
        msg = summ.message(text)
        summary = SummaryPart(upto, counter.message(msg), text, False, msg)
    if summary is not None:
        view.move_to(view.start, summary.tokens, summary.upto_seq)
    plan = Plan(start=view.start, summary=summary)
    for strategy in chain:
        if isinstance(strategy, Summarize):
            fold = strategy.plan(view)
            if fold is not None:
                previous = plan.summary.text if plan.summary else None
                got = yield FoldRequest(strategy, fold.from_seq, fold.upto_seq, previous)
                if got is not None:
                    upto, text = got
                    msg = strategy.message(text)
                    plan.summary = SummaryPart(upto, counter.message(msg), text, True, msg)
                    plan.summary_failed = False
                else:
                    plan.summary_failed = True
                view.move_to(
                    fold.upto_seq + 1,
                    plan.summary.tokens if plan.summary else 0,
                    plan.summary.upto_seq if plan.summary else 0,
                )
            plan.steps.append(f"{strategy!r}: tail from seq {view.start}")
            continue
        answer = strategy.apply(view)
        cut = answer if isinstance(answer, Cut) else Cut(int(answer))
        allowed = view.starts()
        if cut.start not in allowed:
            raise ChatLedgerError(
                f"{strategy!r} answered tail start {cut.start}, which is not one of the valid "
                f"starts {allowed[:5]}{'...' if len(allowed) > 5 else ''}"
            )
        if cut.drop_summary and plan.summary is not None:
            plan.summary_dropped = True
            view.move_to(cut.start, 0, 0)
        else:
            view.move_to(cut.start, view.summary_tokens, view.summary_upto)
        if isinstance(strategy, TokenBudget):
            plan.allowed = (
                strategy.allowed if plan.allowed is None else min(plan.allowed, strategy.allowed)
            )
        plan.steps.append(f"{strategy!r}: tail from seq {view.start}")
    plan.start = view.start
    return plan


@dataclass(frozen=True, slots=True)
class Span:
    """A run of stored messages by seq (``first`` and ``last`` inclusive; None when empty)."""

    first: int | None
    last: int | None
    count: int
    #: None when the window did not need to read it
    tokens: int | None

    @classmethod
    def of(cls, first: int, last: int, tokens: int | None) -> Span:
        if last < first:
            return cls(None, None, 0, 0)
        return cls(first, last, last - first + 1, tokens)

    def __str__(self) -> str:
        if not self.count:
            return "-"
        tokens = "?" if self.tokens is None else str(self.tokens)
        return f"seq {self.first}-{self.last} ({self.count} msgs, {tokens} tokens)"


@dataclass(frozen=True)
class Window:
    """A window with the account of how it was made, for debugging a live conversation.

    ``messages`` is what to send. ``prompt_tokens`` is what the API will bill for it with the
    tools given. ``prefix``, ``summarized``, ``dropped`` and ``kept`` partition the stored
    history by seq: every stored message is in exactly one of them.
    """

    messages: list[dict[str, Any]]
    prompt_tokens: int
    model: str
    allowed: int | None
    overhead_tokens: int
    prefix: Span
    summary: SummaryPart | None
    summary_dropped: bool
    summary_failed: bool
    summarized: Span
    dropped: Span
    kept: Span
    steps: tuple[str, ...]
    rows_read: int
    #: the stored messages the window carries (prefix and kept tail, not the summary), with
    #: their seqs, counts and metadata
    records: tuple[StoredMessage, ...] = ()

    def rows(self) -> list[tuple[dict[str, Any], StoredMessage | None]]:
        """The messages in window order, each with its stored record (None for the summary),
        for callers that keep their own data in message metadata."""
        n_prefix = self.prefix.count
        out: list[tuple[dict[str, Any], StoredMessage | None]] = [
            (r.message, r) for r in self.records[:n_prefix]
        ]
        if self.summary is not None and not self.summary_dropped:
            out.append((self.summary.message, None))
        out += [(r.message, r) for r in self.records[n_prefix:]]
        return out

    def __str__(self) -> str:
        budget = "no budget" if self.allowed is None else f"allowed {self.allowed}"
        lines = [
            f"window for {self.model}: {len(self.messages)} messages, "
            f"{self.prompt_tokens} prompt tokens ({budget})",
            f"  prefix      {self.prefix}",
        ]
        if self.summary is not None:
            state = (
                "dropped for the budget"
                if self.summary_dropped
                else ("written now" if self.summary.created else "stored")
            )
            lines.append(
                f"  summary     covers up to seq {self.summary.upto_seq}, "
                f"{self.summary.tokens} tokens, {state}"
            )
        if self.summary_failed:
            lines.append("  summary     FAILED this turn: rounds dropped instead, retried later")
        lines += [
            f"  summarized  {self.summarized}",
            f"  dropped     {self.dropped}",
            f"  kept        {self.kept}",
            f"  overhead    {self.overhead_tokens} tokens (reply priming, tools)",
            f"  read        {self.rows_read} rows",
        ]
        lines += [f"  step        {s}" for s in self.steps]
        return "\n".join(lines)
