"""Editing history, written once like every operation: pop, truncate, rewind, fork, edit,
regenerate and a new system prompt.

Every edit takes the per-conversation lock an append takes, so an edit racing an append
serialises with it: seq stays gap-free, totals exact, and the stored history a valid API
prefix (any prefix of a valid history is one: cutting after an assistant's ``tool_calls``
re-opens those calls). A summary that covers removed messages is deleted with them and the
next window folds again; usage rows stay, since they are what was billed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from sqlalchemy import Connection

from chatledger import operations as op
from chatledger.config import check_id
from chatledger.effects import Op, reading, writing
from chatledger.errors import InvalidArgumentError
from chatledger.handle import Handle
from chatledger.rows import ConversationInfo, Loaded, StoredMessage
from chatledger.store import conversations as conv_store
from chatledger.store import history
from chatledger.store import messages as msg_store
from chatledger.window import StrategyArg

__all__ = ["edit", "fork", "pop", "regenerate", "rewind", "truncate", "update"]


def _seq(value: object, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidArgumentError(name, "must be a non-negative integer")
    return value


def _cut(h: Handle, upto: int) -> Op[list[StoredMessage]]:
    def run(c: Connection) -> tuple[list[StoredMessage], Loaded]:
        removed = history.cut_after(c, h.pk, h.id, upto)
        return removed, conv_store.load_conversation(c, h.pk, h.id)

    removed, loaded = yield from writing(run)
    h.load(loaded)
    return removed


def truncate(h: Handle, upto_seq: int) -> Op[list[StoredMessage]]:
    """Keep seq ``1..upto_seq``; return the removed messages, oldest first."""
    return (yield from _cut(h, _seq(upto_seq, "upto_seq")))


def pop(h: Handle) -> Op[StoredMessage | None]:
    """Remove and return the newest message (None when there is none). Popping a tool result
    re-opens the call it answered."""

    def run(c: Connection) -> tuple[list[StoredMessage], Loaded]:
        # decided on the locked row: another worker may have appended since this handle read
        conv_store.lock_conversation(c, h.pk, h.id)
        newest = conv_store.load_conversation(c, h.pk, h.id).info.last_seq
        removed = history.cut_after(c, h.pk, h.id, newest - 1) if newest else []
        return removed, conv_store.load_conversation(c, h.pk, h.id)

    removed, loaded = yield from writing(run)
    h.load(loaded)
    return removed[-1] if removed else None


def rewind(h: Handle, rounds: int) -> Op[list[StoredMessage]]:
    """Remove the newest ``rounds`` rounds (a user message and all that followed it); with
    fewer rounds stored, everything after the pinned prefix goes."""
    if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1:
        raise InvalidArgumentError("rounds", "must be an integer of at least 1")

    def run(c: Connection) -> tuple[list[StoredMessage], Loaded]:
        conv_store.lock_conversation(c, h.pk, h.id)
        row = conv_store.load_conversation(c, h.pk, h.id).info
        start = history.round_start(c, h.pk, rounds, row.prefix_seq, row.last_seq)
        upto = row.prefix_seq if start is None else start - 1
        removed = history.cut_after(c, h.pk, h.id, upto)
        return removed, conv_store.load_conversation(c, h.pk, h.id)

    removed, loaded = yield from writing(run)
    h.load(loaded)
    return removed


def fork(h: Handle, new_id: str | None, at_seq: int | None) -> Op[Loaded]:
    """A new conversation of the same owner holding this one's history up to ``at_seq``
    (all of it by default), copied in the database, with the summaries that cover only that
    prefix and its lineage recorded."""
    if new_id is not None:
        check_id(new_id, "new_id")
    at = None if at_seq is None else _seq(at_seq, "at_seq")
    config = h.config

    def run(c: Connection) -> Loaded:
        conv_store.lock_conversation(c, h.pk, h.id)  # a cut point no append straddles
        source = conv_store.load_conversation(c, h.pk, h.id)
        info = source.info
        upto = info.last_seq if at is None else min(at, info.last_seq)
        new = config.new_conversation(new_id, info.owner, info.model, info.title, info.metadata)
        pk = conv_store.insert_conversation(c, new)
        history.copy_prefix(c, source, pk, upto)
        history.set_lineage(c, pk, info.id, upto)
        return conv_store.load_conversation(c, pk, new.id)

    return (yield from writing(run))


def edit(h: Handle, seq: int, message: object) -> Op[StoredMessage]:
    """Replace the message at ``seq`` and drop what came after it, in one transaction."""
    if _seq(seq, "seq") < 1:
        raise InvalidArgumentError("seq", "must be at least 1")
    info = yield from op.refresh(h)
    if seq > info.last_seq + 1:  # last_seq + 1: nothing to replace, the message is appended
        raise InvalidArgumentError("seq", f"is after the newest message ({info.last_seq})")
    # what the replacement is counted and checked against: the history just before it
    before = yield from reading(lambda c: history.state_at(c, h.pk, seq - 1, info.prefix_seq))
    counter = h.counter
    tool_state: str | None = before["tool_state"]
    prepared, depends = h.config.prepare([message], counter, None, None, tool_state)
    against: str | Literal[False] | None = tool_state if depends else False

    def run(c: Connection) -> StoredMessage:
        history.cut_after(c, h.pk, h.id, seq - 1)
        done = msg_store.append(c, h.pk, h.id, counter.profile, against, prepared, None)
        return done.stored[0]

    stored = yield from writing(run)
    yield from op.refresh(h)
    return stored


def regenerate(
    h: Handle,
    client: Any,
    strategy: StrategyArg,
    tools: Any,
    budget: Any,
    choice: int,
    params: Mapping[str, Any],
) -> Op[op.ChatOutcome]:
    """Drop the newest reply (with its tool exchange) after the newest user message, and ask
    again. The usage of both replies stays in the ledger."""
    info = yield from op.refresh(h)
    if info.last_round_seq == 0:
        raise InvalidArgumentError("regenerate", "needs a user message to answer again")
    yield from _cut(h, info.last_round_seq)
    return (yield from op.chat(h, client, None, strategy, tools, budget, choice, params))


def set_system(h: Handle, text: object) -> Op[None]:
    """Rewrite the first message of the pinned prefix (system or developer, as stored) with
    ``text``, recounted; every later window carries the new prompt."""
    if not isinstance(text, str):
        raise InvalidArgumentError("system", "must be a string")

    def run(c: Connection) -> Loaded:
        conv_store.lock_conversation(c, h.pk, h.id)
        row = conv_store.load_conversation(c, h.pk, h.id)
        if row.info.prefix_seq == 0:
            raise InvalidArgumentError(
                "system",
                "this conversation has no pinned system or developer message to change; "
                "create it with system=... (or fork it onto a new one)",
            )
        role = history.role_at(c, h.pk, 1)
        prepared, _ = h.config.prepare([{"role": role, "content": text}], h.counter)
        history.replace_message(c, h.pk, h.id, 1, prepared[0])
        return conv_store.load_conversation(c, h.pk, h.id)

    h.load((yield from writing(run)))


def update(
    h: Handle,
    model: str | None,
    title: str | None,
    metadata: Mapping[str, Any] | None,
    system: str | None,
) -> Op[ConversationInfo]:
    """``Conversation.update``: a new system prompt first, then the row's fields."""
    if system is not None:
        yield from set_system(h, system)
    return (yield from op.update(h, model, title, metadata))
