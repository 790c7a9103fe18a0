"""Encryption at rest, for both twins: nothing derived from content stored in plaintext (keyed
hashes for what is looked up by equality), replays across key rotation, and rotation itself:
row by row beside live writes, resumable, reporting the rows it could not rotate, and the
VACUUM that takes old ciphertext out of the files."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event, make_url, select, text

import chatledger as cl
from chatledger.encryption import RotationReport, is_keyed_hash
from chatledger.store.engine import resolve_url
from chatledger.store.schema import completions, conversations, messages, summaries
from twins import AnyConversation, AnyLedger, Opener, statements_of, stored_pk

pytestmark = pytest.mark.twins

SECRET = "my card number is 4111 1111 1111 1111"
TABLES = (conversations, messages, summaries, completions)


@pytest.fixture
def keys() -> tuple[str, str]:
    return cl.Encryption.generate_key(), cl.Encryption.generate_key()


@pytest.fixture
def private_url(db_url: str, backend: str) -> Iterator[str]:
    """A database of this test's own: the run's server databases are shared by every test, and
    an encrypted ledger (a rotation even more) must not touch the rows of the others."""
    if backend == "sqlite":
        yield db_url  # a file in the test's own directory
        return
    name = f"{make_url(db_url).database}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(resolve_url(db_url, asynchronous=False), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield make_url(db_url).set(database=name).render_as_string(hide_password=False)
    finally:
        force = " WITH (FORCE)" if backend == "postgresql" else ""
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE {name}{force}"))
        admin.dispose()


def completion(rid: str, content: str) -> dict[str, Any]:
    return {
        "id": rid,
        "model": "gpt-4o",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5},
    }


def fill(conv: AnyConversation) -> None:
    for i in range(8):
        conv.append({"role": "user", "content": f"{SECRET} question {i} " * 8})
        conv.record(completion(f"{conv.id}-{i}", f"answer {i} " * 20))


def summarize(previous: str | None, msgs: list[dict[str, Any]]) -> str:
    return f"{SECRET}: summary of {len(msgs)}"


def stored_text(ledger: AnyLedger, pk: int) -> str:
    """Every value stored for one conversation, as text."""
    with ledger.engine.connect() as conn:
        rows = [conn.execute(select(conversations).where(conversations.c.pk == pk)).all()]
        for t in (messages, summaries, completions):
            rows.append(conn.execute(select(t).where(t.c.conversation_pk == pk)).all())
    return repr(rows)


def test_encryption_at_rest_sqlite_file_has_no_plaintext(
    open_ledger: Opener, tmp_path: Path, keys: tuple[str, str]
) -> None:
    path = tmp_path / "secret.db"
    url = f"sqlite:///{path}"
    with open_ledger(url, encryption=cl.Encryption([keys[0]])) as led:
        conv = led.conversation("c", owner="o", model="gpt-4o", metadata={"note": SECRET})
        fill(conv)
        w = conv.window(
            [cl.Summarize(summarize, trigger=300, keep=150), cl.TokenBudget(2000)], explain=True
        )
        assert w.summary is not None
        history = conv.messages()
        assert SECRET in history[0]["content"]
        # counts and windows work: computed from stored counts, the content decrypted
        assert conv.count_tokens() == cl.count_tokens(history, "gpt-4o")
        assert w.prompt_tokens == cl.count_tokens(w.messages, "gpt-4o")
        assert conv.info.metadata == {"note": SECRET}
        conv.record(
            {
                "id": "multi",
                "model": "gpt-4o",
                "choices": [
                    {
                        "index": i,
                        "message": {"role": "assistant", "content": f"{SECRET} {i}"},
                        "finish_reason": "stop",
                    }
                    for i in range(2)
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1},
            }
        )
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())  # the file, its WAL and SHM
    for needle in ("4111 1111", "question 3", "answer 2", "summary of", "multi"):
        assert needle.encode() not in raw, needle
    # a wrong key fails clearly; no key at all too
    wrong = open_ledger(url, encryption=cl.Encryption([keys[1]]))
    with wrong, pytest.raises(cl.DecryptionError, match="key"):
        wrong.get("c", owner="o").messages()
    with open_ledger(url) as none, pytest.raises(cl.DecryptionError, match="encrypt"):
        none.get("c", owner="o").messages()
    # rotation: the new key first, the old one still accepted, everything re-encrypted
    with open_ledger(url, encryption=cl.Encryption([keys[1], keys[0]])) as both:
        assert both.get("c", owner="o").messages() == [
            *history,
            {"role": "assistant", "content": f"{SECRET} 0"},
        ]
        report = both.rotate_encryption(batch=7)
        assert report.complete and report.rotated > len(history)
    with open_ledger(url, encryption=cl.Encryption([keys[1]], hash_key=keys[0])) as new_only:
        conv = new_only.get("c", owner="o")
        assert conv.messages()[: len(history)] == history
        assert conv.usage_records()[-1].metadata is not None
        assert conv.usage_records()[-1].response_id == "multi"
        assert conv.window(cl.TokenBudget(2000))[-1]["content"].startswith(SECRET)


def test_encryption_on_server_databases(
    private_url: str, open_ledger: Opener, uid: str, keys: tuple[str, str]
) -> None:
    with open_ledger(private_url, encryption=cl.Encryption([keys[0]])) as led:
        conv = led.conversation(uid, model="gpt-4o")
        conv.append({"role": "user", "content": SECRET}, metadata={"k": SECRET})
        assert conv.messages() == [{"role": "user", "content": SECRET}]
        assert conv.records()[0].metadata == {"k": SECRET}
        pk = stored_pk(led, conv.id)
        with led.engine.connect() as conn:
            data, meta = conn.execute(
                select(messages.c.data, messages.c.meta).where(messages.c.conversation_pk == pk)
            ).one()
        assert SECRET not in data and SECRET not in meta and data.startswith("enc1:")
        assert json.dumps(conv.messages())  # decrypts to the original


def test_bad_keys_are_refused(open_ledger: Opener) -> None:
    with pytest.raises(cl.InvalidArgumentError, match="keys"):
        cl.Encryption([])
    with pytest.raises(cl.InvalidArgumentError, match=r"keys\[0\]"):
        cl.Encryption(["not a key"])
    with pytest.raises(cl.InvalidArgumentError, match="hash_key"):
        cl.Encryption([cl.Encryption.generate_key()], hash_key="not a key")
    with pytest.raises(cl.InvalidArgumentError, match="encryption"):
        open_ledger("sqlite://", encryption="secret")


def test_hash_key_outlives_the_key_it_came_from(keys: tuple[str, str]) -> None:
    new, old = keys
    first = cl.Encryption([old]).keyed_hash("retry-7")
    assert is_keyed_hash(first) and "retry-7" not in first
    # the oldest key of the list keys the hashes; retired, it is passed as hash_key
    assert cl.Encryption([new, old]).keyed_hash("retry-7") == first
    assert cl.Encryption([new], hash_key=old).keyed_hash("retry-7") == first
    assert cl.Encryption([new]).keyed_hash("retry-7") != first
    # a response id is encrypted where its column holds the ciphertext, else hashed
    enc = cl.Encryption([new])
    assert enc.decode(enc.encode_id("chatcmpl-" + "x" * 29, 255)) == "chatcmpl-" + "x" * 29
    assert is_keyed_hash(enc.encode_id("chatcmpl-" + "x" * 200, 255))


def test_identifiers_derived_from_content_are_not_stored_in_plaintext(
    private_url: str, open_ledger: Opener, uid: str, keys: tuple[str, str]
) -> None:
    led = open_ledger(private_url, encryption=cl.Encryption([keys[0]]))
    conv = led.conversation(uid, model="gpt-4o")
    batch = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    first = conv.extend(batch, idempotency_key="idem-SECRETKEY")
    conv.append({"role": "user", "content": "and?"})
    recorded = conv.record(completion("chatcmpl-SECRETRESP", "so."))
    long_id = "chatcmpl-SECRETLONG-" + "x" * 200  # its ciphertext would not fit the column
    conv.append({"role": "user", "content": "more"})
    conv.record(completion(long_id, "fine."))
    conv.append({"role": "user", "content": "look it up"})
    call = {"id": "call_SECRETCALL", "type": "function"}
    call["function"] = {"name": "lookup_SECRETFN", "arguments": "{}"}
    conv.append({"role": "assistant", "tool_calls": [call]})

    stored = stored_text(led, stored_pk(led, uid) or 0)
    assert "SECRET" not in stored
    # read back: pending calls, response ids (a too-long one as its keyed hash)
    again = led.get(uid)
    assert again.info.pending_tool_calls == ("call_SECRETCALL",)
    records = again.usage_records()
    assert records[0].response_id == "chatcmpl-SECRETRESP"
    assert records[1].response_id is not None and is_keyed_hash(records[1].response_id)
    # replays by idempotency key and by response id still work, hashed
    replay = again.extend(batch, idempotency_key="idem-SECRETKEY")
    k2 = "idem-SECRETKEY\x1f1"  # the batch's second message
    assert [(m.seq, m.idempotency_key) for m in replay] == [(1, "idem-SECRETKEY"), (2, k2)]
    assert [m.idempotency_key for m in first] == ["idem-SECRETKEY", k2]
    with pytest.raises(cl.IdempotencyConflictError):
        again.extend(batch[:1], idempotency_key="idem-SECRETKEY")
    again.append({"role": "tool", "tool_call_id": "call_SECRETCALL", "content": "42"})
    replayed = again.record(completion("chatcmpl-SECRETRESP", "so.")).message
    assert replayed is not None and recorded.message is not None
    assert (replayed.seq, replayed.message) == (recorded.message.seq, recorded.message.message)
    assert again.record(completion(long_id, "fine.")).usage == records[1]
    assert len(again.usage_records()) == 2 and again.info.message_count == 9


def test_replays_survive_key_rotation(
    private_url: str, open_ledger: Opener, uid: str, keys: tuple[str, str]
) -> None:
    new, old = keys
    batch = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    with open_ledger(private_url, encryption=cl.Encryption([old])) as led:
        conv = led.conversation(uid, model="gpt-4o")
        first = conv.extend(batch, idempotency_key="k")
        conv.record(completion("resp-1", "ok"))
    with open_ledger(private_url, encryption=cl.Encryption([new, old])) as led:
        report = led.rotate_encryption(batch=2)
        assert report.complete and report.rotated > 0
        assert led.rotate_encryption().rotated == 0  # a re-run finds nothing left to do
    with open_ledger(private_url, encryption=cl.Encryption([new], hash_key=old)) as led:
        conv = led.get(uid)
        assert [m.seq for m in conv.extend(batch, idempotency_key="k")] == [m.seq for m in first]
        conv.record(completion("resp-1", "ok"))
        assert len(conv.usage_records()) == 1 and conv.info.message_count == 3
        with pytest.raises(cl.IdempotencyConflictError):
            conv.extend(batch[:1], idempotency_key="k")


def test_rotation_reports_rows_it_cannot_rotate(
    private_url: str, open_ledger: Opener, uid: str, keys: tuple[str, str]
) -> None:
    new, old = keys
    stranger = cl.Encryption.generate_key()
    with open_ledger(private_url, encryption=cl.Encryption([old])) as led:
        fill(led.conversation(f"{uid}-a", model="gpt-4o", metadata={"n": 1}))
    with open_ledger(private_url, encryption=cl.Encryption([stranger])) as led:
        led.conversation(f"{uid}-b", model="gpt-4o").append({"role": "user", "content": "hi"})
    with open_ledger(private_url, encryption=cl.Encryption([new, old])) as led:
        report = led.rotate_encryption(batch=5)
        b_pk = stored_pk(led, f"{uid}-b")
        assert [(f.table, f.key) for f in report.failures] == [("messages", (b_pk, 1))]
        assert "key" in report.failures[0].reason and not report.complete
        assert report.tables["messages"].rotated == 16 and report.tables["messages"].failed == 1
        assert report.tables["completions"].rotated == 8
        assert report.tables["conversations"].rotated == 1  # b's has nothing encrypted
    with open_ledger(private_url, encryption=cl.Encryption([new], hash_key=old)) as led:
        conv = led.get(f"{uid}-a")
        assert len(conv.messages()) == 16 and conv.info.metadata == {"n": 1}


def test_rotation_resumes_where_it_stopped(
    private_url: str, open_ledger: Opener, uid: str, keys: tuple[str, str]
) -> None:
    new, old = keys
    with open_ledger(private_url, encryption=cl.Encryption([old])) as led:
        fill(led.conversation(uid, model="gpt-4o"))
    led = open_ledger(private_url, encryption=cl.Encryption([new, old]))
    seen: list[str] = []

    def fail_second_batch(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("UPDATE chatledger_messages"):
            seen.append(statement)
            if len(seen) == 5:  # the first row of the second batch
                raise RuntimeError("interrupted")

    engine = statements_of(led)
    event.listen(engine, "before_cursor_execute", fail_second_batch)
    try:
        with pytest.raises(RuntimeError, match="interrupted"):
            led.rotate_encryption(batch=4)
    finally:
        event.remove(engine, "before_cursor_execute", fail_second_batch)
    report = led.rotate_encryption(batch=4)
    assert report.tables["messages"].current == 4  # the first batch, committed, is skipped
    assert report.tables["messages"].rotated == 12 and report.complete


def test_rotation_keeps_a_concurrent_metadata_update(
    private_url: str, open_ledger: Opener, uid: str, keys: tuple[str, str]
) -> None:
    new, old = keys
    with open_ledger(private_url, encryption=cl.Encryption([old])) as led:
        led.conversation(uid, metadata={"v": 0}).append({"role": "user", "content": "hi"})
    rotating = open_ledger(private_url, encryption=cl.Encryption([new, old]))
    updater = cl.Ledger(private_url, encryption=cl.Encryption([new, old]))
    errors: list[BaseException] = []

    def update() -> None:
        try:
            updater.get(uid).update(metadata={"v": 1})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def update_meanwhile(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        # the rotation has read the row; another thread updates it before it is written back
        if statement.startswith("UPDATE chatledger_conversations") and not fired:
            fired.append(True)
            thread = threading.Thread(target=update)
            thread.start()
            thread.join(30)

    fired: list[bool] = []
    engine = statements_of(rotating)
    event.listen(engine, "before_cursor_execute", update_meanwhile)
    try:
        report = rotating.rotate_encryption()
    finally:
        event.remove(engine, "before_cursor_execute", update_meanwhile)
        updater.close()
    assert fired and not errors
    assert rotating.get(uid).info.metadata == {"v": 1}  # not reverted
    assert report.complete
    with open_ledger(private_url, encryption=cl.Encryption([new], hash_key=old)) as led:
        assert led.get(uid).info.metadata == {"v": 1}  # and under the new key


def _raw_pages(ledger: AnyLedger) -> bytes:
    """Every page of the tables and their TOAST tables, dead tuples and free space included."""
    with ledger.engine.begin() as conn:
        conn.execute(text("CREATE EXTENSION IF NOT EXISTS pageinspect"))
        pages = []
        for t in TABLES:
            rels = [t.name]
            toast = conn.execute(
                text(
                    "SELECT reltoastrelid::regclass::text FROM pg_class "
                    "WHERE oid = CAST(:t AS regclass)"
                ),
                {"t": t.name},
            ).scalar()
            if toast and toast != "-":
                rels.append(toast)
            for rel in rels:
                pages += conn.execute(
                    text(
                        "SELECT get_raw_page(CAST(:r AS text), n::int) FROM generate_series(0, "
                        "pg_relation_size(CAST(:r AS regclass)) "
                        "/ current_setting('block_size')::int - 1) n"
                    ),
                    {"r": rel},
                ).scalars()
    return b"".join(bytes(p) for p in pages)


def test_vacuum_takes_old_ciphertext_out_of_the_files(
    private_url: str, open_ledger: Opener, backend: str, uid: str, keys: tuple[str, str]
) -> None:
    new, old = keys
    with open_ledger(private_url, encryption=cl.Encryption([old])) as led:
        led.conversation(uid).append({"role": "user", "content": SECRET})
        with led.engine.connect() as conn:
            before = conn.execute(select(messages.c.data)).scalar_one().encode()
    led = open_ledger(private_url, encryption=cl.Encryption([new, old]))
    assert not led.rotate_encryption().vacuumed
    if backend == "postgresql":
        assert before in _raw_pages(led)  # the old row version, dead but still on its page
    report: RotationReport = led.rotate_encryption(vacuum=True)  # nothing left but the VACUUM
    assert report.vacuumed and report.rotated == 0
    with led.engine.connect() as conn:
        after = conn.execute(select(messages.c.data)).scalar_one().encode()
    assert after != before
    if backend == "postgresql":
        raw = _raw_pages(led)
        assert after in raw and before not in raw
    elif backend == "sqlite":
        path = Path(make_url(private_url).database or "")
        raw = b"".join(p.read_bytes() for p in path.parent.iterdir() if p.is_file())
        assert after in raw and before not in raw
    assert led.get(uid).messages() == [{"role": "user", "content": SECRET}]
