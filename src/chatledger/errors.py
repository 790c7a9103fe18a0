"""Typed errors and warnings.

Every failure a caller can act on has its own type, so a backend can map it to an HTTP status
without parsing messages. All inherit from :class:`ChatLedgerError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "BudgetExceededError",
    "ChatLedgerError",
    "ContextOverflowError",
    "ConversationExistsError",
    "ConversationNotFoundError",
    "EncodingIntegrityError",
    "IdempotencyConflictError",
    "InvalidArgumentError",
    "InvalidMessageError",
    "InvalidParameterError",
    "MissingDependencyError",
    "PendingToolCallsError",
    "Problem",
    "SchemaVersionError",
    "StorageError",
    "UnknownModelWarning",
]


class ChatLedgerError(Exception):
    """Base class of every error chatledger raises on purpose."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One rule one message broke: where (index and field path) and what rule."""

    index: int | None
    field: str
    rule: str

    def __str__(self) -> str:
        where = "message" if self.index is None else f"messages[{self.index}]"
        if self.field:
            where += f".{self.field}" if not self.field.startswith("[") else self.field
        return f"{where}: {self.rule}"


class InvalidMessageError(ChatLedgerError, ValueError):
    """A message, or an array of them, breaks a rule the API enforces.

    ``problems`` lists every broken rule with the index and field it concerns; nothing was
    written when this is raised.
    """

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        lines = [str(p) for p in self.problems]
        head = "invalid message" if len(lines) == 1 else f"{len(lines)} problems in messages"
        super().__init__(f"{head}: " + "; ".join(lines))

    @property
    def fields(self) -> list[str]:
        """The field paths named by the problems, for quick assertions and logs."""
        return [p.field for p in self.problems]


class InvalidArgumentError(ChatLedgerError, ValueError):
    """An argument other than a message (an id, an owner, metadata) breaks a rule."""

    def __init__(self, field: str, rule: str) -> None:
        self.field = field
        self.rule = rule
        super().__init__(f"{field}: {rule}")


class InvalidParameterError(ChatLedgerError, ValueError):
    """A chat completion request parameter breaks a rule the API enforces.

    ``problems`` lists every broken rule as ``(param, rule)``; nothing was sent.
    """

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems: tuple[tuple[str, str], ...] = tuple(problems)
        super().__init__("; ".join(f"{param}: {rule}" for param, rule in self.problems))

    @property
    def params(self) -> list[str]:
        """The parameters named by the problems."""
        return [p for p, _ in self.problems]


# module -> (what to pip install, the chatledger extra that brings it)
_PROVIDERS: dict[str, tuple[str, str | None]] = {
    "psycopg": ("psycopg", "postgresql"),
    "asyncpg": ("asyncpg", "postgresql"),
    "pymysql": ("pymysql", "mysql"),
    "aiomysql": ("aiomysql", "mysql"),
    "aiosqlite": ("aiosqlite", "sqlite-async"),
    "cryptography": ("cryptography", "encryption"),
    "langchain_core": ("langchain-core", "langchain"),
    "langchain": ("langchain", "langchain-agents"),
    "pydantic_ai": ("pydantic-ai-slim", "pydantic-ai"),
    "agents": ("openai-agents", "agents"),
    "psycopg2": ("psycopg2-binary", None),
    "asyncmy": ("asyncmy", None),
    "MySQLdb": ("mysqlclient", None),
}


class MissingDependencyError(ChatLedgerError, ImportError):
    """An optional package a feature needs is not installed (a database driver, cryptography,
    a framework an integration adapts). The message says what to ``pip install``; it is an
    ``ImportError`` too, so code that already catches those keeps working."""

    def __init__(self, module: str, needed_for: str) -> None:
        top = module.partition(".")[0]
        package, extra = _PROVIDERS.get(top, (top, None))
        self.package = package
        self.extra = extra
        self.install = f"pip install 'chatledger[{extra}]'" if extra else f"pip install {package}"
        super().__init__(
            f"{needed_for} needs the {package} package, which is not installed: {self.install}",
            name=top,
        )


class BudgetExceededError(ChatLedgerError):
    """A request would take a conversation or an owner past its token or money ceiling."""

    def __init__(self, message: str, *, scope: str, limit: float, used: float, needed: float):
        self.scope = scope
        self.limit = limit
        self.used = used
        self.needed = needed
        super().__init__(message)


class ConversationNotFoundError(ChatLedgerError, LookupError):
    """No conversation with that id is visible to that owner."""

    def __init__(self, conversation_id: str) -> None:
        self.conversation_id = conversation_id
        super().__init__(f"conversation {conversation_id!r} not found")


class ConversationExistsError(ChatLedgerError):
    """``create`` was asked for an id that is already taken."""

    def __init__(self, conversation_id: str) -> None:
        self.conversation_id = conversation_id
        super().__init__(f"conversation {conversation_id!r} already exists")


class IdempotencyConflictError(ChatLedgerError):
    """An idempotency key was reused for a different write."""


class SchemaVersionError(ChatLedgerError):
    """The database holds a chatledger schema this version cannot use."""


class StorageError(ChatLedgerError):
    """The database failed in a way the caller may retry (lost connection, lock timeout)."""


class EncodingIntegrityError(ChatLedgerError):
    """A bundled BPE file does not match its recorded sha256; counting would be wrong."""


class ContextOverflowError(ChatLedgerError):
    """Even the smallest valid window (pinned prefix and the newest message, with its tool
    calls) does not fit the budget; sending it would fail or cost more than allowed."""

    def __init__(self, needed: int, allowed: int, detail: str = "") -> None:
        self.needed = needed
        self.allowed = allowed
        more = f" ({detail})" if detail else ""
        super().__init__(
            f"the smallest valid window needs {needed} prompt tokens but only {allowed} are "
            f"allowed{more}"
        )


class PendingToolCallsError(ChatLedgerError):
    """The conversation ends with tool calls that have no results yet: the API would refuse a
    request built from it. Append the tool results (an error text is a valid result)."""

    def __init__(self, conversation_id: str, pending: tuple[str, ...]) -> None:
        self.conversation_id = conversation_id
        self.pending = pending
        super().__init__(
            f"conversation {conversation_id!r} is waiting for the results of tool call(s) "
            f"{', '.join(map(repr, pending))}; append them before building a window"
        )


class UnknownModelWarning(UserWarning):
    """The model is unknown to the token counter; o200k_base rules were assumed."""
