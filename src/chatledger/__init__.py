"""chatledger: durable conversation memory for chat completion backends.

Store conversations in SQL, count their tokens exactly as the API bills them, and hand the
API a ``messages`` array it accepts.

This namespace holds the everyday API. Authoring your own strategy: ``chatledger.strategies``;
stream recorders: ``chatledger.streaming``; windows' parts: ``chatledger.window``; adapters
(LangChain, the Agents SDK, Anthropic's format): ``chatledger.integrations``.
"""

from chatledger.budgets import Budget
from chatledger.conversation import AsyncConversation, Conversation
from chatledger.encryption import DecryptionError, Encryption, EncryptionMismatchError
from chatledger.errors import (
    BudgetExceededError,
    ChatLedgerError,
    ContextOverflowError,
    ConversationExistsError,
    ConversationNotFoundError,
    EncodingIntegrityError,
    IdempotencyConflictError,
    InvalidArgumentError,
    InvalidMessageError,
    InvalidParameterError,
    MissingDependencyError,
    PendingToolCallsError,
    SchemaVersionError,
    StorageError,
    UnknownModelWarning,
)
from chatledger.ledger import AsyncLedger, Ledger
from chatledger.messages import Message, validate_message, validate_messages
from chatledger.params import validate_params
from chatledger.pricing import Price, PriceTable
from chatledger.round_trip import Estimate, Recorded
from chatledger.rows import ConversationInfo, StoredMessage, UsageRecord, UsageTotals
from chatledger.strategies import (
    ClearToolResults,
    LastRounds,
    StablePrefix,
    Summarize,
    TokenBudget,
)
from chatledger.summarizers import OpenAISummarizer
from chatledger.tokens import TokenCounter, count_tokens
from chatledger.window import Window

__version__ = "0.1.0"

__all__ = [
    "AsyncConversation",
    "AsyncLedger",
    "Budget",
    "BudgetExceededError",
    "ChatLedgerError",
    "ClearToolResults",
    "ContextOverflowError",
    "Conversation",
    "ConversationExistsError",
    "ConversationInfo",
    "ConversationNotFoundError",
    "DecryptionError",
    "EncodingIntegrityError",
    "Encryption",
    "EncryptionMismatchError",
    "Estimate",
    "IdempotencyConflictError",
    "InvalidArgumentError",
    "InvalidMessageError",
    "InvalidParameterError",
    "LastRounds",
    "Ledger",
    "Message",
    "MissingDependencyError",
    "OpenAISummarizer",
    "PendingToolCallsError",
    "Price",
    "PriceTable",
    "Recorded",
    "SchemaVersionError",
    "StablePrefix",
    "StorageError",
    "StoredMessage",
    "Summarize",
    "TokenBudget",
    "TokenCounter",
    "UnknownModelWarning",
    "UsageRecord",
    "UsageTotals",
    "Window",
    "__version__",
    "count_tokens",
    "validate_message",
    "validate_messages",
    "validate_params",
]
