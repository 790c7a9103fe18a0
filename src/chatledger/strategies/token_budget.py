"""TokenBudget: as many of the newest rounds as fit a prompt-token budget."""

from __future__ import annotations

from chatledger.errors import ContextOverflowError, InvalidArgumentError, InvalidParameterError
from chatledger.model_catalogue import resolve_budget
from chatledger.window import Cut, Lookback, WindowView

__all__ = ["TokenBudget"]


def _positive(value: object, name: str, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise InvalidArgumentError(name, f"must be an integer of at least {minimum}")
    return value


class TokenBudget:
    """Keep the newest rounds that fit, so the request's prompt tokens are at most
    ``limit - reserve`` (``reserve`` is room left for the completion).

    The window is maximal: the round before the first one kept would not fit. A summary is
    left out before the newest round is cut; when even the newest round does not fit, the tail
    starts inside it (at an assistant message, never at a tool result). When the prefix and
    the newest message alone exceed the budget, :class:`ContextOverflowError` says by how
    much.

    ``limit`` may be a fraction of the model's context window (``TokenBudget(0.5)``); it is
    turned into tokens for each conversation's model when a window is planned (the model
    catalogue, :mod:`chatledger.model_catalogue`), and an unknown model says so.
    """

    def __init__(self, limit: int | float, reserve: int = 0) -> None:
        self.fraction: float | None = None
        if isinstance(limit, float):
            resolve_budget(limit, "gpt-4o")  # checks the fraction's range only
            self.fraction, self.limit = limit, 0
        else:
            self.limit = _positive(limit, "limit", 1)
        self.reserve = _positive(reserve, "reserve", 0)
        if self.fraction is None and self.reserve >= self.limit:
            raise InvalidArgumentError("reserve", "must be smaller than limit")

    def for_model(self, model: str) -> TokenBudget:
        """This budget in tokens for ``model`` (itself when given in tokens)."""
        if self.fraction is None:
            return self
        return TokenBudget(resolve_budget(self.fraction, model), self.reserve)

    @property
    def allowed(self) -> int:
        """Prompt tokens a window may use."""
        if self.fraction is not None:
            raise InvalidArgumentError(
                "limit", f"{self!r} is a fraction of a model's context window: for_model() first"
            )
        return self.limit - self.reserve

    def with_reserve(self, tokens: int) -> TokenBudget:
        """This budget, leaving at least ``tokens`` (a request's ``max_tokens``) unused."""
        if self.fraction is not None:
            return TokenBudget(self.fraction, max(self.reserve, tokens))
        if self.reserve >= tokens:
            return self
        if tokens >= self.limit:
            raise InvalidParameterError(
                [
                    (
                        "max_tokens",
                        f"{tokens} leaves no room for the prompt within {self!r}: lower it "
                        "or raise the budget",
                    )
                ]
            )
        return TokenBudget(self.limit, reserve=tokens)

    def lookback(self) -> Lookback:
        return Lookback(tokens=self.allowed)

    def apply(self, view: WindowView) -> int | Cut:
        starts = view.starts()
        newest = view.newest_round_start
        whole = [s for s in starts if s <= newest]  # starts that keep whole rounds
        partial = [s for s in starts if s > newest]
        room = self.allowed - view.fixed_tokens
        # a user message starts the tail whenever one can: before cutting into the newest
        # round, leave the summary out; a cut round keeps the summary if it still fits
        options = [(whole, 0)]
        if view.summary_tokens:
            options.append((whole, view.summary_tokens))
        options.append((partial, 0))
        if view.summary_tokens:
            options.append((partial, view.summary_tokens))
        for candidates, freed in options:
            for s in candidates:
                if view.tail_tokens(s) <= room + freed:
                    return Cut(s, drop_summary=bool(freed))
        smallest = starts[-1]
        needed = view.overhead_tokens + view.prefix_tokens + view.tail_tokens(smallest)
        raise ContextOverflowError(
            needed,
            self.allowed,
            f"limit {self.limit} minus reserve {self.reserve}; prefix {view.prefix_tokens}, "
            f"newest message(s) {view.tail_tokens(smallest)}, priming and tools "
            f"{view.overhead_tokens}",
        )

    def __repr__(self) -> str:
        limit = self.limit if self.fraction is None else self.fraction
        return f"TokenBudget({limit}, reserve={self.reserve})"
