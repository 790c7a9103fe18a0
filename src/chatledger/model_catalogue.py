"""How much a model can read and write: its context window and its largest reply.

Why: a window's budget is most naturally "half of what the model takes", and a budget in
tokens that exceeds the model's window fails only when the request is sent. The catalogue
turns a fraction into tokens before anything is planned.

Names resolve exactly as prices do (:meth:`~chatledger.pricing.PriceTable.resolve`): a dated
snapshot (``gpt-4o-2024-08-06``), an ``openai/`` prefix or an ``ft:`` fine-tune finds its base
model's entry, and a snapshot with limits of its own (``gpt-4o-2024-05-13``) has its own entry.
The catalogue lists every model of the default price table, and only those: a model priced is
a model whose limits are known.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType
from typing import Final

from chatledger.errors import InvalidArgumentError
from chatledger.pricing import PriceTable

__all__ = [
    "LIMITS_AS_OF",
    "MODEL_LIMITS",
    "ModelLimits",
    "model_limits",
    "resolve_budget",
]

LIMITS_AS_OF: Final = "2026-11-30"
"""When the figures below were last compared with their sources (cited per family)."""


@dataclass(frozen=True, slots=True)
class ModelLimits:
    """A model's published limits, in tokens.

    ``context_window`` is what one request may hold, prompt and reply together (the API refuses
    a prompt plus ``max_completion_tokens`` above it); ``max_output`` is the largest reply,
    reasoning tokens included.
    """

    context_window: int
    max_output: int

    def __post_init__(self) -> None:
        for field, value in (
            ("context_window", self.context_window),
            ("max_output", self.max_output),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(field, f"must be a positive integer, got {value!r}")
        if self.max_output > self.context_window:
            raise InvalidArgumentError(
                "max_output",
                f"must not exceed context_window ({self.max_output} > {self.context_window})",
            )


def _l(context_window: int, max_output: int) -> ModelLimits:
    return ModelLimits(context_window, max_output)


# Figures as OpenAI's model pages publish them (developers.openai.com/api/docs/models/<name>,
# formerly platform.openai.com/docs/models/<name>: "N context window, M max output tokens").
_LIMITS: Final[Mapping[str, ModelLimits]] = MappingProxyType(
    {
        # GPT-5 family: 400,000 / 128,000 on the model pages of gpt-5, gpt-5-mini, gpt-5-nano,
        # gpt-5.1, gpt-5.2, gpt-5.2-pro, gpt-5.4-mini and gpt-5.4-nano; gpt-5-pro alone writes
        # up to 272,000 ("400,000 context window, 272,000 max output tokens").
        "gpt-5.4-mini": _l(400_000, 128_000),
        "gpt-5.4-nano": _l(400_000, 128_000),
        "gpt-5.2": _l(400_000, 128_000),
        "gpt-5.2-pro": _l(400_000, 128_000),
        "gpt-5.1": _l(400_000, 128_000),
        "gpt-5": _l(400_000, 128_000),
        "gpt-5-mini": _l(400_000, 128_000),
        "gpt-5-nano": _l(400_000, 128_000),
        "gpt-5-pro": _l(400_000, 272_000),
        # GPT-4.1 family: 1,047,576 / 32,768 (model pages; openai.com/index/gpt-4-1).
        "gpt-4.1": _l(1_047_576, 32_768),
        "gpt-4.1-mini": _l(1_047_576, 32_768),
        "gpt-4.1-nano": _l(1_047_576, 32_768),
        # GPT-4o: 128,000 / 16,384 (gpt-4o, gpt-4o-mini model pages); the first snapshot,
        # gpt-4o-2024-05-13, returns at most 4,096 (its row on the gpt-4o page).
        "gpt-4o": _l(128_000, 16_384),
        "gpt-4o-2024-05-13": _l(128_000, 4_096),
        "gpt-4o-mini": _l(128_000, 16_384),
        # o-series: 200,000 / 100,000 on the o1, o1-pro, o3, o3-pro, o3-mini and o4-mini pages.
        "o1": _l(200_000, 100_000),
        "o1-pro": _l(200_000, 100_000),
        "o3": _l(200_000, 100_000),
        "o3-pro": _l(200_000, 100_000),
        "o3-mini": _l(200_000, 100_000),
        "o4-mini": _l(200_000, 100_000),
        # GPT-4 Turbo: 128,000 / 4,096 (gpt-4-turbo and gpt-4-turbo-preview pages).
        "gpt-4-turbo": _l(128_000, 4_096),
        "gpt-4-turbo-preview": _l(128_000, 4_096),
        "gpt-4-0125-preview": _l(128_000, 4_096),
        # GPT-4: 8,192 / 8,192 (gpt-4 page; the window is shared, so a reply of 8,192 leaves no
        # room for a prompt).
        "gpt-4": _l(8_192, 8_192),
        "gpt-4-0613": _l(8_192, 8_192),
        # GPT-3.5 Turbo: 16,385 / 4,096 (gpt-3.5-turbo page, for the 0125 and 1106 snapshots).
        "gpt-3.5-turbo": _l(16_385, 4_096),
        "gpt-3.5-turbo-0125": _l(16_385, 4_096),
        "gpt-3.5-turbo-1106": _l(16_385, 4_096),
    }
)

MODEL_LIMITS: Final[Mapping[str, ModelLimits]] = _LIMITS
"""Every catalogued model by its price-table name, read-only (no fallback rules applied)."""

_NAMES: Final = PriceTable.default()
"""Only its :meth:`~PriceTable.resolve`: the one place model names are resolved."""

_AS_TOKENS: Final = "give the budget as a number of tokens"


def model_limits(model: str) -> ModelLimits:
    """The limits of ``model``, resolved like its price.

    Raises :class:`~chatledger.errors.InvalidArgumentError` for a model the catalogue does not
    know (a name that is not a string or is empty too).
    """
    name = _NAMES.resolve(model)
    limits = None if name is None else _LIMITS.get(name)
    if limits is None:
        raise InvalidArgumentError("model", f"unknown model {model!r}: {_AS_TOKENS}")
    return limits


def resolve_budget(budget: int | float, model: str | None) -> int:
    """A window budget in tokens.

    An ``int`` is tokens as given (at least 1; the model is not consulted). A ``float`` in
    (0, 1] is that fraction of the model's context window, rounded down, with nothing taken off
    for the reply: leave room for ``max_completion_tokens`` by choosing the fraction. The
    fraction is read as written (``0.29`` is 29%, not the binary float just below it), and it
    needs a model the catalogue knows. Everything else raises
    :class:`~chatledger.errors.InvalidArgumentError`.
    """
    rule = (
        "must be a number of tokens (int >= 1)"
        " or a fraction of the context window (float in (0, 1])"
    )
    if isinstance(budget, bool) or not isinstance(budget, int | float):
        raise InvalidArgumentError("budget", f"{rule}, got {type(budget).__name__}")
    if isinstance(budget, int):
        if budget < 1:
            raise InvalidArgumentError("budget", f"{rule}, got {budget}")
        return budget
    if not math.isfinite(budget) or not 0 < budget <= 1:
        raise InvalidArgumentError("budget", f"{rule}, got {budget!r}")
    if model is None:
        raise InvalidArgumentError("model", f"a fractional budget needs a model: {_AS_TOKENS}")
    window = model_limits(model).context_window
    tokens = int(Decimal(repr(budget)) * window)  # positive: int() rounds down
    if tokens < 1:
        raise InvalidArgumentError(
            "budget", f"{budget!r} of {model!r}'s {window}-token context window is under 1 token"
        )
    return tokens
