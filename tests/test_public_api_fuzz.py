"""Fuzz of the public API: random JSON-like values (and a few hostile ones) into append,
extend, record, update, conversation and request. Only a ``ChatLedgerError`` may escape, and
a call that raises leaves every table exactly as it was."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

import chatledger as cl
from chatledger.store.schema import metadata
from twins import AnyLedger

pytestmark = pytest.mark.twins

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["user", "assistant", "tool", "system", "\x00", "enc1:abc", " x ", "é" * 300]),
)
JSONISH = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=10), st.integers()), inner, max_size=4),
        st.fixed_dictionaries(
            {"role": st.sampled_from(["user", "assistant", "tool"])},
            optional={"content": inner, "tool_calls": inner, "name": inner, "tool_call_id": inner},
        ),
    ),
    max_leaves=12,
)
DEEP: Any = "x"
for _ in range(200):
    DEEP = {"role": "user", "content": [DEEP]}
HOSTILE = st.one_of(JSONISH, st.just(DEEP), st.just(math.nan), st.just(b"bytes"), st.just({1, 2}))

CALLS: list[tuple[str, Callable[[Any, Any, Any], Any]]] = [
    ("append", lambda led, conv, v: conv.append(v)),
    ("extend", lambda led, conv, v: conv.extend(v if isinstance(v, list) else [v])),
    (
        "append-metadata",
        lambda led, conv, v: conv.append({"role": "user", "content": "x"}, metadata=v),
    ),
    (
        "append-key",
        lambda led, conv, v: conv.append({"role": "user", "content": "x"}, idempotency_key=v),
    ),
    ("record", lambda led, conv, v: conv.record(v)),
    (
        "record-choice",
        lambda led, conv, v: conv.record({"id": "r", "model": "gpt-4o", "choices": v}),
    ),
    ("update-title", lambda led, conv, v: conv.update(title=v)),
    ("update-metadata", lambda led, conv, v: conv.update(metadata=v)),
    ("update-model", lambda led, conv, v: conv.update(model=v)),
    ("update-system", lambda led, conv, v: conv.update(system=v)),
    ("conversation-id", lambda led, conv, v: led.conversation(v)),
    ("conversation-owner", lambda led, conv, v: led.conversation("fz", owner=v)),
    (
        "conversation-fields",
        lambda led, conv, v: led.conversation(uuid.uuid4().hex, model=v, system=v, metadata=v),
    ),
    ("request-param", lambda led, conv, v: conv.request(temperature=v, max_tokens=20)),
    ("request-tools", lambda led, conv, v: conv.request(tools=v, max_tokens=20)),
    ("request-strategy", lambda led, conv, v: conv.request(v)),
    ("truncate", lambda led, conv, v: conv.truncate(v)),
    ("edit", lambda led, conv, v: conv.edit(2, v)),
]


def _tables(ledger: AnyLedger) -> dict[str, list[tuple[Any, ...]]]:
    with ledger.engine.connect() as conn:
        return {
            t.name: sorted(map(tuple, conn.execute(select(t)).all()), key=repr)
            for t in metadata.sorted_tables
        }


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(which=st.sampled_from(CALLS), value=HOSTILE)
def test_only_typed_errors_escape_and_nothing_is_written(
    shared_ledger: AnyLedger, which: tuple[str, Any], value: Any
) -> None:
    led = shared_ledger
    conv = led.conversation(uuid.uuid4().hex, system="Be brief.")
    conv.append({"role": "user", "content": "hello"})
    before = _tables(led)
    try:
        which[1](led, conv, value)
    except cl.ChatLedgerError:
        assert _tables(led) == before, which[0]
