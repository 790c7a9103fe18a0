"""The async twin on aiosqlite, asyncpg and aiomysql: same behaviour as the sync suite."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import chatledger as cl


def call(cid: str) -> dict[str, Any]:
    return {"id": cid, "type": "function", "function": {"name": "f", "arguments": '{"q": "é"}'}}


async def test_issue_example_async(aledger: cl.AsyncLedger, uid: str) -> None:
    conv = await aledger.conversation(
        f"support-{uid}", owner="user-7", model="gpt-4o", system="You are a helpful assistant."
    )
    await conv.append({"role": "user", "content": "Who won the world series in 2020?"})
    await conv.extend(
        [
            {"role": "assistant", "content": None, "tool_calls": [call("a1")]},
            {"role": "tool", "tool_call_id": "a1", "content": "Dodgers 🏆"},
            {"role": "assistant", "content": "The Dodgers."},
        ]
    )
    history = await conv.messages()
    assert [m["role"] for m in history] == ["system", "user", "assistant", "tool", "assistant"]
    assert "content" not in history[2]
    assert await conv.count_tokens() == cl.count_tokens(history, model="gpt-4o")
    again = await aledger.conversation(f"support-{uid}", owner="user-7")
    assert await again.messages() == history
    assert [r.seq for r in await again.last(2)] == [4, 5]


async def test_async_rules_match_sync(aledger: cl.AsyncLedger, uid: str) -> None:
    conv = await aledger.conversation(uid, owner=f"o-{uid}")
    await conv.append({"role": "user", "content": "hi"})
    with pytest.raises(cl.InvalidMessageError) as info:
        await conv.extend(
            [{"role": "assistant", "content": "ok"}, {"role": "tool", "content": "x"}]
        )
    assert (info.value.problems[0].index, info.value.problems[0].field) == (1, "tool_call_id")
    assert len(await conv.messages()) == 1
    with pytest.raises(cl.ConversationNotFoundError):
        await aledger.get(uid, owner=f"intruder-{uid}")
    first = await conv.append({"role": "assistant", "content": "x"}, idempotency_key="k")
    assert await conv.append({"role": "assistant", "content": "x"}, idempotency_key="k") == first
    info2 = await conv.update(model="gpt-4", metadata={"plan": "pro"})
    assert info2.encoding == "cl100k_base" and info2.metadata == {"plan": "pro"}
    counter = cl.TokenCounter("gpt-4")
    assert [r.tokens for r in await conv.records()] == [
        counter.message(m) for m in await conv.messages()
    ]
    listed = await aledger.conversations(owner=f"o-{uid}")
    assert [c.id for c in listed] == [uid]
    assert await aledger.delete_owner(f"o-{uid}") == 1
    with pytest.raises(cl.ConversationNotFoundError):
        await aledger.get(uid)


async def test_async_concurrent_tasks_gap_free(aledger: cl.AsyncLedger, uid: str) -> None:
    conv = await aledger.conversation(uid)

    async def worker(w: int) -> None:
        handle = await aledger.get(uid)
        for i in range(10):
            await handle.append({"role": "user", "content": f"{w}:{i}"})

    await asyncio.gather(*(worker(w) for w in range(4)))
    recs = await conv.records()
    assert [r.seq for r in recs] == list(range(1, 41))
    assert len({r.message["content"] for r in recs}) == 40
    assert (await conv.refresh()).token_total == sum(r.tokens for r in recs)


async def test_async_create_race_returns_one_conversation(
    aledger: cl.AsyncLedger, uid: str
) -> None:
    convs = await asyncio.gather(*(aledger.conversation(uid, system="only once") for _ in range(5)))
    assert {c.id for c in convs} == {uid}
    assert await convs[0].messages() == [{"role": "system", "content": "only once"}]
