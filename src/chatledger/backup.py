"""Backup and restore: a ledger's conversations as JSON lines, and back, losslessly.

``export_jsonl`` writes a header line, then one line per conversation, in ``(owner, id)``
order: the conversation row (id, owner, model, title, metadata, timestamps, fork lineage),
every message with its seq, time, status, metadata and idempotency key, its summaries and its
usage rows. Derived state (token counts, running totals, round markers, the pinned prefix,
the open tool calls) is not written: ``import_jsonl`` recomputes it with the same rules an
append applies, so the restored conversation behaves as the original did. Timestamps are UTC
with microseconds, keys are in a fixed order, so exports of one ledger are byte-identical
whichever database holds it.

An encrypted ledger exports **plaintext** (the backup is as sensitive as the messages; keep
it encrypted at rest yourself); importing into an encrypted ledger encrypts. Idempotency keys
are exported as stored: in an encrypted ledger that is their keyed hash, kept as it is.

Import is idempotent and never overwrites: a conversation already present and identical is
counted ``unchanged``, one present with other content is refused. Each conversation is written
in one transaction; a line that fails is refused with its line number and the import goes on.

``format="finetune"`` is the plain fine-tuning JSONL, ``{"messages": [...]}`` per line.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any, Literal, TextIO

from pydantic import ValidationError as _ValidationError
from sqlalchemy import Connection

from chatledger.append_plan import plan_append
from chatledger.backup_format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    BackupHeader,
    ConversationLine,
    FinetuneLine,
    ImportReport,
    MessageLine,
    Refusal,
    Repair,
    SummaryLine,
    UsageLine,
    as_conversation,
    dumps,
    from_dump,
    render,
)
from chatledger.config import check_id, dump_json
from chatledger.effects import Op, reading, writing
from chatledger.encryption import PLAIN, Codec, is_keyed_hash
from chatledger.errors import (
    ChatLedgerError,
    ConversationNotFoundError,
    InvalidArgumentError,
    InvalidMessageError,
    StorageError,
)
from chatledger.repair import repair_history
from chatledger.rows import State
from chatledger.store import backup as store

if TYPE_CHECKING:
    from chatledger.ledger import Ledger

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "PAGE_SIZE",
    "BackupHeader",
    "ConversationLine",
    "FinetuneLine",
    "ImportReport",
    "MessageLine",
    "Refusal",
    "Repair",
    "SummaryLine",
    "UsageLine",
    "export_jsonl",
    "import_jsonl",
]

#: conversations read per page when exporting (keyset pagination: memory stays constant)
PAGE_SIZE = 500

Format = Literal["backup", "finetune"]

# ---------------------------------------------------------------------------- export


def _keys(ledger: Ledger, ids: Sequence[str] | None, owner: str | None, page: int) -> Iterator[int]:
    """The keys of the conversations to export, in ``(owner, id)`` order, page by page."""
    run = ledger._driver.run
    if ids is not None:
        wanted = sorted(set(ids))
        found = run(reading(lambda c: store.keys_of_ids(c, wanted, owner)))
        missing = set(wanted) - {cid for _, cid, _ in found}
        if missing:
            raise ConversationNotFoundError(min(missing))
        yield from (pk for _, _, pk in sorted(found))
        return
    after: tuple[str, str] | None = None
    while True:
        rows = run(reading(partial(store.conversation_keys, owner=owner, after=after, limit=page)))
        yield from (pk for _, _, pk in rows)
        if len(rows) < page:
            return
        after = rows[-1][0], rows[-1][1]


def _read(pk: int) -> Op[store.ConversationDump | None]:
    def body(c: Connection) -> store.ConversationDump | None:
        try:
            return store.read_conversation(c, pk, snapshot=True)
        except ConversationNotFoundError:  # deleted since its page was read
            return None

    return (yield from reading(body))


def _check_ledger(ledger: object) -> None:
    from chatledger.ledger import Ledger  # at run time: the ledger module does not need this

    if not isinstance(ledger, Ledger):
        raise InvalidArgumentError("ledger", "must be a chatledger.Ledger (the sync twin)")


def export_jsonl(
    ledger: Ledger,
    out: TextIO,
    *,
    ids: Sequence[str] | None = None,
    owner: str | None = None,
    format: Format = "backup",
    progress: Callable[[int], None] | None = None,
    page_size: int = PAGE_SIZE,
) -> int:
    """Write conversations to ``out`` as JSON lines; returns how many were written.

    ``ids``: only these (every owner's, unless ``owner`` is given; one that does not exist
    raises :class:`ConversationNotFoundError` before anything is written). ``owner``: only
    that owner's; None is every owner (each line keeps its owner). ``format="backup"``
    writes the lossless format (see the module doc); ``"finetune"`` one ``{"messages":
    [...]}`` per conversation. Encrypted ledgers export plaintext. ``progress`` is called
    with the running count. One conversation is in memory at a time.
    """
    _check_ledger(ledger)
    if format not in ("backup", "finetune"):
        raise InvalidArgumentError("format", "must be 'backup' or 'finetune'")
    if owner is not None:
        check_id(owner, "owner")
    if ids is not None:
        if isinstance(ids, str):
            raise InvalidArgumentError("ids", "must be a sequence of ids, not one string")
        for cid in ids:
            check_id(cid, "ids")
    if not isinstance(page_size, int) or page_size < 1:
        raise InvalidArgumentError("page_size", "must be a positive integer")
    keys = _keys(ledger, ids, owner, page_size)
    first = next(keys, None)  # a missing id is raised here, before the header is written
    if format == "backup":
        out.write(dumps({"format": FORMAT_NAME, "version": FORMAT_VERSION}) + "\n")
    written = 0
    for pk in keys if first is None else _chain(first, keys):
        dump = ledger._driver.run(_read(pk))
        if dump is None:
            continue
        if format == "backup":
            out.write(render(from_dump(dump)) + "\n")
        else:
            out.write(dumps({"messages": [m.message for m in dump.messages]}) + "\n")
        written += 1
        if progress is not None:
            progress(written)
    return written


def _chain(first: int, rest: Iterator[int]) -> Iterator[int]:
    yield first
    yield from rest


# ---------------------------------------------------------------------------- import


class _Refused(Exception):
    """A line that cannot be imported; the message is the reason."""


@dataclass
class _Prepared:
    """A line turned into what is written, and what is compared with a conversation already
    stored under its ``(owner, id)``."""

    restored: store.Restored
    #: the line as stored but for its messages, which ``line`` adds from the rows
    head: ConversationLine
    repairs: list[str]
    #: for a finetune line only the messages are compared (they carry no times)
    messages_only: bool

    @cached_property
    def line(self) -> ConversationLine:
        """The line as stored: built only to compare with a conversation already there."""
        r = self.restored
        out = [
            MessageLine.model_construct(
                seq=row["seq"],
                message=p.message,
                created_at=row["created_at"],
                status=row["status"],
                metadata=None if row["meta"] is None else json.loads(row["meta"]),
                idempotency_key=row["idempotency_key"],
            )
            for row, p in zip(r.messages, r.batch, strict=True)
        ]
        return self.head.model_copy(update={"messages": out})


def _id_of(text: str) -> str | None:
    """The id a line that does not validate names, to say which one was refused."""
    try:
        cid = json.loads(text).get("id")
    except (ValueError, AttributeError, RecursionError):
        return None
    return cid if isinstance(cid, str) and len(cid) <= 255 else None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _why(exc: _ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    parts = [f"{'.'.join(map(str, e['loc'])) or 'line'}: {e['msg']}" for e in errors[:3]]
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return _one_line("; ".join(parts) + more)


def _plain(value: str | None, name: str) -> str | None:
    if value is not None and "\x00" in value:
        raise InvalidArgumentError(name, "must not contain NUL characters")
    return value


def _utc(dt: datetime, name: str) -> datetime:
    dt = dt.astimezone(UTC)
    if not 1970 <= dt.year <= 9999:
        raise InvalidArgumentError(name, "must be a time from 1970 to 9999")
    return dt


def _meta(value: dict[str, Any] | None, name: str) -> tuple[str | None, dict[str, Any] | None]:
    text = dump_json(value, name)
    return text, None if text is None else json.loads(text)


def _stored_key(key: str | None, codec: Codec) -> str | None:
    """An idempotency key as it is stored here (a keyed hash is kept as it is)."""
    if key is None or is_keyed_hash(key):
        return key
    _plain(key, "idempotency_key")
    return codec.keyed_hash(key)


def _finetune_id(messages: list[dict[str, Any]]) -> str:
    digest = hashlib.sha256(_dumps_sorted(messages).encode("utf-8", "surrogatepass"))
    return "ft-" + digest.hexdigest()[:40]


def _dumps_sorted(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


class _Importer:
    def __init__(
        self, ledger: Ledger, owner: str | None, format: Format, repair: bool, codec: Codec
    ) -> None:
        self.ledger, self.config = ledger, ledger._config
        self.owner, self.format, self.repair, self.codec = owner, format, repair, codec
        self.imported = self.unchanged = 0
        self.refused: list[Refusal] = []
        self.repaired: list[Repair] = []
        #: forks whose parent was not there when they were written: (line, owner, id, parent)
        self.orphans: list[tuple[int, str | None, str, str]] = []

    # -- parsing

    def parse(self, text: str) -> tuple[ConversationLine, bool]:
        """The line as a conversation, and whether only its messages count (finetune)."""
        if self.format == "finetune":
            try:
                ft = FinetuneLine.model_validate_json(text)
            except _ValidationError as exc:
                raise _Refused(_why(exc)) from None
            cid = ft.id if ft.id is not None else _finetune_id(ft.messages)
            return as_conversation(ft, cid, self.owner, self.config.default_model), True
        try:
            line = ConversationLine.model_validate_json(text)
        except _ValidationError as exc:
            raise _Refused(_why(exc)) from None
        if self.owner is not None:
            line = line.model_copy(update={"owner": self.owner})
        return line, False

    def prepare(self, line: ConversationLine, *, messages_only: bool) -> _Prepared:
        """Check every value as an append would, and plan the rows (no I/O)."""
        config = self.config
        for i, m in enumerate(line.messages):
            if m.seq != i + 1:
                raise InvalidArgumentError("messages", f"seqs must be 1, 2, 3... (found {m.seq})")
        if (line.window_start or 0) > len(line.messages):
            raise InvalidArgumentError("window_start", "is past the newest message")
        given = list(line.messages)
        repairs: list[str] = []
        kept: list[tuple[int, dict[str, Any]]] = [(i, m.message) for i, m in enumerate(given)]
        if self.repair:
            fixed = repair_history([m.message for m in given])
            kept, repairs = fixed.kept, fixed.changes
        # where each original seq went: summaries and usage rows follow their messages
        new_seq: dict[int, int] = {i + 1: k + 1 for k, (i, _) in enumerate(kept)}
        if line.parent is not None:
            check_id(line.parent, "parent")
        new = config.new_conversation(line.id, line.owner, line.model, line.title, line.metadata)
        counter = config.counter(new.model)
        metas = [dump_json(given[i].metadata, f"messages[{i}].metadata") for i, _ in kept]
        batch, _ = config.prepare(
            [msg for _, msg in kept],
            counter,
            [None if t is None else json.loads(t) for t in metas],
        )
        batch = [  # prepared without a status: each message's own, where it has one
            p if given[i].status is None else replace(p, status=_plain(given[i].status, "status"))
            for p, (i, _) in zip(batch, kept, strict=True)
        ]
        plan = plan_append(0, State(0, 0, 0, 0, 0, None), batch, None)
        if plan.problems:
            raise InvalidMessageError(plan.problems)
        rows = plan.rows
        seen_keys: set[str] = set()
        for row, (i, _) in zip(rows, kept, strict=True):
            m = given[i]
            key = _stored_key(m.idempotency_key, self.codec)
            if key is not None:
                if key in seen_keys:
                    raise InvalidArgumentError("idempotency_key", f"{key!r} is used twice")
                seen_keys.add(key)
            row["created_at"] = _utc(m.created_at, "created_at")
            row["idempotency_key"] = key
        summaries, out_summaries = self._summaries(line, new_seq)
        usage, out_usage = self._usage(line, new_seq)
        meta_text = new.meta
        normal = line.model_copy(
            update={
                "owner": new.owner,
                "metadata": None if meta_text is None else json.loads(meta_text),
                "created_at": _utc(line.created_at, "created_at"),
                "updated_at": _utc(line.updated_at, "updated_at"),
                "forked_at": None if line.parent is None else line.forked_at,
                # a window start points at seqs a repair may have moved
                "window_start": None if repairs else line.window_start,
                "messages": [],
                "summaries": out_summaries,
                "usage": out_usage,
            }
        )
        restored = store.Restored(
            new=new,
            created_at=normal.created_at,
            updated_at=normal.updated_at,
            parent_id=normal.parent,
            forked_at=normal.forked_at,
            window_start=normal.window_start,
            state=plan.after,
            messages=rows,
            summaries=summaries,
            usage=usage,
            batch=batch,
        )
        return _Prepared(restored, normal, repairs, messages_only)

    @staticmethod
    def _moved(seq: int, new_seq: dict[int, int]) -> int:
        """The new seq of the last kept message at or before ``seq``."""
        while seq > 0 and seq not in new_seq:
            seq -= 1
        return 0 if seq == 0 else new_seq[seq]

    def _summaries(
        self,
        line: ConversationLine,
        new_seq: dict[int, int],
    ) -> tuple[list[dict[str, Any]], list[SummaryLine]]:
        rows, out = [], []
        for s in line.summaries:
            if s.upto_seq > len(line.messages):
                raise InvalidArgumentError("summaries", f"upto_seq {s.upto_seq} is past the end")
            upto = self._moved(s.upto_seq, new_seq)
            meta, meta_value = _meta(s.metadata, "summaries.metadata")
            created = _utc(s.created_at, "summaries.created_at")
            _plain(s.text, "summaries.text")
            rows.append(
                {
                    "upto_seq": upto,
                    "text": s.text,
                    "tokens": s.tokens,
                    "model": _plain(s.model, "summaries.model"),
                    "created_at": created,
                    "meta": meta,
                }
            )
            out.append(
                s.model_copy(
                    update={"upto_seq": upto, "created_at": created, "metadata": meta_value}
                )
            )
        return rows, out

    def _usage(
        self, line: ConversationLine, new_seq: dict[int, int]
    ) -> tuple[list[dict[str, Any]], list[UsageLine]]:
        rows, out = [], []
        for u in line.usage:
            if u.message_seq is not None and u.message_seq > len(line.messages):
                raise InvalidArgumentError("usage", f"message_seq {u.message_seq} is past the end")
            seq = None if u.message_seq is None else new_seq.get(u.message_seq)
            meta, meta_value = _meta(u.metadata, "usage.metadata")
            for name in ("model", "response_id", "system_fingerprint", "finish_reason"):
                _plain(getattr(u, name), f"usage.{name}")
            values = {
                **u.model_dump(exclude={"metadata", "idempotency_key"}),
                "message_seq": seq,
                "created_at": _utc(u.created_at, "usage.created_at"),
                "meta": meta,
                "idempotency_key": _stored_key(u.idempotency_key, self.codec),
            }
            rows.append(values)
            out.append(
                u.model_copy(
                    update={
                        "message_seq": seq,
                        "created_at": values["created_at"],
                        "metadata": meta_value,
                        "idempotency_key": values["idempotency_key"],
                    }
                )
            )
        return rows, out

    # -- writing

    def same(self, stored: store.ConversationDump, p: _Prepared, parent_here: bool) -> bool:
        """Whether the stored conversation is the line's. ``updated_at`` and
        ``window_start`` are not compared: they move while the content stays (a fork touches
        its parent, a window records where it started)."""
        if p.messages_only:
            return [m.message for m in stored.messages] == [m.message for m in p.line.messages]
        have = from_dump(stored)
        same_as_stored = {"updated_at": have.updated_at, "window_start": have.window_start}
        incoming = p.line.model_copy(update=same_as_stored)
        if have.parent is None and not parent_here:
            # its lineage was dropped when it was imported (the parent was not there)
            incoming = incoming.model_copy(update={"parent": None, "forked_at": None})
        return render(have) == render(incoming)

    def write(self, p: _Prepared) -> Op[tuple[bool, bool]]:
        """(written, parent present); _Refused when another conversation holds the key."""
        new, parent = p.restored.new, p.restored.parent_id

        def body(c: Connection) -> tuple[bool, bool]:
            here = parent is not None and store.exists(c, parent, new.owner)
            if store.exists(c, new.id, new.owner):
                if self.same(store.find_dump(c, new.id, new.owner), p, here):
                    return False, here
                raise _Refused(
                    "a conversation with this id and owner already exists with other content "
                    "(nothing was changed; delete it or import under another owner)"
                )
            store.write_conversation(c, p.restored)
            return True, here

        return (yield from writing(body))

    def line(self, n: int, text: str) -> None:
        cid: str | None = None
        try:
            line, messages_only = self.parse(text)
            cid = line.id
            p = self.prepare(line, messages_only=messages_only)
            written, parent_here = self.ledger._driver.run(self.write(p))
        except (_Refused, ChatLedgerError, ValueError, TypeError, RecursionError) as exc:
            why = _one_line(str(exc))  # a line that did not parse is named from its raw text
            if isinstance(exc, StorageError) and not why.startswith("database refused the write"):
                raise  # the database is gone: not this line's fault
            self.refused.append(Refusal(n, _id_of(text) if cid is None else cid, why))
            return
        if not written:
            self.unchanged += 1
            return
        self.imported += 1
        new = p.restored.new
        self.repaired.extend(Repair(n, new.id, change) for change in p.repairs)
        if p.restored.parent_id is not None and not parent_here:
            self.orphans.append((n, new.owner, new.id, p.restored.parent_id))

    def settle_lineage(self) -> None:
        """Forks imported before their parent keep their lineage if it came later in the
        file; those whose parent never came lose it, with a repair notice."""
        for n, owner, cid, parent in self.orphans:

            def body(
                c: Connection, owner: str | None = owner, cid: str = cid, parent: str = parent
            ) -> bool:
                if store.exists(c, parent, owner):
                    return False
                store.clear_lineage(c, cid, owner)
                return True

            if self.ledger._driver.run(writing(body)):
                self.repaired.append(
                    Repair(
                        n,
                        cid,
                        f"dropped the fork lineage: its parent {parent!r} is not in this ledger",
                    )
                )


def _header(text: str, format: Format) -> bool:
    """Whether the line is a header (checked); a finetune import refuses a backup outright."""
    try:
        data = json.loads(text)
    except ValueError:
        return False
    if not isinstance(data, dict) or "format" not in data or "messages" in data:
        return False
    if data.get("format") != FORMAT_NAME:
        raise InvalidArgumentError("source", f"is not a chatledger backup ({data['format']!r})")
    if format != "backup":
        raise InvalidArgumentError("format", "the file is a chatledger backup: use 'backup'")
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version > FORMAT_VERSION:
        raise InvalidArgumentError(
            "source", f"backup format version {version!r}: this chatledger reads {FORMAT_VERSION}"
        )
    return True


def import_jsonl(
    ledger: Ledger,
    source: TextIO,
    *,
    owner: str | None = None,
    format: Format = "backup",
    repair: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Import conversations from JSON lines; returns what was imported, unchanged, refused
    and repaired. Never raises for a bad line: it is refused with its number and the import
    goes on; each conversation is one transaction, so a refused one wrote nothing.

    ``owner``: import every conversation into this owner (None keeps each line's owner; a
    finetune line has none). ``repair=True`` drops orphan tool results and unanswered tool
    calls (see :mod:`chatledger.repair`) instead of refusing such a history. A fork keeps its
    lineage when its parent ends up in this ledger (earlier or later in the file, or already
    there), and loses it, with a :class:`Repair` notice, otherwise. Lines are read one at a
    time. Raises only when the source cannot be read as a whole (a header of another format
    or a newer version) or the database fails.
    """
    _check_ledger(ledger)
    if format not in ("backup", "finetune"):
        raise InvalidArgumentError("format", "must be 'backup' or 'finetune'")
    if owner is not None:
        check_id(owner, "owner")
    codec = ledger.engine.get_execution_options().get("chatledger_codec", PLAIN)
    importer = _Importer(ledger, owner, format, bool(repair), codec)
    done = 0
    first = True
    for n, text in enumerate(source, 1):
        if not text.strip():
            continue
        if first:
            first = False
            text = text.removeprefix("\ufeff")  # a byte order mark some editors write
            if _header(text, format):
                continue
        importer.line(n, text)
        done += 1
        if progress is not None:
            progress(done)
    importer.settle_lineage()
    return ImportReport(importer.imported, importer.unchanged, importer.refused, importer.repaired)
