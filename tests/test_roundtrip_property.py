"""Property: any valid conversation comes back from every database, through either twin, exactly
as it was sent."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import chatledger as cl
from strategies import conversations
from twins import AnyLedger

pytestmark = pytest.mark.twins

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
                "required": ["city"],
            },
        },
    }
]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(convo=conversations(), split=st.integers(0, 30), model=st.sampled_from(["gpt-4o", "gpt-4"]))
def test_any_valid_conversation_round_trips(
    backend: str,
    shared_ledger: AnyLedger,
    convo: list[dict[str, Any]],
    split: int,
    model: str,
) -> None:
    assert cl.validate_messages(convo) == convo
    led = shared_ledger
    conv = led.conversation(uuid.uuid4().hex, model=model)
    # stored in two writes at an arbitrary point (mid tool-call block included)
    k = min(split, len(convo))
    conv.extend(convo[:k])
    conv.extend(convo[k:])
    assert conv.messages() == convo
    recs = conv.records()
    assert [r.seq for r in recs] == list(range(1, len(convo) + 1))
    assert conv.count_tokens() == cl.count_tokens(convo, model=model)
    assert conv.count_tokens(TOOLS) == cl.count_tokens(convo, model=model, tools=TOOLS)
    assert recs[-1].cumulative_tokens == sum(r.tokens for r in recs)
