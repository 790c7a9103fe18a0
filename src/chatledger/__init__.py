"""chatledger: durable conversation memory for chat completion backends.

Store conversations in SQL, count their tokens exactly as the API bills them, and hand the
API a ``messages`` array it accepts.
"""

from chatledger.conversation import AsyncConversation, Conversation
from chatledger.errors import (
    ChatLedgerError,
    ConversationExistsError,
    ConversationNotFoundError,
    EncodingIntegrityError,
    IdempotencyConflictError,
    InvalidArgumentError,
    InvalidMessageError,
    Problem,
    SchemaVersionError,
    StorageError,
    UnknownModelWarning,
)
from chatledger.ledger import AsyncLedger, Ledger
from chatledger.messages import Message, to_api_dict, validate_message, validate_messages
from chatledger.records import ConversationInfo, StoredMessage
from chatledger.store import SCHEMA_VERSION
from chatledger.tokens import TokenCounter, count_tokens, encoding_for_model

__version__ = "0.1.0"

__all__ = [
    "SCHEMA_VERSION",
    "AsyncConversation",
    "AsyncLedger",
    "ChatLedgerError",
    "Conversation",
    "ConversationExistsError",
    "ConversationInfo",
    "ConversationNotFoundError",
    "EncodingIntegrityError",
    "IdempotencyConflictError",
    "InvalidArgumentError",
    "InvalidMessageError",
    "Ledger",
    "Message",
    "Problem",
    "SchemaVersionError",
    "StorageError",
    "StoredMessage",
    "TokenCounter",
    "UnknownModelWarning",
    "__version__",
    "count_tokens",
    "encoding_for_model",
    "to_api_dict",
    "validate_message",
    "validate_messages",
]
