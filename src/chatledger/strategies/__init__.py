"""Truncation strategies: which part of the history a request carries.

Pass one strategy, or a list applied in order (for example summarise, then enforce a hard
budget), to ``Conversation.window``. Write your own against :class:`Strategy`.
"""

from chatledger.strategies.base import Cut, Entry, Lookback, Strategy, WindowView
from chatledger.strategies.last_rounds import LastRounds
from chatledger.strategies.summarize import Summarize
from chatledger.strategies.token_budget import TokenBudget

__all__ = [
    "Cut",
    "Entry",
    "LastRounds",
    "Lookback",
    "Strategy",
    "Summarize",
    "TokenBudget",
    "WindowView",
]
