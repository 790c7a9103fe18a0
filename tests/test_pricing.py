"""Pricing: lookup rules, overrides, exact cost arithmetic, validation, and properties.

Expected costs are worked out by hand in the comments from the per-1M-token rates OpenAI
publishes (quoted next to each example), not read back from the table: a micro-dollar is 1e-6
USD, so ``tokens x (USD per 1M tokens)`` is the cost in micro-dollars.
"""

from __future__ import annotations

import copy
import pickle
import re
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatledger.errors import InvalidArgumentError
from chatledger.pricing import (
    PRICES_AS_OF,
    PRICES_SOURCE,
    Price,
    PriceTable,
    cost_micros,
    micros_to_usd,
)

DOCS = Path(__file__).resolve().parent.parent / "docs" / "pricing.md"


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return PriceTable.default()


# ---------------------------------------------------------------------------------------------
# Lookup rules
# ---------------------------------------------------------------------------------------------


def test_exact_names_resolve_to_themselves(table: PriceTable) -> None:
    for name in ("gpt-4o", "gpt-4.1-mini", "o3", "gpt-5-nano", "gpt-3.5-turbo"):
        assert table.resolve(name) == name
        assert table.price(name) is table.prices[name]


@pytest.mark.parametrize(
    ("model", "base"),
    [
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-2024-11-20", "gpt-4o"),
        ("gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-5-2025-08-07", "gpt-5"),
        ("o3-mini-2025-01-31", "o3-mini"),
        ("gpt-4-turbo-2024-04-09", "gpt-4-turbo"),
    ],
)
def test_dated_snapshots_fall_back_to_their_base_name(
    table: PriceTable, model: str, base: str
) -> None:
    assert table.resolve(model) == base
    assert table.price(model) == table.price(base)


def test_an_exact_snapshot_entry_beats_the_date_fallback(table: PriceTable) -> None:
    # gpt-4o-2024-05-13 kept its launch price ($5.00 in / $15.00 out per 1M, no cache
    # discount) when gpt-4o moved to $2.50 / $10.00, so it must not fall back to gpt-4o.
    assert table.resolve("gpt-4o-2024-05-13") == "gpt-4o-2024-05-13"
    # 1,000,000 input tokens x $5.00 per 1M = $5.00 = 5,000,000 micros (gpt-4o would give 2.5M)
    assert (
        table.cost_micros("gpt-4o-2024-05-13", prompt_tokens=1_000_000, completion_tokens=0)
        == 5_000_000
    )


def test_old_four_digit_snapshots_are_not_guessed(table: PriceTable) -> None:
    # gpt-3.5-turbo-0613 was billed $1.50 / $2.00 per 1M, not gpt-3.5-turbo's $0.50 / $1.50:
    # only the -MMDD snapshots the table names are priced, the rest stay unknown.
    assert table.resolve("gpt-3.5-turbo-0125") == "gpt-3.5-turbo-0125"
    assert table.resolve("gpt-4-0613") == "gpt-4-0613"
    assert table.resolve("gpt-3.5-turbo-0613") is None
    assert table.resolve("gpt-4-32k-0613") is None


@pytest.mark.parametrize(
    ("model", "base"),
    [
        ("ft:gpt-4o-mini-2024-07-18:acme::abc123", "gpt-4o-mini"),
        ("ft:gpt-4.1-2025-04-14:acme:support-bot:9xYz", "gpt-4.1"),
        ("ft:gpt-3.5-turbo-0125:acme::a1", "gpt-3.5-turbo-0125"),
        ("ft:gpt-4o-2024-05-13:acme::a1", "gpt-4o-2024-05-13"),
    ],
)
def test_fine_tunes_fall_back_to_their_base_model(table: PriceTable, model: str, base: str) -> None:
    assert table.resolve(model) == base


def test_an_override_for_the_exact_fine_tune_wins(table: PriceTable) -> None:
    ft = "ft:gpt-4o-mini-2024-07-18:acme::abc123"
    own = Price(Decimal("0.30"), Decimal("0.15"), Decimal("1.20"))
    priced = table.with_overrides({ft: own})
    assert priced.resolve(ft) == ft
    assert priced.price(ft) == own
    # 1,000,000 output tokens x $1.20 per 1M = 1,200,000 micros (the base model: 600,000)
    assert priced.cost_micros(ft, prompt_tokens=0, completion_tokens=1_000_000) == 1_200_000


@pytest.mark.parametrize(
    ("model", "base"),
    [
        ("openai/gpt-5-mini", "gpt-5-mini"),
        ("openai/gpt-4o-2024-08-06", "gpt-4o"),
        ("openai/gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),
        ("openai/ft:gpt-4o-2024-08-06:acme::x1", "gpt-4o"),
    ],
)
def test_a_leading_openai_prefix_is_stripped(table: PriceTable, model: str, base: str) -> None:
    assert table.resolve(model) == base


@pytest.mark.parametrize(
    "model",
    [
        "claude-sonnet-5",
        "anthropic/gpt-4o",  # only OpenAI's own prefix is understood
        "gpt-4o-2024-08-06-extra",
        "gpt-4o-audio-preview-2024-12-17",  # not the same model as gpt-4o
        "gpt-5.5",  # long-context pricing: left out on purpose, see docs/pricing.md
        "gpt-5.6-sol",  # cache-write pricing: left out on purpose
        "ft:",
        "openai/",
    ],
)
def test_unknown_models_have_no_price_and_no_cost(table: PriceTable, model: str) -> None:
    assert table.resolve(model) is None
    assert table.price(model) is None
    assert table.cost_micros(model, prompt_tokens=10, completion_tokens=10) is None
    assert table.estimate_micros(model, 10, 10) is None


@pytest.mark.parametrize("model", [None, 3, b"gpt-4o", ""])
def test_the_model_name_must_be_a_non_empty_string(table: PriceTable, model: object) -> None:
    with pytest.raises(InvalidArgumentError) as err:
        table.price(model)  # type: ignore[arg-type]
    assert err.value.field == "model"


# ---------------------------------------------------------------------------------------------
# Overrides and immutability
# ---------------------------------------------------------------------------------------------


def test_with_overrides_adds_a_model_without_touching_the_default() -> None:
    mine = Price(Decimal("1"), None, Decimal("2"))
    custom = PriceTable.default().with_overrides({"my-model": mine})
    assert custom.price("my-model") == mine
    assert PriceTable.default().price("my-model") is None
    assert "my-model" not in PriceTable.default()
    assert len(custom) == len(PriceTable.default()) + 1


def test_overriding_a_base_model_reprices_its_snapshots() -> None:
    cheaper = Price(Decimal("1.00"), Decimal("0.10"), Decimal("4.00"))
    custom = PriceTable.default().with_overrides({"gpt-4o": cheaper})
    assert custom.price("gpt-4o-2024-08-06") == cheaper
    assert PriceTable.default().price("gpt-4o-2024-08-06") != cheaper
    # the differently priced snapshot keeps its own exact entry
    assert custom.price("gpt-4o-2024-05-13") == PriceTable.default().price("gpt-4o-2024-05-13")


def test_the_default_table_cannot_be_mutated() -> None:
    default = PriceTable.default()
    before = dict(default.prices)
    with pytest.raises(TypeError):
        default.prices["gpt-4o"] = Price(Decimal(0), None, Decimal(0))  # type: ignore[index]
    with pytest.raises(AttributeError):
        default._prices = {}
    with pytest.raises(AttributeError):
        del default._prices
    with pytest.raises(AttributeError):
        default.prices["gpt-4o"].input = Decimal(0)  # type: ignore[misc]
    assert dict(PriceTable.default().prices) == before


def test_a_table_copies_the_mapping_it_is_built_from() -> None:
    source = {"a": Price(Decimal(1), None, Decimal(1))}
    built = PriceTable(source)
    source["b"] = Price(Decimal(2), None, Decimal(2))
    del source["a"]
    assert built.resolve("a") == "a"
    assert built.resolve("b") is None


def test_tables_survive_pickle_and_copy() -> None:
    # a ledger config holding a table may be copied or sent to a worker process
    custom = PriceTable.default().with_overrides({"m": Price(Decimal(1), None, Decimal(2))})
    for clone in (pickle.loads(pickle.dumps(custom)), copy.deepcopy(custom), copy.copy(custom)):
        assert clone == custom
        assert clone.price("gpt-4o-2024-08-06") == custom.price("gpt-4o")


def test_tables_compare_by_content() -> None:
    a = PriceTable({"m": Price(Decimal("1.0"), None, Decimal(2))})
    b = PriceTable({"m": Price(Decimal("1.00"), None, Decimal("2"))})
    assert a == b
    assert a != PriceTable.default()
    assert repr(a) == "PriceTable(1 models)"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"m": (1, None, 2)}, "overrides['m']"),
        ({"": Price(Decimal(1), None, Decimal(1))}, "overrides"),
        ({" m": Price(Decimal(1), None, Decimal(1))}, "overrides"),
        ({3: Price(Decimal(1), None, Decimal(1))}, "overrides"),
        ([("m", Price(Decimal(1), None, Decimal(1)))], "overrides"),
    ],
)
def test_bad_overrides_are_refused(overrides: object, field: str) -> None:
    with pytest.raises(InvalidArgumentError) as err:
        PriceTable.default().with_overrides(overrides)  # type: ignore[arg-type]
    assert err.value.field == field


# ---------------------------------------------------------------------------------------------
# Cost arithmetic, worked by hand
# ---------------------------------------------------------------------------------------------

# OpenAI's published standard rates, USD per 1M tokens, as quoted in docs/pricing.md
GPT_4O = ("2.50", "1.25", "10.00")  # input, cached input, output


def test_one_million_input_tokens_of_gpt_4o(table: PriceTable) -> None:
    # 1,000,000 x $2.50 / 1,000,000 = $2.50 = 2,500,000 micros
    assert table.cost_micros("gpt-4o", prompt_tokens=1_000_000, completion_tokens=0) == 2_500_000
    assert micros_to_usd(2_500_000) == Decimal("2.50")


def test_a_gpt_4o_request_with_cached_tokens(table: PriceTable) -> None:
    # prompt 1,000,000 of which 400,000 cached, completion 10,000:
    #   600,000 uncached x $2.50/1M = $1.50
    #   400,000 cached   x $1.25/1M = $0.50
    #    10,000 output   x $10.00/1M = $0.10
    #   total $2.10 = 2,100,000 micros
    got = table.cost_micros(
        "gpt-4o", prompt_tokens=1_000_000, completion_tokens=10_000, cached_tokens=400_000
    )
    assert got == 2_100_000
    price = Price(*(Decimal(r) for r in GPT_4O))
    assert (
        cost_micros(price, prompt_tokens=1_000_000, completion_tokens=10_000, cached_tokens=400_000)
        == got
    )


def test_cached_tokens_without_a_discount_are_billed_as_input(table: PriceTable) -> None:
    # gpt-4: $30.00 in / $60.00 out per 1M, no cached-input rate.
    # 1,000 prompt tokens (all reported cached) x $30/1M = 30,000 micros; 500 output x $60/1M
    # = 30,000 micros; total 60,000 micros = $0.06, the same as with no cache hit.
    assert table.price("gpt-4") is not None
    assert table.price("gpt-4").cached_input is None  # type: ignore[union-attr]
    cached = table.cost_micros(
        "gpt-4", prompt_tokens=1_000, completion_tokens=500, cached_tokens=1_000
    )
    uncached = table.cost_micros("gpt-4", prompt_tokens=1_000, completion_tokens=500)
    assert cached == uncached == 60_000


def test_reasoning_tokens_are_output_tokens(table: PriceTable) -> None:
    # o1-pro: $150 in / $600 out per 1M. 2,000 prompt tokens x 150 = 300,000 micros;
    # 5,000 completion tokens (4,200 of them reasoning, already included) x 600 = 3,000,000;
    # total 3,300,000 micros = $3.30
    got = table.cost_micros("o1-pro", prompt_tokens=2_000, completion_tokens=5_000)
    assert got == 3_300_000
    assert micros_to_usd(got) == Decimal("3.3")


def test_fractions_of_a_micro_dollar_round_half_up(table: PriceTable) -> None:
    # gpt-5-nano input is $0.05 per 1M = 0.05 micros per token
    def nano(n: int) -> int | None:
        return table.cost_micros("gpt-5-nano", prompt_tokens=n, completion_tokens=0)

    assert nano(1) == 0  # 0.05 -> 0
    assert nano(9) == 0  # 0.45 -> 0
    assert nano(10) == 1  # 0.50 -> 1 (half up)
    assert nano(29) == 1  # 1.45 -> 1
    assert nano(30) == 2  # 1.50 -> 2
    # cached input is $0.005 per 1M = 0.005 micros per token: 100 cached tokens = 0.5 -> 1
    assert (
        table.cost_micros("gpt-5-nano", prompt_tokens=100, completion_tokens=0, cached_tokens=100)
        == 1
    )


def test_halves_round_up_not_to_even() -> None:
    half = Price(Decimal("0.5"), None, Decimal("0"))
    # 5 tokens x 0.5 micros = 2.5 -> 3 (banker's rounding would give 2)
    assert cost_micros(half, prompt_tokens=5, completion_tokens=0) == 3
    assert cost_micros(half, prompt_tokens=1, completion_tokens=0) == 1  # 0.5 -> 1


def test_the_total_is_rounded_once_not_per_component() -> None:
    price = Price(Decimal("0.3"), Decimal("0.1"), Decimal("0.3"))
    # 1 uncached prompt token 0.3 + 1 output token 0.3 = 0.6 -> 1 micro
    # (rounding each part first would give 0 + 0 = 0)
    assert cost_micros(price, prompt_tokens=1, completion_tokens=1) == 1


def test_zero_usage_costs_nothing(table: PriceTable) -> None:
    for model in table.prices:
        assert table.cost_micros(model, prompt_tokens=0, completion_tokens=0) == 0


def test_huge_counts_stay_exact() -> None:
    # 10**30 tokens x $0.075 per 1M = 7.5 x 10**28 micros: beyond a default Decimal context
    price = Price(Decimal("0.075"), None, Decimal("0"))
    assert cost_micros(price, prompt_tokens=10**30, completion_tokens=0) == 75 * 10**27
    assert micros_to_usd(75 * 10**27 + 1) == Decimal("75000000000000000000000.000001")


def test_micros_to_usd() -> None:
    assert micros_to_usd(0) == 0
    assert micros_to_usd(1) == Decimal("0.000001")
    assert micros_to_usd(2_100_000) == Decimal("2.1")
    assert str(micros_to_usd(2_100_000)) == "2.100000"
    assert micros_to_usd(-5) == Decimal("-0.000005")
    for bad in (1.5, "3", True, None):
        with pytest.raises(InvalidArgumentError) as err:
            micros_to_usd(bad)  # type: ignore[arg-type]
        assert err.value.field == "micros"


# ---------------------------------------------------------------------------------------------
# Estimates before sending
# ---------------------------------------------------------------------------------------------


def test_estimate_is_the_uncached_worst_case(table: PriceTable) -> None:
    # gpt-4.1: $2.00 in / $8.00 out per 1M. 10,000 prompt tokens x 2 = 20,000 micros;
    # up to 2,000 completion tokens x 8 = 16,000 micros; worst case 36,000 micros = $0.036
    assert table.estimate_micros("gpt-4.1", 10_000, 2_000) == 36_000
    assert (
        table.estimate_micros("gpt-4.1", prompt_tokens=10_000, max_completion_tokens=2_000)
        == 36_000
    )
    # the cached rate ($0.50) is never assumed, even though a cache hit may happen
    assert (
        table.cost_micros(
            "gpt-4.1", prompt_tokens=10_000, completion_tokens=2_000, cached_tokens=10_000
        )
        == 5_000 + 16_000
    )


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("usage", "field"),
    [
        ({"prompt_tokens": -1, "completion_tokens": 0}, "prompt_tokens"),
        ({"prompt_tokens": 0, "completion_tokens": -1}, "completion_tokens"),
        ({"prompt_tokens": 5, "completion_tokens": 0, "cached_tokens": -1}, "cached_tokens"),
        ({"prompt_tokens": 5, "completion_tokens": 0, "cached_tokens": 6}, "cached_tokens"),
        ({"prompt_tokens": 1.0, "completion_tokens": 0}, "prompt_tokens"),
        ({"prompt_tokens": "10", "completion_tokens": 0}, "prompt_tokens"),
        ({"prompt_tokens": True, "completion_tokens": 0}, "prompt_tokens"),
        ({"prompt_tokens": 0, "completion_tokens": None}, "completion_tokens"),
    ],
)
def test_bad_usage_is_refused_naming_the_field(
    table: PriceTable, usage: dict[str, object], field: str
) -> None:
    price = table.price("gpt-4o")
    assert price is not None
    with pytest.raises(InvalidArgumentError) as err:
        cost_micros(price, **usage)  # type: ignore[arg-type]
    assert err.value.field == field
    # refused for unknown models too: bad figures are a bug whatever the model
    for model in ("gpt-4o", "no-such-model"):
        with pytest.raises(InvalidArgumentError) as err:
            table.cost_micros(model, **usage)  # type: ignore[arg-type]
        assert err.value.field == field


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((-1, 10), "prompt_tokens"),
        ((10, -1), "max_completion_tokens"),
        ((10, None), "max_completion_tokens"),
        ((10.0, 10), "prompt_tokens"),
    ],
)
def test_bad_estimate_arguments_are_refused(
    table: PriceTable, args: tuple[object, object], field: str
) -> None:
    with pytest.raises(InvalidArgumentError) as err:
        table.estimate_micros("gpt-4o", *args)  # type: ignore[arg-type]
    assert err.value.field == field


def test_cost_micros_wants_a_price() -> None:
    with pytest.raises(InvalidArgumentError) as err:
        cost_micros("gpt-4o", prompt_tokens=1, completion_tokens=1)  # type: ignore[arg-type]
    assert err.value.field == "price"


def test_price_rates_are_exact_decimals() -> None:
    assert Price(0.1, None, 2.5).input == Decimal("0.1")  # type: ignore[arg-type]
    assert Price("0.075", "0.0375", 3).cached_input == Decimal("0.0375")  # type: ignore[arg-type]
    assert Price(Decimal("2.50"), None, Decimal(10)) == Price(2.5, None, 10)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("rates", "field"),
    [
        (("-1", None, "1"), "input"),
        (("1", None, "-0.01"), "output"),
        (("1", "-1", "1"), "cached_input"),
        (("1", "1.5", "1"), "cached_input"),  # a cache hit dearer than a miss is a typo
        (("NaN", None, "1"), "input"),
        (("Infinity", None, "1"), "input"),
        (("two", None, "1"), "input"),
        ((True, None, "1"), "input"),
        ((None, None, "1"), "input"),
        (("1", None, [1]), "output"),
    ],
)
def test_bad_prices_are_refused_naming_the_field(rates: tuple[object, ...], field: str) -> None:
    with pytest.raises(InvalidArgumentError) as err:
        Price(*rates)  # type: ignore[arg-type]
    assert err.value.field == field


def test_prices_are_frozen() -> None:
    price = Price(Decimal(1), None, Decimal(2))
    with pytest.raises(AttributeError):
        price.output = Decimal(3)  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------

rates = st.decimals(min_value=0, max_value=1000, places=4, allow_nan=False, allow_infinity=False)


@st.composite
def prices(draw: st.DrawFn) -> Price:
    if draw(st.booleans()):
        return draw(st.sampled_from(sorted(PriceTable.default().prices.values(), key=repr)))
    input_rate = draw(rates)
    cached = draw(st.none() | rates.filter(lambda r: r <= input_rate))
    return Price(input_rate, cached, draw(rates))


counts = st.integers(min_value=0, max_value=10**9)


@st.composite
def usages(draw: st.DrawFn) -> tuple[int, int, int]:
    prompt = draw(counts)
    return prompt, draw(counts), draw(st.integers(min_value=0, max_value=prompt))


def cost(price: Price, usage: tuple[int, int, int]) -> int:
    prompt, completion, cached = usage
    return cost_micros(
        price, prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached
    )


@given(prices(), usages(), st.integers(min_value=0, max_value=10**6))
def test_cost_is_monotone_in_every_token_count(
    price: Price, usage: tuple[int, int, int], more: int
) -> None:
    prompt, completion, cached = usage
    base = cost(price, usage)
    assert cost(price, (prompt + more, completion, cached)) >= base
    assert cost(price, (prompt, completion + more, cached)) >= base
    # more of the same prompt served from cache: never dearer
    assert cost(price, (prompt, completion, min(prompt, cached + more))) <= base


@given(prices(), usages())
def test_cached_tokens_never_cost_more_than_uncached(
    price: Price, usage: tuple[int, int, int]
) -> None:
    prompt, completion, _ = usage
    assert cost(price, usage) <= cost(price, (prompt, completion, 0))


@given(prices(), usages())
def test_cost_is_within_half_a_micro_of_the_exact_amount(
    price: Price, usage: tuple[int, int, int]
) -> None:
    prompt, completion, cached = usage
    cached_rate = price.input if price.cached_input is None else price.cached_input
    exact = (
        Fraction(prompt - cached) * Fraction(price.input)
        + Fraction(cached) * Fraction(cached_rate)
        + Fraction(completion) * Fraction(price.output)
    )
    got = cost(price, usage)
    assert -Fraction(1, 2) < got - exact <= Fraction(1, 2)


@given(st.sampled_from(sorted(PriceTable.default().prices)), usages())
def test_the_estimate_bounds_the_actual_cost(model: str, usage: tuple[int, int, int]) -> None:
    table = PriceTable.default()
    prompt, completion, cached = usage
    estimate = table.estimate_micros(model, prompt, completion)
    actual = table.cost_micros(
        model, prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached
    )
    assert estimate is not None and actual is not None
    assert actual <= estimate


@given(st.integers(min_value=-(10**30), max_value=10**30))
def test_micros_to_usd_is_exact(micros: int) -> None:
    # compared as a Fraction: Decimal multiplication would round in the default context
    assert Fraction(micros_to_usd(micros)) * 1_000_000 == micros


# ---------------------------------------------------------------------------------------------
# The documentation matches the table
# ---------------------------------------------------------------------------------------------

_ROW = re.compile(r"^\| `([^`]+)` \| \$([\d.]+) \| (?:\$([\d.]+)|—) \| \$([\d.]+) \|")


def test_docs_list_exactly_the_default_table() -> None:
    text = DOCS.read_text(encoding="utf-8")
    documented: dict[str, Price] = {}
    for line in text.splitlines():
        m = _ROW.match(line)
        if m:
            name, input_rate, cached, output = m.groups()
            documented[name] = Price(
                Decimal(input_rate), None if cached is None else Decimal(cached), Decimal(output)
            )
    assert documented == dict(PriceTable.default().prices)
    assert PRICES_SOURCE in text
    assert PRICES_AS_OF in text
