"""The window: what strategies see and answer, how their answers become the messages sent,
and the account of what was kept, summarised and dropped.

Everything here is pure. :func:`plan_window` is a generator: it yields a :class:`FoldRequest`
whenever a folding strategy wants rounds folded into the summary, and whoever drives it (the
sync or async conversation, which owns the I/O) sends back the new summary, or None when
summarising failed.

Strategies are pluggable through protocols, and the built-ins use nothing else: every strategy
implements :class:`Strategy`; one that folds history into a persisted summary also implements
:class:`Folding`; one that enforces a token budget (and so must leave room for the completion)
also implements :class:`Budgeted`.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Protocol, TypeAlias, TypeGuard, cast, runtime_checkable

from chatledger.errors import ChatLedgerError, InvalidArgumentError
from chatledger.rows import Entry, Lookback, StoredMessage
from chatledger.tokens import TokenCounter

__all__ = [
    "Around",
    "Budgeted",
    "ChainKinds",
    "Cut",
    "Entry",
    "Fold",
    "FoldRequest",
    "Folding",
    "Lookback",
    "Plan",
    "Rewriting",
    "Span",
    "Strategy",
    "StrategyArg",
    "SummaryPart",
    "Window",
    "WindowView",
    "budget_of",
    "chain_of",
    "flatten",
    "is_around",
    "is_budgeted",
    "is_folding",
    "is_rewriting",
    "is_strategy",
    "plan_window",
]


@dataclass(frozen=True, slots=True)
class Cut:
    """A strategy's answer: the tail starts at ``start``; ``drop_summary`` leaves the summary
    message out of the window (a hard budget that cannot afford it)."""

    start: int
    drop_summary: bool = False


@dataclass(frozen=True, slots=True)
class Fold:
    """A folding strategy's answer: fold ``from_seq..upto_seq`` into the summary."""

    from_seq: int
    upto_seq: int


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
    #: where the window last sent for this conversation started (None: no request yet), for
    #: strategies that hold the start still so the provider's prompt cache stays warm
    anchor: int | None = None

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


@runtime_checkable
class Folding(Strategy, Protocol):
    """A strategy that folds old rounds into a persisted, incremental summary.

    ``fold`` answers which rounds to fold now (None: nothing); the conversation then calls
    ``summarizer(previous_summary, messages)`` (within ``timeout`` seconds), stores the text,
    and carries it as ``summary_message(text)`` right after the pinned prefix. The stored
    summary is reused by later turns and other processes until the next fold.
    """

    summarizer: Callable[..., Any]
    timeout: float | None

    def fold(self, view: WindowView) -> Fold | None: ...

    def summary_message(self, text: str) -> dict[str, Any]: ...


@runtime_checkable
class Budgeted(Strategy, Protocol):
    """A strategy that caps the prompt's tokens, and so must leave room for the completion."""

    @property
    def allowed(self) -> int:
        """Prompt tokens a window may use."""
        ...

    def with_reserve(self, tokens: int) -> Budgeted:
        """The same budget leaving at least ``tokens`` for the completion (``max_tokens``)."""
        ...


@runtime_checkable
class Around(Strategy, Protocol):
    """A strategy that plans around an inner chain (:class:`~chatledger.StablePrefix`).

    The planner calls ``enter(view)`` first: True holds the view as it stands and skips the
    inner strategies this turn; False runs them (folds included), then ``leave(view)`` gives
    the final start, as ``apply`` would.
    """

    inner: Sequence[Strategy]

    def enter(self, view: WindowView) -> bool: ...

    def leave(self, view: WindowView) -> int | Cut: ...

    def with_inner(self, inner: Sequence[Strategy]) -> Around:
        """The same wrapper around another chain (the reserve for ``max_tokens`` is applied
        to the inner budgets this way)."""
        ...


@runtime_checkable
class Rewriting(Strategy, Protocol):
    """A strategy that changes how kept messages go out, never which are kept
    (:class:`~chatledger.ClearToolResults`). Stored data is untouched.

    ``rewrite`` sees the final tail and returns replacements by seq. The planner counts each
    replacement and uses it only when it costs fewer tokens than the stored message, so a
    window that fit its budget still does.
    """

    def rewrite(self, tail: Sequence[StoredMessage]) -> Mapping[int, dict[str, Any]]: ...


StrategyArg: TypeAlias = "Strategy | Sequence[Strategy] | None"


@cache
def _members(kind: Any) -> tuple[str, ...]:
    names: set[str] = set()
    for base in kind.__mro__:
        if getattr(base, "_is_protocol", False) and base is not Protocol:
            names.update(vars(base), getattr(base, "__annotations__", {}))
    return tuple(sorted(n for n in names if not n.startswith("_")))


def _has_members(obj: object, kind: Any) -> bool:
    """``isinstance(obj, kind)`` for a strategy protocol, at a fraction of the cost: on
    Python 3.11 a runtime protocol check gathers the protocol's members again on every call
    (about 20 us), and a window asks several per strategy. Same rule: every member present."""
    return all(hasattr(obj, name) for name in _members(kind))


def is_strategy(obj: object) -> TypeGuard[Strategy]:
    return _has_members(obj, Strategy)


def is_folding(obj: object) -> TypeGuard[Folding]:
    return _has_members(obj, Folding)


def is_budgeted(obj: object) -> TypeGuard[Budgeted]:
    return _has_members(obj, Budgeted)


def is_around(obj: object) -> TypeGuard[Around]:
    return _has_members(obj, Around)


def is_rewriting(obj: object) -> TypeGuard[Rewriting]:
    return _has_members(obj, Rewriting)


def flatten(chain: Sequence[Strategy]) -> list[Strategy]:
    """The chain with every wrapper's inner strategies in its place (after the wrapper)."""
    out: list[Strategy] = []
    for s in chain:
        out.append(s)
        if is_around(s):
            out += flatten(s.inner)
    return out


def for_model(s: Strategy, model: str) -> Strategy:
    """A strategy whose thresholds are fractions of a context window, in tokens for ``model``
    (anything with ``for_model``; the others as they are)."""
    if is_around(s):
        return s.with_inner([for_model(i, model) for i in s.inner])
    resolve = getattr(s, "for_model", None)
    return cast(Strategy, resolve(model)) if callable(resolve) else s


def with_reserve(s: Strategy, reserve: int) -> Strategy:
    if is_around(s):
        return s.with_inner([with_reserve(i, reserve) for i in s.inner])
    return s.with_reserve(reserve) if is_budgeted(s) else s


@dataclass(frozen=True)
class ChainKinds:
    """What a chain holds, found once per window: runtime protocol checks are costly, and a
    window asks these questions in several places."""

    flat: tuple[Strategy, ...]
    folder: Folding | None
    allowed: int | None
    rewriters: tuple[Rewriting, ...]
    anchored: bool

    @classmethod
    def of(cls, chain: Sequence[Strategy]) -> ChainKinds:
        flat = tuple(flatten(chain))
        folder = next((s for s in flat if is_folding(s)), None)
        budgets = [s.allowed for s in flat if is_budgeted(s)]
        return cls(
            flat,
            folder,
            min(budgets) if budgets else None,
            tuple(s for s in flat if is_rewriting(s)),
            any(is_around(s) for s in flat),
        )


def budget_of(chain: Sequence[Strategy]) -> int | None:
    """The tightest prompt budget of the chain's budgets, wrappers' included (None: none)."""
    budgets = [s.allowed for s in flatten(chain) if is_budgeted(s)]
    return min(budgets) if budgets else None


def chain_of(strategy: StrategyArg) -> list[Strategy]:
    """One strategy, a list of them applied in order, or None for the whole history."""
    if strategy is None:
        return []
    if isinstance(strategy, (list, tuple)):
        items: list[Strategy] = list(strategy)
    else:
        items = [cast(Strategy, strategy)]
    for i, s in enumerate(items):
        if not is_strategy(s):
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
    needs = [s.lookback() for s in chain]
    active = [lb for lb in needs if not lb.passive]
    if not active:
        return None  # only strategies that keep everything: the whole history
    for lb in active:
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

    strategy: Folding
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
    #: a wrapper held the previous request's start
    held: bool = False


def plan_window(
    chain: Sequence[Strategy],
    view: WindowView,
    stored_summary: tuple[int, str] | None,
    counter: TokenCounter,
    kinds: ChainKinds | None = None,
) -> Generator[FoldRequest, tuple[int, str] | None, Plan]:
    """Apply the strategies in order; yield a fold request where a folding strategy asks."""
    kinds = kinds or ChainKinds.of(chain)
    folder = kinds.folder
    plan = Plan(start=view.start, summary=None, allowed=kinds.allowed)
    if folder is not None and stored_summary is not None:
        upto, text = stored_summary
        msg = folder.summary_message(text)
        plan.summary = SummaryPart(upto, counter.message(msg), text, False, msg)
        view.move_to(view.start, plan.summary.tokens, upto)
    yield from _apply(chain, view, plan, counter)
    plan.start = view.start
    return plan


def _apply(
    chain: Sequence[Strategy], view: WindowView, plan: Plan, counter: TokenCounter
) -> Generator[FoldRequest, tuple[int, str] | None, None]:
    for strategy in chain:
        if is_folding(strategy):
            fold = strategy.fold(view)
            if fold is not None:
                previous = plan.summary.text if plan.summary else None
                got = yield FoldRequest(strategy, fold.from_seq, fold.upto_seq, previous)
                if got is not None:
                    upto, text = got
                    msg = strategy.summary_message(text)
                    plan.summary = SummaryPart(upto, counter.message(msg), text, True, msg)
                plan.summary_failed = got is None
                s = plan.summary
                view.move_to(fold.upto_seq + 1, s.tokens if s else 0, s.upto_seq if s else 0)
        if is_around(strategy):
            if strategy.enter(view):
                plan.held = True
                plan.steps.append(f"{strategy!r}: held the tail from seq {view.start}")
                continue
            yield from _apply(strategy.inner, view, plan, counter)
            answer = strategy.leave(view)
        else:
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
        plan.steps.append(f"{strategy!r}: tail from seq {view.start}")


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
    #: seqs of kept messages that go out rewritten (a rewriting strategy's placeholders)
    rewritten: tuple[int, ...] = ()
    #: a strategy holds the start still between requests: a request remembers ``kept.first``
    anchored: bool = False
    #: the start of the previous request was held (the tail only grew since)
    held: bool = False
    #: the prompt tokens this request should find in the provider's cache (OpenAI's rule:
    #: the unchanged beginning, from 1,024 tokens in steps of 128): tools, the pinned prefix,
    #: a stored summary, and, when held, the tail before the newest round
    predicted_cached_tokens: int = 0
    #: what those cached tokens save against the full input rate, in micro-dollars, at the
    #: ledger's prices (None: no price, or no cached-input discount, for the model)
    predicted_saving_micros: int | None = None
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
        sent = self.messages[len(out) :]
        out += list(zip(sent, self.records[n_prefix:], strict=True))
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
        saving = self.predicted_saving_micros
        lines.append(
            f"  cache       about {self.predicted_cached_tokens} tokens served from the prompt "
            f"cache ({'start held' if self.held else 'start moved or not held'})"
            + ("" if not saving else f", saving ${saving / 1_000_000:.6f}")
        )
        lines += [f"  step        {s}" for s in self.steps]
        return "\n".join(lines)
