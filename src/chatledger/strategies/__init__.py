"""Truncation strategies: which part of the history a request carries.

Pass one strategy, or a list applied in order (for example summarise, then enforce a hard
budget), to ``Conversation.window``. Write your own against :class:`Strategy` (and
:class:`Folding` to fold history into a summary, :class:`Budgeted` to cap tokens): the
built-ins use nothing else.
"""

from chatledger.strategies.clear_tool_results import ClearToolResults
from chatledger.strategies.last_rounds import LastRounds
from chatledger.strategies.stable_prefix import StablePrefix
from chatledger.strategies.summarize import Summarize
from chatledger.strategies.token_budget import TokenBudget
from chatledger.window import (
    Around,
    Budgeted,
    Cut,
    Entry,
    Fold,
    Folding,
    Lookback,
    Rewriting,
    Strategy,
    WindowView,
)

__all__ = [
    "Around",
    "Budgeted",
    "ClearToolResults",
    "Cut",
    "Entry",
    "Fold",
    "Folding",
    "LastRounds",
    "Lookback",
    "Rewriting",
    "StablePrefix",
    "Strategy",
    "Summarize",
    "TokenBudget",
    "WindowView",
]
