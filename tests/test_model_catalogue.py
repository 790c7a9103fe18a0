"""The model catalogue: every priced model's limits, names resolved like prices, and budgets."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatledger import ChatLedgerError, InvalidArgumentError, PriceTable
from chatledger.model_catalogue import MODEL_LIMITS, ModelLimits, model_limits, resolve_budget


def test_every_priced_model_has_limits_and_nothing_else_does() -> None:
    priced = set(PriceTable.default().prices)
    assert set(MODEL_LIMITS) == priced
    for name in priced:
        limits = model_limits(name)
        assert 1 <= limits.max_output <= limits.context_window


@pytest.mark.parametrize(
    ("model", "context_window", "max_output"),
    [
        ("gpt-4o", 128_000, 16_384),
        ("gpt-4.1", 1_047_576, 32_768),
        ("gpt-5", 400_000, 128_000),
        ("gpt-5-pro", 400_000, 272_000),
        ("o3", 200_000, 100_000),
        ("gpt-4", 8_192, 8_192),
        ("gpt-3.5-turbo", 16_385, 4_096),
    ],
)
def test_published_figures(model: str, context_window: int, max_output: int) -> None:
    assert model_limits(model) == ModelLimits(context_window, max_output)


@pytest.mark.parametrize(
    ("model", "entry"),
    [
        ("gpt-4o-2024-08-06", "gpt-4o"),  # a dated snapshot: its alias
        ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),  # a snapshot with its own entry wins
        ("openai/gpt-5-mini", "gpt-5-mini"),
        ("ft:gpt-4o-mini-2024-07-18:acme::abc123", "gpt-4o-mini"),
        ("gpt-4.1-nano-2025-04-14", "gpt-4.1-nano"),
    ],
)
def test_names_resolve_as_prices_do(model: str, entry: str) -> None:
    assert PriceTable.default().resolve(model) == entry
    assert model_limits(model) == MODEL_LIMITS[entry]


def test_the_first_gpt_4o_snapshot_keeps_its_smaller_reply() -> None:
    assert model_limits("gpt-4o-2024-05-13").max_output == 4_096
    assert model_limits("gpt-4o-2024-11-20").max_output == 16_384


@pytest.mark.parametrize("model", ["gpt-7", "claude-sonnet-4-5", "gpt-3.5-turbo-0613", "o1-mini"])
def test_unknown_models_are_a_typed_error_with_a_way_out(model: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        model_limits(model)
    assert caught.value.field == "model"
    assert f"unknown model {model!r}: give the budget as a number of tokens" in str(caught.value)


@pytest.mark.parametrize("model", ["", 7, None])
def test_a_model_that_is_not_a_name_is_a_typed_error(model: Any) -> None:
    with pytest.raises(InvalidArgumentError):
        model_limits(model)


def test_limits_are_frozen_and_checked() -> None:
    limits = model_limits("gpt-4o")
    with pytest.raises(AttributeError):
        limits.context_window = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        MODEL_LIMITS["gpt-4o"] = limits  # type: ignore[index]
    bad_limits: list[tuple[Any, Any]] = [(0, 0), (10, 11), (True, 1), (10, 2.5)]
    for context_window, max_output in bad_limits:
        with pytest.raises(InvalidArgumentError):
            ModelLimits(context_window, max_output)


# -- budgets -----------------------------------------------------------------------------------


def test_an_int_is_tokens_as_given_with_or_without_a_model() -> None:
    assert resolve_budget(3_000, None) == 3_000
    assert resolve_budget(3_000, "gpt-4o") == 3_000
    assert resolve_budget(1, "no-such-model") == 1  # the model is not consulted
    assert resolve_budget(10**9, "gpt-4") == 10**9


@pytest.mark.parametrize(
    ("budget", "model", "tokens"),
    [
        (0.5, "gpt-4o", 64_000),
        (1.0, "gpt-4o", 128_000),
        (0.25, "gpt-4.1-2025-04-14", 261_894),  # 1,047,576 / 4
        (0.29, "gpt-4o", 37_120),  # 0.29 as written, though 0.29 * 128000 is 37119.99...
        (0.3, "gpt-3.5-turbo", 4_915),  # 4915.5 rounded down
        (0.001, "gpt-4", 8),  # 8.192
    ],
)
def test_a_fraction_is_of_the_context_window_rounded_down(
    budget: float, model: str, tokens: int
) -> None:
    assert resolve_budget(budget, model) == tokens


def test_a_fraction_needs_a_known_model() -> None:
    with pytest.raises(InvalidArgumentError, match="give the budget as a number of tokens"):
        resolve_budget(0.5, None)
    with pytest.raises(InvalidArgumentError, match="unknown model 'gpt-7'"):
        resolve_budget(0.5, "gpt-7")


@pytest.mark.parametrize(
    "budget",
    [0, -1, -0.5, 0.0, 1.5, 1.0000001, math.nan, math.inf, -math.inf, True, False, "0.5", None],
)
def test_bad_budgets_are_typed_errors(budget: Any) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        resolve_budget(budget, "gpt-4o")
    assert isinstance(caught.value, ChatLedgerError)
    assert caught.value.field == "budget"


def test_a_fraction_under_one_token_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="under 1 token"):
        resolve_budget(1e-6, "gpt-4")


@settings(max_examples=200, deadline=None)
@given(
    budget=st.one_of(st.floats(), st.integers(), st.booleans(), st.none(), st.text(max_size=3)),
    model=st.one_of(st.sampled_from(sorted(MODEL_LIMITS)), st.none(), st.text(max_size=8)),
)
def test_any_budget_is_tokens_within_the_window_or_a_typed_error(budget: Any, model: Any) -> None:
    try:
        tokens = resolve_budget(budget, model)
    except InvalidArgumentError:
        return
    assert isinstance(tokens, int) and tokens >= 1
    if isinstance(budget, float):
        assert tokens <= model_limits(model).context_window
    else:
        assert tokens == budget
