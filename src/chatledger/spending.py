"""Spend: budget checks that reserve what a request may cost, and the summarizer's usage.

Operations (sans-IO, as in :mod:`chatledger.operations`), kept apart so that module stays one
page per concern.

**Reservations.** A budget check and the reservation of the request's maximum (its exact
prompt plus its ``max_tokens``, and their price) happen in one transaction, under a lock: the
owner's budget lock for owner budgets, then the conversation row for conversation budgets. So
concurrent requests of one owner check one after another, each seeing what the others hold,
and together never pass the ceiling. The reservation is settled (deleted) in the transaction
that records the reply, released when the client raises, and otherwise ignored once it expires
(``reservation_ttl``: a crashed worker, an abandoned stream).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from contextlib import suppress
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import Connection

from chatledger import round_trip
from chatledger.append_plan import utcnow
from chatledger.budgets import Budget, Spend
from chatledger.completions import parse_completion
from chatledger.effects import Op, writing
from chatledger.errors import ChatLedgerError, InvalidArgumentError
from chatledger.handle import Handle
from chatledger.store import conversations as conv_store
from chatledger.store import usage
from chatledger.store.locks import lock_owner
from chatledger.window import FoldRequest

__all__ = ["release", "reserve", "settle_next", "summarizer_usage", "unsettled"]

# reservations a handle made and has not settled yet, oldest first: record() settles the
# oldest, so request() then record() on one handle pairs them
_PENDING: WeakKeyDictionary[Handle, list[int]] = WeakKeyDictionary()


def _scope(h: Handle, guard: Budget) -> tuple[Budget, int | None, str | None, str]:
    if guard.scope == "owner":
        if h.owner is None:
            raise InvalidArgumentError("budget", "an owner budget needs a conversation owner")
        return guard, None, h.owner, f"owner {h.owner!r}"
    return guard, h.pk, None, f"conversation {h.id!r}"


def reserve(
    h: Handle, guards: Sequence[Budget], params: Mapping[str, Any], prompt: int, room: int
) -> Op[tuple[dict[str, Any], int]]:
    """Check every budget against what is spent and held, and reserve this request's
    maximum, in one locked transaction. Returns the parameters (``max_tokens`` lowered where
    a ``shrink`` budget asked) and the reservation's key."""
    model, step = str(params["model"]), int(params.get("n") or 1)
    prices = h.config.prices

    def price(r: int) -> int | None:
        return prices.estimate_micros(model, prompt, r)

    # shrinking budgets first: the others then judge the request as it will be sent
    scopes = sorted((_scope(h, g) for g in guards), key=lambda s: not s[0].shrink)
    pk, cid, owner, ttl = h.pk, h.id, h.owner, h.config.reservation_ttl

    def run(c: Connection) -> tuple[int, int]:
        now = utcnow()
        if owner is not None and any(s[2] is not None for s in scopes):
            lock_owner(c, owner)  # always before a conversation lock: one order, no deadlock
            usage.purge(c, None, owner, now)
        if any(s[1] is not None for s in scopes):
            conv_store.lock_conversation(c, pk, cid)
            usage.purge(c, pk, None, now)
        allowed = room
        for guard, spk, sowner, subject in scopes:
            used = Spend(*usage.spent_and_held(c, spk, sowner, guard.since(now), now))
            allowed = guard.room(used, prompt, allowed, price, subject=subject, step=step)
        rid = usage.reserve(c, owner, pk, prompt + allowed, price(allowed), now, now + ttl)
        return rid, allowed

    rid, allowed = yield from writing(run)
    _PENDING.setdefault(h, []).append(rid)
    out = dict(params)
    if allowed < room:
        cap = "max_completion_tokens" if params.get("max_completion_tokens") else "max_tokens"
        out[cap] = allowed // step
    return out, rid


def settle_next(h: Handle) -> int | None:
    """The oldest reservation of this handle, to delete with the reply being recorded."""
    pending = _PENDING.get(h)
    return pending.pop(0) if pending else None


def unsettled(h: Handle, rid: int | None) -> None:
    """Put a reservation back when the write that was to settle it failed."""
    if rid is not None:
        _PENDING.setdefault(h, []).insert(0, rid)


def release(h: Handle, rid: int) -> Op[None]:
    """Drop a reservation at once (the request failed); a failure here leaves it to expire."""
    pending = _PENDING.get(h)
    if pending and rid in pending:
        pending.remove(rid)
    with suppress(Exception):  # it expires instead: the caller's own error is the one to see
        yield from writing(lambda c: usage.release(c, rid))


def summarizer_usage(h: Handle, req: FoldRequest, messages: list[Any]) -> dict[str, Any] | None:
    """The usage row of the summarizer call that just summarised ``messages``, if the
    summarizer reports it (``take_usage(messages)``, as :class:`OpenAISummarizer` does):
    billed like any response, at the summarizer's model's price."""
    summarizer = req.strategy.summarizer
    take = getattr(summarizer, "take_usage", None)
    completion = take(messages) if callable(take) else None
    if completion is None:
        return None
    try:
        reply = parse_completion(completion)
    except ChatLedgerError:
        return None
    model = getattr(summarizer, "model", None)
    values = round_trip.usage_values(h.config, reply, model if isinstance(model, str) else h.model)
    meta = json.loads(values["meta"]) if values.get("meta") else {}
    meta.update(kind="summary", upto_seq=req.upto_seq)
    meta.pop("choices", None)  # the summary text is stored as the summary, not here
    values["meta"] = json.dumps(meta, separators=(",", ":"))
    return values
