"""Property: random sequences of append, extend, record, pop, truncate, rewind, fork and edit
leave every conversation exact and API-valid, and every strategy's window within its
invariants, on every database and both twins."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import chatledger as cl
from twins import AnyConversation, AnyLedger

pytestmark = pytest.mark.twins

WORDS = st.text(alphabet="abcdefgh ", min_size=1, max_size=30)


def _call(n: int) -> dict[str, Any]:
    return {"id": f"c{n}", "type": "function", "function": {"name": "f", "arguments": "{}"}}


# one step: (kind, payload); payloads are drawn independent of the state, and a step that
# the state does not allow (a user message while calls are open) is expected to be refused
STEP = st.one_of(
    st.tuples(st.just("user"), WORDS),
    st.tuples(st.just("assistant"), WORDS),
    st.tuples(st.just("calls"), st.integers(1, 3)),
    st.tuples(st.just("results"), st.integers(0, 3)),
    st.tuples(st.just("record"), WORDS),
    st.tuples(st.just("pop"), st.none()),
    st.tuples(st.just("truncate"), st.integers(0, 40)),
    st.tuples(st.just("rewind"), st.integers(1, 3)),
    st.tuples(st.just("edit"), st.tuples(st.integers(1, 40), WORDS)),
    st.tuples(st.just("fork"), st.integers(0, 40)),
)


def _check(conv: AnyConversation) -> None:
    recs = conv.records()
    assert [r.seq for r in recs] == list(range(1, len(recs) + 1))
    total = 0
    for r in recs:
        total += r.tokens
        assert r.cumulative_tokens == total
    info = conv.refresh()
    assert (info.last_seq, info.token_total) == (len(recs), total)
    msgs = [r.message for r in recs]
    if msgs:
        cl.validate_messages(msgs, allow_pending_tool_calls=True)
        assert total == cl.count_tokens(msgs, conv.model) - conv.counter.priming
    if info.pending_tool_calls:
        return
    for strategy in (cl.TokenBudget(400), cl.LastRounds(2), None):
        try:
            w = conv.window(strategy, explain=True)
        except cl.ContextOverflowError:
            continue
        assert w.prompt_tokens == cl.count_tokens(w.messages, conv.model)
        if w.allowed is not None:
            assert w.prompt_tokens <= w.allowed
        if w.messages:
            cl.validate_messages(w.messages)


def _apply(conv: AnyConversation, step: tuple[str, Any], n: int) -> AnyConversation:
    kind, arg = step
    pending = conv.info.pending_tool_calls
    try:
        if kind == "user":
            conv.append({"role": "user", "content": arg})
        elif kind == "assistant":
            conv.append({"role": "assistant", "content": arg})
        elif kind == "calls":
            conv.append(
                {"role": "assistant", "tool_calls": [_call(n * 10 + i) for i in range(arg)]}
            )
        elif kind == "results":
            conv.extend(
                [{"role": "tool", "tool_call_id": c, "content": "ok"} for c in pending[:arg]]
            )
        elif kind == "record":
            conv.record(
                {
                    "id": f"r-{uuid.uuid4().hex}",
                    "model": conv.model,
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": arg},
                        }
                    ],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
                }
            )
        elif kind == "pop":
            conv.pop()
        elif kind == "truncate":
            conv.truncate(arg)
        elif kind == "rewind":
            conv.rewind(arg)
        elif kind == "edit":
            seq, text = arg
            conv.edit(min(seq, conv.info.last_seq + 1), {"role": "user", "content": text})
        elif kind == "fork":
            child = conv.fork(at_seq=arg)
            _check(child)
            return child  # go on with the fork: the parent is checked, and kept as it was
    except (cl.InvalidMessageError, cl.InvalidArgumentError):
        pass  # refused as the API would refuse it (or an edit before open calls close)
    return conv


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(STEP, min_size=1, max_size=14))
def test_random_edits_keep_history_exact(shared_ledger: AnyLedger, steps: list[Any]) -> None:
    conv = shared_ledger.conversation(uuid.uuid4().hex, system="Be brief.")
    for n, step in enumerate(steps):
        before = conv
        conv = _apply(conv, step, n)
        _check(conv)
        if conv is not before:
            _check(before)
