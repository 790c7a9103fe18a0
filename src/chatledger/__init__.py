"""chatledger: durable conversation memory for chat completion backends.

Store conversations in SQL, count their tokens exactly as the API bills them, and hand the
API a ``messages`` array it accepts.
"""

from chatledger._turns import Estimate, Recorded
from chatledger.anthropic import anthropic_tools, to_anthropic
from chatledger.budgets import Budget, Spend
from chatledger.conversation import AsyncConversation, Conversation
from chatledger.encryption import DecryptionError, Encryption
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
    PendingToolCallsError,
    Problem,
    SchemaVersionError,
    StorageError,
    UnknownModelWarning,
)
from chatledger.ledger import AsyncLedger, Ledger
from chatledger.messages import Message, to_api_dict, validate_message, validate_messages
from chatledger.params import validate_params
from chatledger.pricing import Price, PriceTable
from chatledger.records import ConversationInfo, StoredMessage, UsageRecord, UsageTotals
from chatledger.store import SCHEMA_VERSION
from chatledger.strategies import (
    Cut,
    Entry,
    LastRounds,
    Lookback,
    Strategy,
    Summarize,
    TokenBudget,
    WindowView,
)
from chatledger.streaming import AsyncStreamRecorder, StreamAccumulator, StreamRecorder
from chatledger.summarizers import OpenAISummarizer, render_transcript
from chatledger.tokens import TokenCounter, count_tokens, encoding_for_model
from chatledger.window import Span, SummaryPart, Window

__version__ = "0.1.0"

__all__ = [
    "SCHEMA_VERSION",
    "AsyncConversation",
    "AsyncLedger",
    "AsyncStreamRecorder",
    "Budget",
    "BudgetExceededError",
    "ChatLedgerError",
    "ContextOverflowError",
    "Conversation",
    "ConversationExistsError",
    "ConversationInfo",
    "ConversationNotFoundError",
    "Cut",
    "DecryptionError",
    "EncodingIntegrityError",
    "Encryption",
    "Entry",
    "Estimate",
    "IdempotencyConflictError",
    "InvalidArgumentError",
    "InvalidMessageError",
    "InvalidParameterError",
    "LastRounds",
    "Ledger",
    "Lookback",
    "Message",
    "OpenAISummarizer",
    "PendingToolCallsError",
    "Price",
    "PriceTable",
    "Problem",
    "Recorded",
    "SchemaVersionError",
    "Span",
    "Spend",
    "StorageError",
    "StoredMessage",
    "Strategy",
    "StreamAccumulator",
    "StreamRecorder",
    "Summarize",
    "SummaryPart",
    "TokenBudget",
    "TokenCounter",
    "UnknownModelWarning",
    "UsageRecord",
    "UsageTotals",
    "Window",
    "WindowView",
    "__version__",
    "anthropic_tools",
    "count_tokens",
    "encoding_for_model",
    "render_transcript",
    "to_anthropic",
    "to_api_dict",
    "validate_message",
    "validate_messages",
    "validate_params",
]
