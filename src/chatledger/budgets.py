"""Budget guards: ceilings in tokens or money, checked before a request is sent.

A budget covers one conversation or all of an owner's conversations, over all time or over a
period (the current UTC day, week or month, or a rolling ``timedelta``). The check adds what the
request can cost at most (its exact prompt tokens plus its ``max_tokens``) to what the usage
ledger already holds for the scope and period and to what requests in flight have reserved,
and refuses the request when the sum passes the ceiling: the spend is stopped before it
happens, not reported after. A request that passes reserves its maximum in the same
transaction (see ``operations.request``), so concurrent requests cannot pass together.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Literal

from chatledger.errors import BudgetExceededError, InvalidArgumentError

__all__ = ["Budget", "Period", "Spend"]

Period = Literal["day", "week", "month"] | timedelta | None


@dataclass(frozen=True, slots=True)
class Spend:
    """Tokens and money, as used so far or as one request may need."""

    tokens: int
    micros: int | None  # None: no price known for the model

    @property
    def usd(self) -> Decimal | None:
        return None if self.micros is None else Decimal(self.micros) / Decimal(1_000_000)


@dataclass(frozen=True)
class Budget:
    """A ceiling of ``tokens`` (prompt plus completion) and/or ``usd`` for a ``scope``.

    ``Budget(usd="5.00", scope="owner", period="month")``: each owner may spend five dollars a
    calendar month (UTC). ``Budget(tokens=200_000)``: a conversation may use 200k tokens.
    ``shrink=True``: a request whose ``max_tokens`` would pass the ceiling is sent with
    ``max_tokens`` lowered to what is left, instead of being refused (refused still when not
    even one completion token is left).
    """

    tokens: int | None = None
    usd: Decimal | str | float | None = None
    scope: Literal["conversation", "owner"] = "conversation"
    period: Period = None
    shrink: bool = False

    def __post_init__(self) -> None:
        if self.tokens is None and self.usd is None:
            raise InvalidArgumentError("Budget", "needs tokens or usd")
        if self.tokens is not None and (
            not isinstance(self.tokens, int) or isinstance(self.tokens, bool) or self.tokens < 1
        ):
            raise InvalidArgumentError("tokens", "must be a positive integer")
        if self.usd is not None:
            try:
                value = Decimal(str(self.usd))
            except ArithmeticError:
                raise InvalidArgumentError("usd", "must be a number of dollars") from None
            if not value.is_finite() or value <= 0:
                raise InvalidArgumentError("usd", "must be a positive number of dollars")
            object.__setattr__(self, "usd", value)
        if self.scope not in ("conversation", "owner"):
            raise InvalidArgumentError("scope", "must be 'conversation' or 'owner'")
        if not isinstance(self.shrink, bool):
            raise InvalidArgumentError("shrink", "must be True or False")
        if not (
            self.period is None
            or self.period in ("day", "week", "month")
            or (isinstance(self.period, timedelta) and self.period > timedelta(0))
        ):
            raise InvalidArgumentError("period", "must be day, week, month, a timedelta or None")

    @property
    def usd_micros(self) -> int | None:
        if self.usd is None:
            return None
        return int(Decimal(str(self.usd)) * 1_000_000)

    def since(self, now: datetime) -> datetime | None:
        """Start of the current period (UTC), or None for all time."""
        if self.period is None:
            return None
        if isinstance(self.period, timedelta):
            return now - self.period
        day = now.replace(hour=0, minute=0, second=0, microsecond=0)
        if self.period == "day":
            return day
        if self.period == "week":
            return day - timedelta(days=day.weekday())
        return day.replace(day=1)

    def fits(self, used: Spend, needed: Spend) -> bool:
        """Whether ``used + needed`` stays within every ceiling of this budget."""
        if self.tokens is not None and used.tokens + needed.tokens > self.tokens:
            return False
        limit = self.usd_micros
        if limit is None:
            return True
        return needed.micros is not None and (used.micros or 0) + needed.micros <= limit

    def room(
        self,
        used: Spend,
        prompt_tokens: int,
        room: int,
        price: Callable[[int], int | None],
        *,
        subject: str,
        step: int = 1,
    ) -> int:
        """The completion tokens (at most ``room``, a multiple of ``step``: ``n`` choices)
        this budget lets a request have, given its exact ``prompt_tokens``; ``price(r)`` is
        its most expensive cost with ``r`` completion tokens. Below ``room`` only with
        ``shrink``; raises :class:`BudgetExceededError` when nothing fits."""

        def needed(r: int) -> Spend:
            return Spend(prompt_tokens + r, price(r))

        if self.fits(used, needed(room)) or not self.shrink or room < step:
            self.check(used, needed(room), subject=subject)
            return room
        lo, hi = 0, room // step - 1  # in steps; the largest that fits, by bisection
        if self.tokens is not None:
            hi = min(hi, (self.tokens - used.tokens - prompt_tokens) // step)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.fits(used, needed(mid * step)):
                lo = mid
            else:
                hi = mid - 1
        if lo < 1:
            self.check(used, needed(room), subject=subject)
        return lo * step

    def check(self, used: Spend, needed: Spend, *, subject: str) -> None:
        """Raise :class:`BudgetExceededError` if ``used + needed`` passes a ceiling."""
        window = "in total" if self.period is None else f"per {self.period}"
        if self.tokens is not None and used.tokens + needed.tokens > self.tokens:
            raise BudgetExceededError(
                f"{subject} would use {used.tokens + needed.tokens} tokens {window} "
                f"(used {used.tokens}, this request up to {needed.tokens}), over its budget "
                f"of {self.tokens}",
                scope=self.scope,
                limit=self.tokens,
                used=used.tokens,
                needed=needed.tokens,
            )
        limit = self.usd_micros
        if limit is not None:
            if needed.micros is None:
                raise BudgetExceededError(
                    f"{subject} has a money budget but the model has no known price; add it "
                    "with PriceTable.with_overrides",
                    scope=self.scope,
                    limit=limit / 1e6,
                    used=(used.micros or 0) / 1e6,
                    needed=float("nan"),
                )
            spent = used.micros or 0
            if spent + needed.micros > limit:
                raise BudgetExceededError(
                    f"{subject} would spend ${(spent + needed.micros) / 1e6:.6f} {window} "
                    f"(spent ${spent / 1e6:.6f}, this request up to ${needed.micros / 1e6:.6f}),"
                    f" over its budget of ${Decimal(limit) / 1_000_000:f}",
                    scope=self.scope,
                    limit=limit / 1e6,
                    used=spent / 1e6,
                    needed=needed.micros / 1e6,
                )
