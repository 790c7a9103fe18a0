"""Truncation strategies: which part of the history a request carries.

Pass one strategy, or a list applied in order (for example summarise, then enforce a hard
budget), to ``Conversation.window``. Write your own against :class:`Strategy` (and
:class:`Folding` to fold history into a summary, :class:`Budgeted` to cap tokens): the
built-ins use nothing else.
"""

from chatledger.strategies.last_rounds import LastRounds
from chatledger.strategies.summarize import Summarize
from chatledger.strategies.token_budget import TokenBudget
from chatledger.window import Budgeted, Cut, Entry, Fold, Folding, Lookback, Strategy, WindowView

__all__ = [
    "Budgeted",
    "Cut",
    "Entry",
    "Fold",
    "Folding",
    "LastRounds",
    "Lookback",
    "Strategy",
    "Summarize",
    "TokenBudget",
    "WindowView",
]
