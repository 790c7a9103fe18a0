"""Idempotency keys: a retry replays, the same key with other content is a conflict, and no
caller key can collide with the keys a batch gives its later messages."""

from __future__ import annotations

import pytest

import chatledger as cl
from twins import AnyLedger

pytestmark = pytest.mark.twins

U1 = {"role": "user", "content": "one"}
A1 = {"role": "assistant", "content": "two"}
U2 = {"role": "user", "content": "three"}


def test_same_key_same_batch_replays(ledger: AnyLedger, uid: str) -> None:
    conv = ledger.conversation(uid)
    first = conv.extend([U1, A1], idempotency_key="k")
    again = conv.extend([U1, A1], idempotency_key="k")
    assert [m.seq for m in again] == [m.seq for m in first] == [1, 2]
    assert len(conv.messages()) == 2


@pytest.mark.parametrize(
    ("retry", "metadata"),
    [
        ([U1], None),  # fewer messages
        ([U1, A1, U2], None),  # more messages
        ([U1, {"role": "assistant", "content": "other"}], None),  # other content
        ([U1, A1], [{"ui": 1}, None]),  # other metadata
    ],
    ids=["fewer", "more", "other-content", "other-metadata"],
)
def test_same_key_other_batch_is_a_conflict(
    ledger: AnyLedger, uid: str, retry: list[dict[str, str]], metadata: object
) -> None:
    conv = ledger.conversation(uid)
    conv.extend([U1, A1], idempotency_key="k")
    with pytest.raises(cl.IdempotencyConflictError):
        conv.extend(retry, idempotency_key="k", metadata=metadata)  # type: ignore[arg-type]
    assert conv.messages() == [U1, A1]


def test_caller_keys_never_collide_with_batch_keys(ledger: AnyLedger, uid: str) -> None:
    conv = ledger.conversation(uid)
    conv.extend([U1, A1], idempotency_key="k9")  # its second message is keyed internally
    stored = conv.append(U2, idempotency_key="k9#1")  # a key that once named it
    assert stored.seq == 3
    conv.append({"role": "assistant", "content": "four"}, idempotency_key="k")
    assert conv.extend([U1, A1], idempotency_key="k9")[0].seq == 1  # still a replay
    with pytest.raises(cl.InvalidArgumentError):
        conv.append(U1, idempotency_key="k9\x1f1")  # control characters are reserved
    assert len(conv.messages()) == 4
