"""Every operation of a ledger and a conversation, written once, free of I/O.

Each function returns an :data:`~chatledger.effects.Op`: a generator that yields the effects
it needs (reads, transactions, a summarizer call, a request to the API) and is sent their
results. ``Ledger`` and ``AsyncLedger`` (and their conversations) are thin shells that drive
these generators with a blocking or an async driver, so a rule fixed here is fixed in both.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import Connection
from sqlalchemy import exc as sa_exc

from chatledger import round_trip, spending, window_start
from chatledger.config import LedgerConfig, check_id, dump_json
from chatledger.drift import Drift, summarize
from chatledger.effects import Op, Send, Summarize, reading, writing
from chatledger.encryption import RotationReport
from chatledger.errors import (
    ChatLedgerError,
    ConversationExistsError,
    ConversationNotFoundError,
    InvalidArgumentError,
    StorageError,
)
from chatledger.handle import Batch, Handle, check_key, check_metadata_list, check_range
from chatledger.params import conversation_cache_key, validate_params
from chatledger.responses import chat_message
from chatledger.round_trip import Recorded
from chatledger.rows import (
    Appended,
    ConversationInfo,
    Loaded,
    Snapshot,
    StoredMessage,
    UsageRecord,
    UsageTotals,
)
from chatledger.store import conversations as conv_store
from chatledger.store import limits, maintenance, rotation, usage
from chatledger.store import messages as msg_store
from chatledger.store.drift import drift_rows
from chatledger.store.history import cut_after
from chatledger.store.locks import read_snapshot
from chatledger.store.windows import save_summary, window_snapshot
from chatledger.tokens import request_features
from chatledger.window import FoldRequest, Plan, StrategyArg, Window, plan_window
from chatledger.window_job import WindowJob

__all__ = [
    "ChatOutcome",
    "Opening",
    "append",
    "chat",
    "count_tokens",
    "create",
    "delete",
    "get",
    "get_or_create",
    "read",
    "record",
    "refresh",
    "request",
    "update",
    "window",
]

T = TypeVar("T")
Tools = Sequence[Mapping[str, Any]] | None
_RETRIES = 3


# --- conversations: writes ------------------------------------------------------------------


def _locked_write(
    h: Handle,
    items: Sequence[object],
    metas: Any,
    status: str | None,
    body: Callable[[Batch], Callable[[Connection], T]],
) -> Op[T]:
    """Run a write of ``items`` under the conversation lock, retrying when the handle was
    stale (another worker appended, or changed the model) or the fast path met a reused
    idempotency key (the locked path then replays or refuses it)."""
    fast = True
    for _ in range(_RETRIES):
        batch = h.batch(items, metas, status, fast)
        try:
            return (yield from writing(body(batch)))
        except msg_store.Stale:
            yield from refresh(h)
            if h.profile != h.counter.profile:
                # stored by another version of the counting rules: redo the counts once
                yield from update(h, h.model, None, None)
        except sa_exc.IntegrityError:
            if not fast:
                raise
            fast = False
    raise StorageError("the conversation's model kept changing during the write; retry")


def append(
    h: Handle,
    items: Sequence[object],
    metadata: Sequence[Mapping[str, Any] | None] | None,
    key: str | None,
) -> Op[list[StoredMessage]]:
    """Store ``items`` at the end, atomically (``append`` is a batch of one)."""
    check_key(key)
    metas = check_metadata_list(items, metadata)
    if not items:
        return []
    items = [chat_message(i) for i in items]  # Responses input items as the messages they are

    def body(b: Batch) -> Callable[[Connection], Appended]:
        def run(c: Connection) -> Appended:
            limits.check_messages(c, b.prepared)
            return msg_store.append(
                c, h.pk, h.id, b.profile, b.counted_against, b.prepared, key, b.seen
            )

        return run

    done = yield from _locked_write(h, items, metas, None, body)
    return h.after_write(done)


def record(
    h: Handle,
    completion: object,
    choice: int,
    key: str | None,
    metadata: Mapping[str, Any] | None,
    prompt_tokens: int | None,
) -> Op[Recorded]:
    """Store a response's chosen message and its usage row in one transaction; a response
    is recorded once (its id is the idempotency key)."""
    reply = round_trip.parse_reply(completion, choice, h.counter, prompt_tokens)
    key = round_trip.record_key(reply, key)
    check_key(key)
    sent = h.take_sent(prompt_tokens)  # what was counted before sending, if known
    values = round_trip.usage_values(h.config, reply, h.model, sent)
    items = [reply.message] if reply.message is not None else []

    def body(b: Batch) -> Callable[[Connection], tuple[Appended | None, UsageRecord]]:
        def run(c: Connection) -> tuple[Appended | None, UsageRecord]:
            done: Appended | None = None
            if rid is not None:
                usage.release(c, rid)  # settled: the reply's usage replaces what was held
            if items:
                limits.check_messages(c, b.prepared)
                done = msg_store.append(
                    c, h.pk, h.id, b.profile, b.counted_against, b.prepared, key, b.seen
                )
            else:
                conv_store.lock_conversation(c, h.pk, h.id)
            if key is not None and (done is None or done.replayed):
                existing = usage.find_usage(c, h.pk, key)
                if existing is not None:
                    return done, existing
            seq = done.stored[-1].seq if done is not None else None
            return done, usage.insert_usage(c, h.pk, seq, values, key, owner=h.owner)

        return run

    rid = spending.settle_next(h)
    try:
        meta = round_trip.message_metadata(metadata, reply)
        done, used = yield from _locked_write(h, items, [meta], reply.status, body)
    except Exception:
        spending.unsettled(h, rid)
        raise
    message = h.after_write(done)[0] if done is not None else None
    if sent is not None and not reply.usage.estimated:
        h.config.drift.note(used.model, sent[0], used.prompt_tokens)
    return Recorded(message, used)


def update(
    h: Handle, model: str | None, title: str | None, metadata: Mapping[str, Any] | None
) -> Op[ConversationInfo]:
    """Change the title, metadata or model; a model that counts differently has every stored
    count redone, decided on the row itself (not on what a stale handle saw)."""
    values: dict[str, Any] = {}
    if title is not None:
        if not isinstance(title, str) or len(title) > 1024 or "\x00" in title:
            raise InvalidArgumentError("title", "must be a string of at most 1024 characters")
        values["title"] = title
    if metadata is not None:
        values["meta"] = dump_json(metadata, "metadata")
    counter = None if model is None else h.config.counter(h.config.check_model(model))

    def run(c: Connection) -> Loaded:
        limits.check_value(c, "metadata", values.get("meta"))
        conv_store.lock_conversation(c, h.pk, h.id)
        if counter is not None:
            row = conv_store.load_conversation(c, h.pk, h.id)
            if counter.profile != row.token_profile:
                msg_store.recount(c, h.pk, counter)
            values.update(
                model=counter.model, encoding=counter.encoding_name, token_profile=counter.profile
            )
        return conv_store.update_conversation(c, h.pk, values, h.id)

    return h.load((yield from writing(run)))


def delete(h: Handle) -> Op[None]:
    yield from writing(lambda c: conv_store.delete_conversation(c, h.pk, h.id))


# --- conversations: reads -------------------------------------------------------------------


def refresh(h: Handle) -> Op[ConversationInfo]:
    """Read the handle's own conversation row again."""
    return h.load((yield from reading(lambda c: conv_store.load_conversation(c, h.pk, h.id))))


def _loaded_then(h: Handle, then: Callable[[Connection], T]) -> Callable[[Connection], T]:
    """A read that first proves the conversation still exists (and refreshes the handle)."""

    def run(c: Connection) -> T:
        h.load(conv_store.load_conversation(c, h.pk, h.id))
        return then(c)

    return run


def read(
    h: Handle, start: int | None, stop: int | None, limit: int | None, newest: bool = False
) -> Op[list[StoredMessage]]:
    """Stored messages with ``start <= seq < stop``; ``newest`` takes the last ``limit``."""
    check_range(start, stop, limit)
    pk = h.pk
    body = _loaded_then(h, lambda c: msg_store.read_messages(c, pk, start, stop, limit, newest))
    return (yield from reading(body))


def count_tokens(h: Handle, tools: Tools) -> Op[int]:
    """Prompt tokens of a request carrying the whole history, from stored totals."""
    pk = h.pk
    system = yield from reading(
        _loaded_then(h, lambda c: msg_store.first_system_text(c, pk) if tools else None)
    )
    return h.info.token_total + h.counter.priming + h.counter.tools(tools, system=system)


def usage_totals(h: Handle, since: datetime | None, until: datetime | None) -> Op[UsageTotals]:
    pk = h.pk
    return (
        yield from reading(_loaded_then(h, lambda c: usage.usage_totals(c, pk, None, since, until)))
    )


def usage_records(h: Handle, limit: int | None) -> Op[list[UsageRecord]]:
    check_range(None, None, limit)
    pk = h.pk
    return (yield from reading(_loaded_then(h, lambda c: usage.usage_records(c, pk, limit))))


# --- windows and the round trip ---------------------------------------------------------------


def window(
    h: Handle, strategy: StrategyArg, tools: Tools, tool_choice: Any, reserve: int
) -> Op[Window]:
    """This turn's window: one consistent snapshot (the model and every count it uses come
    from the same read), folds where a folding strategy asks, then the tail if not read yet."""
    job = WindowJob.start(strategy, h.counter, tools, tool_choice, reserve)
    pk, shown = h.pk, h.id

    def snapshot(c: Connection) -> Snapshot:
        read_snapshot(c)  # the row, the cut point and the rows: one snapshot on every database
        return window_snapshot(c, pk, shown, job.lookback, job.with_summary)

    snap = yield from reading(snapshot)
    h.load(snap.loaded)
    job.counter = h.counter  # the snapshot's model, even if another worker just changed it
    view = job.view(snap, h.id)
    steps = plan_window(job.chain, view, snap.summary, job.counter, job.kinds)
    try:
        req = next(steps)
        while True:
            req = steps.send((yield from _fold(h, req)))
    except StopIteration as stop:
        plan: Plan = stop.value
    rows = snap.rows_read
    tail = snap.tail(plan.start)
    if tail is None:
        last = snap.loaded.info.last_seq
        tail = yield from reading(
            lambda c: msg_store.read_messages(c, pk, plan.start, last + 1, None)
        )
        rows += len(tail)
    w = job.result(snap, view, plan, tail, rows)
    price = h.config.prices.price(w.model)
    if price is None or price.cached_input is None:
        return w
    saving = w.predicted_cached_tokens * (price.input - price.cached_input)
    return replace(w, predicted_saving_micros=int(saving))


def _fold(h: Handle, req: FoldRequest) -> Op[tuple[int, str] | None]:
    """Summarise one fold and store it; None when the summarizer failed."""
    pk, shown = h.pk, h.id
    recs = yield from reading(
        lambda c: msg_store.read_messages(c, pk, req.from_seq, req.upto_seq + 1, None)
    )
    msgs = [r.message for r in recs]
    text = yield Summarize(req, msgs, h.id)
    billed = spending.summarizer_usage(h, req, msgs)  # a failed summary may be billed too
    owner = h.owner
    if text is None:
        if billed is not None:
            yield from writing(lambda c: usage.insert_usage(c, pk, None, billed, None, owner=owner))
        return None
    tokens = h.counter.message(req.strategy.summary_message(text))
    model = getattr(req.strategy.summarizer, "model", None)
    name = model.replace("\x00", "")[:128] if isinstance(model, str) else None

    def run(c: Connection) -> bool:
        if billed is not None:  # in the summary's transaction: both are stored, or neither
            usage.insert_usage(c, pk, None, billed, None, owner=owner)
        if not limits.fits(c, text):
            return False  # more than the server takes in a statement: a failed summary
        save_summary(c, pk, shown, req.upto_seq, text, tokens, name)
        return True

    return (req.upto_seq, text) if (yield from writing(run)) else None


def request(
    h: Handle, strategy: StrategyArg, tools: Tools, budget: Any, params: Mapping[str, Any]
) -> Op[tuple[dict[str, Any], int, int | None]]:
    """The kwargs for ``chat.completions.create``, their prompt tokens and the budget
    reservation's key: parameters checked first, the window with room for the completion, then
    every budget checked, and the request's maximum reserved, in one locked transaction
    (:mod:`chatledger.spending`)."""
    if "prompt_cache_key" not in params:  # None given: send none
        params = {**params, "prompt_cache_key": conversation_cache_key(h.owner, h.id)}
    checked = round_trip.request_params(h.model, tools, params)
    guards = round_trip.budgets_for(h.config, budget)
    room = round_trip.completion_room(checked)
    w = yield from window(h, strategy, tools, checked.get("tool_choice"), room)
    validate_params(checked, messages=w.messages)
    choice = checked.get("tool_choice")
    h.sent = (w.prompt_tokens, request_features(w.messages, tools, tool_choice=choice))
    rid = None
    if guards:
        checked, rid = yield from spending.reserve(h, guards, checked, w.prompt_tokens, room)
    yield from window_start.remember(h, w)
    return {**checked, "messages": w.messages}, w.prompt_tokens, rid


class ChatOutcome:
    """What ``chat`` did: the response, whether it is a stream to wrap, its prompt count."""

    __slots__ = ("prompt_tokens", "response", "stream")

    def __init__(self, response: Any, stream: bool, prompt_tokens: int) -> None:
        self.response, self.stream, self.prompt_tokens = response, stream, prompt_tokens


def chat(
    h: Handle,
    client: Any,
    message: object | None,
    strategy: StrategyArg,
    tools: Tools,
    budget: Any,
    choice: int,
    params: Mapping[str, Any],
) -> Op[ChatOutcome]:
    """One turn: append the message, request, send, and record (a stream records itself).

    A turn refused before anything is sent (a budget, a window that cannot fit, a bad
    parameter) takes its message back: it leaves no trace, and the next turn does not send
    two user messages in a row. Once sent, the message stays (the model saw it)."""
    ours = None
    if message is not None:
        stored = yield from append(h, [round_trip.user_message(message)], None, None)
        ours = stored[-1].seq
    try:
        kwargs, prompt, rid = yield from request(h, strategy, tools, budget, params)
    except ChatLedgerError:
        if ours is not None:
            yield from _take_back(h, ours)
        raise
    try:
        response = yield Send(client, kwargs)
    except Exception:
        if rid is not None:  # nothing was billed: what it held is free again at once
            yield from spending.release(h, rid)
        raise
    streaming = bool(kwargs.get("stream"))
    if not streaming:
        yield from record(h, response, choice, None, None, prompt)
    return ChatOutcome(response, streaming, prompt)


def _take_back(h: Handle, seq: int) -> Op[None]:
    """Remove message ``seq`` if it is still the newest (another worker may have appended
    after it: then it stays, as any message does once others built on it)."""
    pk, shown = h.pk, h.id

    def run(c: Connection) -> Loaded:
        conv_store.lock_conversation(c, pk, shown)
        if conv_store.load_conversation(c, pk, shown).info.last_seq == seq:
            cut_after(c, pk, shown, seq - 1)
        return conv_store.load_conversation(c, pk, shown)

    h.load((yield from writing(run)))


# --- the ledger ---------------------------------------------------------------------------------


def _opening(system: str | None) -> list[object]:
    return [] if system is None else [{"role": "system", "content": system}]


@dataclass(frozen=True, slots=True)
class Opening:
    """How a new conversation starts: its model, system prompt, title and metadata."""

    model: str | None = None
    system: str | None = None
    title: str | None = None
    metadata: Mapping[str, Any] | None = None


def create(config: LedgerConfig, cid: str | None, owner: str | None, how: Opening) -> Op[Loaded]:
    """Insert a conversation and its opening system message in one transaction."""
    new = config.new_conversation(cid, owner, how.model, how.title, how.metadata)
    first, _ = config.prepare(_opening(how.system), config.counter(new.model))

    def run(c: Connection) -> Loaded:
        limits.check_value(c, "metadata", new.meta)
        limits.check_messages(c, first)
        pk = conv_store.insert_conversation(c, new)
        if first:
            msg_store.append(c, pk, new.id, new.token_profile, False, first, None)
        return conv_store.load_conversation(c, pk, new.id)

    try:
        return (yield from writing(run))
    except sa_exc.IntegrityError:
        raise ConversationExistsError(new.id) from None


def get(cid: str, owner: str | None) -> Op[Loaded]:
    check_id(cid, "id")
    if owner is not None:
        check_id(owner, "owner")
    return (yield from reading(lambda c: conv_store.find_conversation(c, cid, owner)))


def _first_difference(a: str, b: str) -> int:
    return next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )


def _differences(info: ConversationInfo, how: Opening, stored_system: str | None) -> list[str]:
    """What ``how`` asks for that the stored conversation is not: the model, the system prompt
    (by length and where they part, never the text: prompts can hold what logs must not)."""
    out = []
    if how.model is not None and how.model != info.model:
        out.append(
            f"model={how.model!r} differs from the stored model {info.model!r} "
            "(conv.update(model=...) changes it)"
        )
    if isinstance(how.system, str) and how.system != stored_system:
        if stored_system is None:
            out.append(
                "system= was given but the stored conversation starts with no system or "
                "developer message (update() cannot add one; create a new conversation with "
                "system=...)"
            )
        else:
            out.append(
                f"system= ({len(how.system)} characters) differs from the stored system prompt "
                f"({len(stored_system)} characters) from character "
                f"{_first_difference(how.system, stored_system)} on "
                "(conv.update(system=...) changes it)"
            )
    return out


def _existing(cid: str, owner: str | None, how: Opening) -> Op[Loaded]:
    """``get``, and a warning when the caller describes the conversation differently than it
    is stored: get-or-create never changes one, and a new prompt silently unused is a bug."""
    check_id(cid, "id")
    if owner is not None:
        check_id(owner, "owner")
    want_system = isinstance(how.system, str)

    def run(c: Connection) -> tuple[Loaded, str | None]:
        loaded = conv_store.find_conversation(c, cid, owner)
        pinned = loaded.info.prefix_seq > 0  # seq 1 is then a system or developer message
        text = msg_store.first_system_text(c, loaded.pk) if want_system and pinned else None
        return loaded, text

    loaded, stored_system = yield from reading(run)
    differs = _differences(loaded.info, how, stored_system)
    if differs:
        logging.getLogger("chatledger").warning(
            "conversation %r exists and get-or-create returns it as stored: %s",
            cid,
            "; ".join(differs),
        )
    return loaded


def get_or_create(
    config: LedgerConfig, cid: str | None, owner: str | None, how: Opening
) -> Op[Loaded]:
    """The conversation ``cid``, created as described if it does not exist; an existing one
    is returned as stored, like ``dict.setdefault`` (with a warning naming what differs)."""
    if cid is not None:
        try:
            return (yield from _existing(cid, owner, how))
        except ConversationNotFoundError:
            pass
    try:
        return (yield from create(config, cid, owner, how))
    except ConversationExistsError:
        if cid is None:
            raise
        return (yield from _existing(cid, owner, how))  # created by another worker since


def delete_by_id(cid: str, owner: str | None) -> Op[None]:
    loaded = yield from get(cid, owner)
    yield from writing(lambda c: conv_store.delete_conversation(c, loaded.pk, cid))


def rotate_encryption(batch: int, vacuum: bool = False) -> Op[RotationReport]:
    """Re-encrypt every stored value with the newest key, a bounded batch per transaction,
    each row on its own compare-and-set (``store/rotation.py``); then rewrite the tables if
    asked, so that old ciphertext leaves the database files."""
    report = RotationReport()
    for table in rotation.ENCRYPTED_TABLES:
        after: tuple[Any, ...] | None = None
        while True:
            step = partial(rotation.rotate_batch, name=table, after=after, batch=batch)
            done = yield from writing(step)
            report.add(table, done.rotated, done.current, done.failures)
            after = done.last
            if done.read < batch:
                break
    if vacuum:
        report.vacuumed = yield from reading(rotation.vacuum)
    return report


def list_conversations(owner: str | None, limit: int, offset: int) -> Op[list[ConversationInfo]]:
    rows = yield from reading(lambda c: conv_store.list_conversations(c, owner, limit, offset))
    return [r.info for r in rows]


def delete_owner(owner: str) -> Op[int]:
    check_id(owner, "owner")
    batch, swept = partial(conv_store.delete_owner_batch, owner=owner), conv_store.Swept()
    while not swept.done:  # a transaction per batch of whole conversations
        swept = yield from writing(partial(batch, swept=swept))
    return swept.deleted


def delete_idle(cutoff: datetime, owner: str | None) -> Op[int]:
    batch = partial(maintenance.delete_idle_batch, cutoff=cutoff, owner=owner)
    swept = conv_store.Swept()
    while not swept.done:
        swept = yield from writing(partial(batch, swept=swept))
    return swept.deleted


def ledger_usage(
    owner: str | None, since: datetime | None, until: datetime | None
) -> Op[UsageTotals]:
    return (yield from reading(lambda c: usage.usage_totals(c, None, owner, since, until)))


def token_drift(since: datetime | None) -> Op[list[Drift]]:
    """Pre-send counts against billed prompt tokens, per model and feature."""
    return summarize((yield from reading(lambda c: drift_rows(c, since))))
