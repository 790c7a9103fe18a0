"""ChatledgerHistory reads a message changed through chatledger after LangChain wrote it
(``conv.update(system=...)``, ``conv.edit``, ``conv.rewind``) as changed: the LangChain fields
kept in its metadata never put the old content back."""

from __future__ import annotations

import pytest

pytest.importorskip("langchain_core")

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

import chatledger as cl
from chatledger.integrations.langchain import ChatledgerHistory
from chatledger.strategies import Strategy


def prompted() -> list[BaseMessage]:
    """A system prompt whose content and id only the kept fields carry, and one round."""
    return [
        SystemMessage([{"type": "text", "text": "Old rules."}], id="s1"),
        HumanMessage("Hi", id="h1"),
        AIMessage("Hello.", id="a1", response_metadata={"finish_reason": "stop"}),
    ]


@pytest.mark.parametrize("strategy", [None, cl.TokenBudget(4000)], ids=["stored", "window"])
def test_a_message_edited_through_chatledger_is_read_as_edited(
    ledger: cl.Ledger, uid: str, strategy: Strategy | None
) -> None:
    history = ChatledgerHistory(ledger, uid, owner="u1", strategy=strategy)
    history.add_messages(prompted())
    assert history.messages == prompted()
    conv = ledger.get(uid, owner="u1")
    assert conv.info.prefix_seq == 1  # the system message is the pinned prompt

    # rewritten in place: the old content and id no longer belong to it
    conv.update(system="New rules.")
    assert history.messages == [SystemMessage("New rules."), *prompted()[1:]]

    # replaced: the reply after it goes, the new message has only its stored form
    conv.edit(2, {"role": "user", "content": "Hi again"})
    assert history.messages == [SystemMessage("New rules."), HumanMessage("Hi again")]

    # rewound: the rounds left keep their fields
    history.add_messages([AIMessage("Hello again.", id="a2"), HumanMessage("Bye", id="h2")])
    history.add_messages([AIMessage("Bye.", id="a3")])
    conv.rewind(1)
    assert history.messages == [
        SystemMessage("New rules."),
        HumanMessage("Hi again"),
        AIMessage("Hello again.", id="a2"),
    ]


def test_kept_fields_written_without_a_digest_are_checked_against_the_message(
    ledger: cl.Ledger, uid: str
) -> None:
    """Metadata written before digests were kept: used while it converts back to the stored
    message, ignored once the message was edited."""
    blocks = [{"type": "text", "text": "Old rules."}]
    conv = ledger.conversation(uid)
    conv.extend(
        [{"role": "system", "content": "Old rules."}, {"role": "user", "content": "Hi"}],
        metadata=[{"langchain": {"content": blocks, "id": "s1"}}, {"langchain": {"id": "h1"}}],
    )
    history = ChatledgerHistory(ledger, uid)
    assert history.messages == [SystemMessage(blocks, id="s1"), HumanMessage("Hi", id="h1")]
    conv.update(system="New rules.")
    assert history.messages == [SystemMessage("New rules."), HumanMessage("Hi", id="h1")]


async def test_a_message_edited_through_chatledger_is_read_as_edited_async(
    aledger: cl.AsyncLedger, uid: str
) -> None:
    history = ChatledgerHistory(aledger, uid, strategy=cl.LastRounds(2))
    await history.aadd_messages(prompted())
    conv = await aledger.get(uid)
    await conv.update(system="New rules.")
    assert await history.aget_messages() == [SystemMessage("New rules."), *prompted()[1:]]
