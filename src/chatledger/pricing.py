"""What a chat request costs, in integer micro-dollars (1e-6 USD).

Why integers: a ledger adds up costs over millions of requests, so each cost is computed exactly
(prices are :class:`~decimal.Decimal`, the arithmetic is rational) and rounded once, half up, to
a whole micro-dollar. Sums of integers never drift the way sums of floats do.

Why a table object instead of a global dict: prices change and every deployment has its own
(fine-tunes, negotiated rates, new models). :meth:`PriceTable.default` is a snapshot of OpenAI's
published standard-tier prices; :meth:`PriceTable.with_overrides` returns a new table and never
changes the old one, so nothing is shared or mutated between callers.

The default table is a default, not a bill: see ``docs/pricing.md`` for the source, the date and
what is deliberately left out.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from types import MappingProxyType
from typing import Final

from chatledger.errors import InvalidArgumentError

__all__ = [
    "PRICES_AS_OF",
    "PRICES_SOURCE",
    "Price",
    "PriceTable",
    "cost_micros",
    "micros_to_usd",
]

PRICES_SOURCE: Final = "https://developers.openai.com/api/docs/pricing"
"""Where the default figures come from: the Standard tab of OpenAI's pricing page."""

PRICES_AS_OF: Final = "2026-09-22"
"""The last date the default figures are known to be valid. Every row used here was identical in
copies of the pricing page from 2026-08-15 and from after 2026-09-22 (the GPT-6 Sol/Luna launch);
the live page was not read again after that, so check it before relying on a figure."""


# --- prices -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Price:
    """US dollars per 1,000,000 tokens for one model.

    ``cached_input`` is the rate for prompt tokens served from OpenAI's prompt cache, or None when
    the model has no cached-input discount (cached tokens are then billed at ``input``).
    ``cache_write`` is the rate for prompt tokens written to the cache where a provider bills
    writes (Anthropic at 1.25x input; newer OpenAI families), or None: billed at ``input``.

    Rates are stored as :class:`~decimal.Decimal` so ``Price("0.075", ...)`` means exactly 0.075;
    ints and strings are converted exactly, floats through their shortest repr (``0.1`` becomes
    ``Decimal("0.1")``, not the binary approximation).
    """

    input: Decimal
    cached_input: Decimal | None
    output: Decimal
    cache_write: Decimal | None = None

    def __post_init__(self) -> None:
        if self.cache_write is not None:
            object.__setattr__(self, "cache_write", _rate("cache_write", self.cache_write))
        # frozen: the coerced values go in through object.__setattr__, once, at construction
        object.__setattr__(self, "input", _rate("input", self.input))
        object.__setattr__(self, "output", _rate("output", self.output))
        if self.cached_input is not None:
            cached = _rate("cached_input", self.cached_input)
            if cached > self.input:
                # a cache hit that costs more than a miss is a typo, and would break the promise
                # that cached tokens never cost more than uncached ones
                raise InvalidArgumentError("cached_input", "must not exceed input")
            object.__setattr__(self, "cached_input", cached)


def _rate(field: str, value: object) -> Decimal:
    """A finite, non-negative Decimal from a Decimal, int, str or float."""
    rule = "must be a finite, non-negative number of US dollars per 1M tokens"
    if isinstance(value, bool):
        raise InvalidArgumentError(field, f"{rule}, got bool")
    try:
        if isinstance(value, Decimal):
            rate = value
        elif isinstance(value, int | str):
            rate = Decimal(value)
        elif isinstance(value, float):
            rate = Decimal(repr(value))
        else:
            raise InvalidArgumentError(field, f"{rule}, got {type(value).__name__}")
    except ArithmeticError:  # decimal.InvalidOperation: an unparsable string
        raise InvalidArgumentError(field, f"{rule}, got {value!r}") from None
    if not rate.is_finite() or rate < 0:
        raise InvalidArgumentError(field, f"{rule}, got {value!r}")
    return rate


# --- arithmetic -------------------------------------------------------------------------------


def _count(field: str, value: object) -> int:
    """A token count: a non-negative int (bool is refused, it is a bug, not a count)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentError(field, f"must be a non-negative integer, got {value!r}")
    if value < 0:
        raise InvalidArgumentError(field, f"must be a non-negative integer, got {value}")
    return value


def _check_usage(prompt_tokens: object, completion_tokens: object, cached_tokens: object) -> None:
    prompt = _count("prompt_tokens", prompt_tokens)
    _count("completion_tokens", completion_tokens)
    cached = _count("cached_tokens", cached_tokens)
    if cached > prompt:
        # the API reports cached tokens as part of prompt_tokens, never on top of them
        raise InvalidArgumentError(
            "cached_tokens", f"must not exceed prompt_tokens ({cached} > {prompt})"
        )


def _round_half_up(amount: Fraction) -> int:
    """Nearest integer, halves away from zero (amounts here are never negative)."""
    return math.floor(amount + Fraction(1, 2))


def _micros(price: Price, prompt: int, completion: int, cached: int, written: int = 0) -> int:
    # tokens x (USD per 1M tokens) is already micro-dollars; summing exact fractions and
    # rounding once keeps a $0.40 request from losing or gaining a micro-dollar per component
    cached_rate = price.input if price.cached_input is None else price.cached_input
    write_rate = price.input if price.cache_write is None else price.cache_write
    written = min(written, prompt - cached)  # part of prompt_tokens, as cached tokens are
    exact = (
        (prompt - cached - written) * Fraction(price.input)
        + cached * Fraction(cached_rate)
        + written * Fraction(write_rate)
        + completion * Fraction(price.output)
    )
    return _round_half_up(exact)


def cost_micros(
    price: Price,
    *,
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int = 0,
    cache_write_tokens: int = 0,
) -> int:
    """What a finished request cost, in micro-dollars, rounded half up.

    Pass the API's ``usage`` figures as they are: ``cached_tokens``
    (``prompt_tokens_details.cached_tokens``) is part of ``prompt_tokens`` and is billed at
    ``price.cached_input`` (at ``price.input`` when that is None); ``cache_write_tokens``, where
    a provider reports them, are part of it too and billed at ``price.cache_write``; reasoning
    tokens are already inside ``completion_tokens`` and are billed as output.

    >>> cost_micros(Price(Decimal("2.50"), Decimal("1.25"), Decimal("10.00")),
    ...             prompt_tokens=1_000_000, completion_tokens=0)
    2500000
    """
    if not isinstance(price, Price):
        raise InvalidArgumentError("price", f"must be a Price, got {type(price).__name__}")
    _check_usage(prompt_tokens, completion_tokens, cached_tokens)
    written = _count("cache_write_tokens", cache_write_tokens)
    return _micros(price, prompt_tokens, completion_tokens, cached_tokens, written)


def micros_to_usd(micros: int) -> Decimal:
    """Micro-dollars as an exact Decimal of US dollars (``2_500_000`` -> ``Decimal("2.500000")``).

    Exact for any int: the digits are kept and only the exponent moves, so no decimal context
    can round a large total.
    """
    if isinstance(micros, bool) or not isinstance(micros, int):
        raise InvalidArgumentError("micros", f"must be an integer, got {micros!r}")
    sign, digits, exponent = Decimal(micros).as_tuple()
    assert isinstance(exponent, int)  # an int converts to a finite Decimal
    return Decimal((sign, digits, exponent - 6))


# --- the table --------------------------------------------------------------------------------

_PROVIDER_PREFIX = "openai/"
_FINE_TUNE_PREFIX = "ft:"
_DATED_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}$")


def _candidates(model: str) -> Iterator[str]:
    """Names to try, most specific first: as given, without ``openai/``, the base of an
    ``ft:BASE:org:suffix:id`` fine-tune, then without a ``-YYYY-MM-DD`` snapshot date.

    Older ``-MMDD`` snapshots (``gpt-3.5-turbo-0613``) are not stripped: several were priced
    differently from their alias, so the table lists the ones it knows by name and leaves the
    rest unknown rather than guess.
    """
    yield model
    name = model
    if name.startswith(_PROVIDER_PREFIX):
        name = name[len(_PROVIDER_PREFIX) :]
        yield name
    if name.startswith(_FINE_TUNE_PREFIX):
        name = name.split(":")[1]
        yield name
    base = _DATED_SUFFIX.sub("", name)
    if base != name:
        yield base


def _model_name(model: object) -> str:
    if not isinstance(model, str):
        raise InvalidArgumentError("model", f"must be a string, got {type(model).__name__}")
    if not model:
        raise InvalidArgumentError("model", "must not be empty")
    return model


def _validated(prices: object, field: str) -> dict[str, Price]:
    if not isinstance(prices, Mapping):
        raise InvalidArgumentError(field, "must be a mapping of model name to Price")
    checked: dict[str, Price] = {}
    for name, price in prices.items():
        if not isinstance(name, str) or not name or name != name.strip():
            raise InvalidArgumentError(
                field, f"model names must be non-empty strings without surrounding spaces: {name!r}"
            )
        if not isinstance(price, Price):
            raise InvalidArgumentError(
                f"{field}[{name!r}]", f"must be a Price, got {type(price).__name__}"
            )
        checked[name] = price
    return checked


class PriceTable:
    """An immutable mapping of model name to :class:`Price`, with OpenAI's naming rules.

    Lookups try the exact name first, so an override (or a differently priced snapshot such as
    ``gpt-4o-2024-05-13``) always wins over a fallback; see :meth:`resolve`.
    """

    __slots__ = ("_prices",)

    _prices: Mapping[str, Price]

    def __init__(self, prices: Mapping[str, Price]) -> None:
        # a private copy behind a read-only view: the caller's dict can change, this cannot
        object.__setattr__(self, "_prices", MappingProxyType(_validated(prices, "prices")))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("a PriceTable cannot be changed; use with_overrides()")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("a PriceTable cannot be changed; use with_overrides()")

    @classmethod
    def default(cls) -> PriceTable:
        """OpenAI's standard-tier prices as of :data:`PRICES_AS_OF` (see ``docs/pricing.md``).

        A new table each call, built from a read-only snapshot, so no caller can affect another.
        """
        return PriceTable(_DEFAULT_PRICES)

    @property
    def prices(self) -> Mapping[str, Price]:
        """The table's entries, read-only (exact names; no fallback rules applied)."""
        return self._prices

    def with_overrides(self, overrides: Mapping[str, Price]) -> PriceTable:
        """A new table with ``overrides`` added or replacing entries; this one is unchanged."""
        merged = dict(self._prices)
        merged.update(_validated(overrides, "overrides"))
        return PriceTable(merged)

    def resolve(self, model: str) -> str | None:
        """The table entry ``model`` is priced by, or None when it is unknown.

        ``gpt-4o-2024-08-06`` -> ``gpt-4o``; ``openai/gpt-5-mini`` -> ``gpt-5-mini``;
        ``ft:gpt-4o-mini-2024-07-18:acme::abc123`` -> ``gpt-4o-mini``. OpenAI bills fine-tuned
        models at their own rates (so far higher than the base model's), so the base price is
        an underestimate: add the exact ``ft:`` name with :meth:`with_overrides`.
        """
        for name in _candidates(_model_name(model)):
            if name in self._prices:
                return name
        return None

    def price(self, model: str) -> Price | None:
        """The price for ``model`` under the lookup rules of :meth:`resolve`, or None."""
        key = self.resolve(model)
        return None if key is None else self._prices[key]

    def cost_micros(
        self,
        model: str,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        cached_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> int | None:
        """:func:`cost_micros` for ``model``, or None when the model is unknown.

        Bad usage figures raise even for an unknown model: they are a bug either way.
        """
        _check_usage(prompt_tokens, completion_tokens, cached_tokens)
        written = _count("cache_write_tokens", cache_write_tokens)
        price = self.price(model)
        if price is None:
            return None
        return _micros(price, prompt_tokens, completion_tokens, cached_tokens, written)

    def estimate_micros(
        self, model: str, prompt_tokens: int, max_completion_tokens: int
    ) -> int | None:
        """The most a request can cost before it is sent, or None for an unknown model.

        Worst case: every prompt token uncached (a cache hit is never guaranteed), written to
        the cache where writes cost more than input, and the full ``max_completion_tokens``
        generated (reasoning tokens count against that limit too).
        """
        prompt = _count("prompt_tokens", prompt_tokens)
        completion = _count("max_completion_tokens", max_completion_tokens)
        price = self.price(model)
        if price is None:
            return None
        dearer = price.cache_write is not None and price.cache_write > price.input
        return _micros(price, prompt, completion, 0, prompt if dearer else 0)

    def __len__(self) -> int:
        return len(self._prices)

    def __contains__(self, model: object) -> bool:
        """Exact membership only; use :meth:`resolve` for the fallback rules."""
        return model in self._prices

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PriceTable):
            return NotImplemented
        return dict(self._prices) == dict(other._prices)

    __hash__ = None  # type: ignore[assignment]  # equal tables need not be the same object

    def __repr__(self) -> str:
        return f"PriceTable({len(self._prices)} models)"

    def __reduce__(self) -> tuple[type[PriceTable], tuple[dict[str, Price]]]:
        # pickle and copy rebuild through __init__ (a read-only view cannot be pickled itself)
        return (PriceTable, (dict(self._prices),))


# --- the default table ------------------------------------------------------------------------
#
# Source: https://developers.openai.com/api/docs/pricing, Standard tab, "Short context" columns,
# USD per 1M tokens. Rows identical in copies of the page dated 2026-08-15 and after 2026-09-22;
# gpt-4, gpt-4-turbo(-preview), gpt-3.5-turbo, gpt-5-mini, gpt-5-nano, gpt-5.1 and gpt-5.4-nano
# also checked against their model pages (developers.openai.com/api/docs/models/<name>).
#
# Left out on purpose (their standard price has parts Price cannot express, so a cost would be
# silently wrong): gpt-6-*, gpt-6.1-*, gpt-5.6-* (cache writes at 1.25x input, and long-context
# rates above 272K input tokens), gpt-5.5, gpt-5.5-pro, gpt-5.4, gpt-5.4-pro (long-context
# rates). Also left out: models no longer on the page (chatgpt-4o-latest, o1-mini,
# gpt-4.5-preview), completions-only models (gpt-3.5-turbo-instruct, davinci-002, babbage-002),
# and gpt-oss (open weights; OpenAI's API does not sell it).


def _p(input: str, cached_input: str | None, output: str) -> Price:
    return Price(
        Decimal(input), None if cached_input is None else Decimal(cached_input), Decimal(output)
    )


_DEFAULT_PRICES: Final[Mapping[str, Price]] = MappingProxyType(
    {
        # GPT-5 family (no long-context tier)
        "gpt-5.4-mini": _p("0.75", "0.075", "4.50"),
        "gpt-5.4-nano": _p("0.20", "0.02", "1.25"),
        "gpt-5.2": _p("1.75", "0.175", "14.00"),
        "gpt-5.2-pro": _p("21.00", None, "168.00"),
        "gpt-5.1": _p("1.25", "0.125", "10.00"),
        "gpt-5": _p("1.25", "0.125", "10.00"),
        "gpt-5-mini": _p("0.25", "0.025", "2.00"),
        "gpt-5-nano": _p("0.05", "0.005", "0.40"),
        "gpt-5-pro": _p("15.00", None, "120.00"),
        # GPT-4.1 and GPT-4o
        "gpt-4.1": _p("2.00", "0.50", "8.00"),
        "gpt-4.1-mini": _p("0.40", "0.10", "1.60"),
        "gpt-4.1-nano": _p("0.10", "0.025", "0.40"),
        "gpt-4o": _p("2.50", "1.25", "10.00"),
        "gpt-4o-2024-05-13": _p("5.00", None, "15.00"),  # the first snapshot kept its launch price
        "gpt-4o-mini": _p("0.15", "0.075", "0.60"),
        # o-series reasoning models
        "o1": _p("15.00", "7.50", "60.00"),
        "o1-pro": _p("150.00", None, "600.00"),
        "o3": _p("2.00", "0.50", "8.00"),
        "o3-pro": _p("20.00", None, "80.00"),
        "o3-mini": _p("1.10", "0.55", "4.40"),
        "o4-mini": _p("1.10", "0.275", "4.40"),
        # older GPT-4 and GPT-3.5 (the page lists the snapshot the alias points to)
        "gpt-4-turbo": _p("10.00", None, "30.00"),  # = gpt-4-turbo-2024-04-09
        "gpt-4-turbo-preview": _p("10.00", None, "30.00"),  # model page
        "gpt-4-0125-preview": _p("10.00", None, "30.00"),  # gpt-4-turbo-preview's snapshot
        "gpt-4": _p("30.00", None, "60.00"),
        "gpt-4-0613": _p("30.00", None, "60.00"),
        "gpt-3.5-turbo": _p("0.50", None, "1.50"),
        "gpt-3.5-turbo-0125": _p("0.50", None, "1.50"),
        "gpt-3.5-turbo-1106": _p("1.00", None, "2.00"),
    }
)
