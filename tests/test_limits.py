"""Every column sized for what it holds, every limit checked before writing, on every
database and both twins; on MariaDB also with a non-strict ``sql_mode`` (which would truncate
silently) and against the server's ``max_allowed_packet`` (which drops the connection)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select, text

import chatledger as cl
from chatledger.store.schema import completions, messages
from twins import AnyLedger, Opener

pytestmark = pytest.mark.twins

CALLS = 2000
NON_STRICT = {"connect_args": {"init_command": "SET SESSION sql_mode=''"}}


@pytest.fixture(params=["strict", "non-strict"])
def led(request: pytest.FixtureRequest, open_ledger: Opener, db_url: str, backend: str) -> Any:
    """The test's ledger; on MariaDB a second time with ``sql_mode=''``."""
    if request.param == "strict":
        return open_ledger(db_url)
    if backend != "mariadb":
        pytest.skip("sql_mode is MySQL/MariaDB's")
    return open_ledger(db_url, **NON_STRICT)


def test_two_thousand_parallel_tool_calls(led: AnyLedger, uid: str) -> None:
    calls = [
        {
            "id": f"call_{i:05d}",
            "type": "function",
            "function": {"name": f"f{i}", "arguments": "{}"},
        }
        for i in range(CALLS)
    ]
    conv = led.conversation(uid, model="gpt-4o")
    conv.append({"role": "user", "content": "do everything"})
    conv.append({"role": "assistant", "tool_calls": calls})  # its tool state is ~100 KiB
    assert len(led.get(uid).info.pending_tool_calls) == CALLS
    conv.extend(
        [{"role": "tool", "tool_call_id": c["id"], "content": "done"} for c in calls[: CALLS // 2]]
    )
    again = led.get(uid)  # read back whole: nothing truncated
    assert len(again.info.pending_tool_calls) == CALLS // 2
    again.extend(
        [{"role": "tool", "tool_call_id": c["id"], "content": "done"} for c in calls[CALLS // 2 :]]
    )
    assert led.get(uid).info.pending_tool_calls == ()
    window = led.get(uid).window(cl.TokenBudget(200_000))
    assert len(window) == 2 + CALLS


def test_model_names_are_checked(led: AnyLedger, uid: str) -> None:
    for bad in ("gpt\x00-4o", "gpt-4o\n", "m" * 129):
        with pytest.raises(cl.InvalidArgumentError, match="model"):
            led.conversation(f"{uid}-{len(bad)}", model=bad)
    conv = led.conversation(uid, model="gpt-4o")
    with pytest.raises(cl.InvalidArgumentError, match="model"):
        conv.update(model="gpt\x00")
    with pytest.warns(cl.UnknownModelWarning):
        assert led.conversation(f"{uid}-long", model="m" * 128).model == "m" * 128


def test_what_a_server_sends_always_fits(led: AnyLedger, uid: str) -> None:
    """A response's own fields (model, finish_reason, ids, counts) are whatever the server
    sent: stored cut to their columns, never a DataError, never the SQL mode's choice."""
    conv = led.conversation(uid, model="gpt-4o")
    conv.append({"role": "user", "content": "hi"})
    reason = "a_finish_reason_far_longer_than_thirty_two_characters"
    message = {"role": "assistant", "content": "ok"}
    got = conv.record(
        {
            "id": "resp-" + "i" * 300,
            "model": "gpt-4o\x00-2024",
            "system_fingerprint": "fp\x00",
            "choices": [{"index": 0, "message": message, "finish_reason": reason}],
            "usage": {"prompt_tokens": 5_000_000_000, "completion_tokens": 7},
        }
    )
    assert got.message is not None and got.message.status == reason[:32]
    rows = conv.usage_records()
    assert [(r.model, r.finish_reason, r.prompt_tokens) for r in rows] == [
        ("gpt-4o-2024", reason[:32], 2**31 - 1)
    ]
    assert conv.records()[-1].status == reason[:32]
    with led.engine.connect() as c:
        stored = c.execute(select(messages.c.status).where(messages.c.status == reason[:32]))
        assert stored.first() is not None
        assert c.execute(select(completions.c.model).where(completions.c.model == "gpt-4o-2024"))


def test_ids_titles_and_owners_round_trip_at_their_limits(led: AnyLedger, uid: str) -> None:
    cid = ("😀" * 255)[: 255 - len(uid)] + uid  # 4-byte characters, 255 of them
    owner = "ö" * 255
    title = "τ" * 1024
    conv = led.conversation(cid, owner=owner, title=title)
    info = led.get(cid, owner=owner).info
    assert (info.id, info.owner, info.title) == (cid, owner, title)
    assert conv.id == cid


def _packet(led: AnyLedger) -> int:
    with led.engine.connect() as c:
        return int(c.execute(text("SELECT @@max_allowed_packet")).scalar_one())


def test_a_message_above_max_allowed_packet_is_refused_typed(
    open_ledger: Opener, db_url: str, backend: str, uid: str
) -> None:
    if backend != "mariadb":
        pytest.skip("max_allowed_packet is MySQL/MariaDB's")
    led = open_ledger(db_url, max_message_bytes=256 * 1024 * 1024)
    limit = _packet(led)
    conv = led.conversation(uid, model="gpt-4o", system="s")
    # words, not one run of a letter: a run of millions of one character is one piece for
    # the tokenizer, which counts it slowly (the refusal comes after the count)
    huge = {"role": "user", "content": "x " * (limit // 2 + 512)}
    for _ in range(2):  # not retryable: the same answer, at once, every time
        with pytest.raises(cl.InvalidMessageError, match="max_allowed_packet") as info:
            conv.append(huge)
        assert not isinstance(info.value, cl.StorageError)
    # escaping counts: 0.8x the limit as text, but quotes take two bytes each once escaped
    quoted = {"role": "user", "content": '" ' * (limit * 2 // 5)}
    with pytest.raises(cl.InvalidMessageError, match="max_allowed_packet"):
        conv.append(quoted)
    with pytest.raises(cl.InvalidArgumentError, match="max_allowed_packet"):
        conv.update(metadata={"blob": "y" * (limit + 1024)})
    with pytest.raises(cl.InvalidArgumentError, match="max_allowed_packet"):
        led.conversation(f"{uid}-meta", metadata={"blob": "y" * (limit + 1024)})
    assert conv.messages() == [{"role": "system", "content": "s"}]  # nothing was written
    conv.append({"role": "user", "content": "x " * (limit // 8)})  # below it: stored whole
    assert len(led.get(uid).messages()[-1]["content"]) == limit // 4
