"""StablePrefix: hold the window's start still between requests, so the provider's prompt
cache keeps serving everything before the newest messages."""

from __future__ import annotations

import copy
from collections.abc import Sequence

from chatledger.errors import ChatLedgerError, InvalidArgumentError
from chatledger.rows import Lookback
from chatledger.window import (
    Cut,
    Strategy,
    StrategyArg,
    WindowView,
    budget_of,
    chain_of,
    combined_lookback,
    flatten,
    is_around,
    is_folding,
)

__all__ = ["StablePrefix"]


class StablePrefix:
    """Keep the start (and the summary) of the window last sent for as long as the window
    still satisfies ``strategy``; when it no longer does, re-plan once and cut down to
    ``low_water`` of the budget, so the turns that follow only append.

    A window that slides by one round every turn changes the prompt right after the system
    message, and a provider caches only a prompt's unchanged beginning: a sliding window is
    almost never cached. Held still, everything up to the newest messages is.

    The previous start is stored with the conversation when a request is made (``request``,
    ``chat``, ``stream``; a bare ``window()`` does not move it), so it holds across processes
    and restarts. Inner folding strategies fold only at re-plan points. A re-plan's low-water
    cut drops whole rounds between the summary and the new start; to fold them instead, give
    the summarizer a ``keep`` at most ``low_water`` of the budget.

    ``low_water`` is a fraction of the tightest inner budget; with no budget inside (e.g.
    ``LastRounds``), of the window the inner strategies chose.
    """

    def __init__(self, strategy: StrategyArg, low_water: float = 0.6) -> None:
        inner = chain_of(strategy)
        if not inner:
            raise InvalidArgumentError("strategy", "StablePrefix needs a strategy to hold")
        if (
            not isinstance(low_water, (int, float))
            or isinstance(low_water, bool)
            or not 0 < low_water <= 1
        ):
            raise InvalidArgumentError("low_water", "must be a fraction in (0, 1]")
        self.inner: Sequence[Strategy] = tuple(inner)
        self.low_water = float(low_water)

    def with_inner(self, inner: Sequence[Strategy]) -> StablePrefix:
        return StablePrefix(list(inner), self.low_water)

    def lookback(self) -> Lookback:
        need = combined_lookback(list(self.inner))
        return Lookback() if need is None else need

    def enter(self, view: WindowView) -> bool:
        """Hold the previous start when it is still a valid start and every inner strategy,
        applied as this turn would apply it, would keep at least that much."""
        anchor = view.anchor
        if anchor is None or anchor < view.start or anchor not in view.starts():
            return False
        scratch = copy.copy(view)
        try:
            for s in flatten(self.inner):
                if is_folding(s) or is_around(s):
                    continue  # folds wait for a re-plan; nested wrappers are not re-run
                answer = s.apply(scratch)
                cut = answer if isinstance(answer, Cut) else Cut(int(answer))
                if cut.drop_summary and scratch.summary_tokens:
                    return False  # the held window would lose its summary: re-plan
                scratch.move_to(cut.start, scratch.summary_tokens, scratch.summary_upto)
        except ChatLedgerError:
            return False  # let the re-plan raise it, with its own account
        if scratch.start > anchor:
            return False
        view.move_to(anchor, view.summary_tokens, view.summary_upto)
        return True

    def leave(self, view: WindowView) -> int:
        """After a re-plan: the earliest whole-round start at or after the inner answer whose
        window fits ``low_water`` of the budget (the newest round at most)."""
        start = view.start
        newest = view.newest_round_start
        if start >= newest:
            return start
        budget = budget_of(list(self.inner))
        limit = budget if budget is not None else view.fixed_tokens + view.tail_tokens()
        target = self.low_water * limit
        whole = [s for s in view.starts() if start <= s <= newest]
        for s in whole:
            if view.fixed_tokens + view.tail_tokens(s) <= target:
                return s
        return newest

    def apply(self, view: WindowView) -> int | Cut:
        """For use outside the planner: hold, or the inner answers (no folds) then the cut."""
        if self.enter(view):
            return view.start
        for s in self.inner:
            answer = s.apply(view)
            cut = answer if isinstance(answer, Cut) else Cut(int(answer))
            if cut.drop_summary:
                view.move_to(cut.start, 0, 0)
            else:
                view.move_to(cut.start, view.summary_tokens, view.summary_upto)
        return self.leave(view)

    def __repr__(self) -> str:
        inner = ", ".join(repr(s) for s in self.inner)
        return f"StablePrefix([{inner}], low_water={self.low_water})"
