"""What an operation asks its driver to do: the only I/O an operation ever sees.

Each operation of a ledger or a conversation is written once, as a generator that yields
these effects and receives their results (or has their exception thrown in). The sync and the
async twins differ only in the driver that performs them (``chatledger.drivers``): a blocking
connection or an ``AsyncConnection.run_sync``, a plain call or an awaited one. This is the
sans-IO shape ``plan_window`` already had, chosen over an async source with a generated sync
twin because it needs no code generation step, keeps one file per concept, and lets the
I/O-free code be tested by driving the generator by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Generic, TypeAlias, TypeVar

from sqlalchemy import Connection

from chatledger.window import FoldRequest

__all__ = ["Effect", "Op", "Read", "Send", "Summarize", "Write", "reading", "writing"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Read(Generic[T]):
    """Run ``body`` (store calls) on one connection, outside a write transaction."""

    body: Callable[[Connection], T]


@dataclass(frozen=True, slots=True)
class Write(Generic[T]):
    """Run ``body`` (store calls) in one transaction: all of it is written, or none."""

    body: Callable[[Connection], T]


@dataclass(frozen=True, slots=True)
class Summarize:
    """Call a folding strategy's summarizer; the result is the text, or None on failure."""

    request: FoldRequest
    messages: list[dict[str, Any]]
    conversation_id: str


@dataclass(frozen=True, slots=True)
class Send:
    """Send a chat completion request with the caller's client; the result is the response."""

    client: Any
    kwargs: dict[str, Any]


Effect: TypeAlias = "Read[Any] | Write[Any] | Summarize | Send"
#: an operation: yields effects, is sent their results, returns its own
Op: TypeAlias = Generator[Effect, Any, T]


def reading(body: Callable[[Connection], T]) -> Op[T]:
    """``yield from reading(body)``: a :class:`Read`, with its result typed."""
    result: T = yield Read(body)
    return result


def writing(body: Callable[[Connection], T]) -> Op[T]:
    """``yield from writing(body)``: a :class:`Write`, with its result typed."""
    result: T = yield Write(body)
    return result
