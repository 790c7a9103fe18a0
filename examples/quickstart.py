"""Store a conversation on SQLite, read it back, and show what each message costs in tokens.

Runs offline: token counting uses the BPE files bundled in the package.

    python examples/quickstart.py [sqlite:///chat.db]
"""

from __future__ import annotations

import contextlib
import sys

import chatledger as cl

WEATHER_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}


def main(url: str = "sqlite:///chatledger-quickstart.db") -> None:
    with cl.Ledger(url) as ledger:
        with contextlib.suppress(cl.ConversationNotFoundError):
            ledger.delete("support-42", owner="user-7")  # afresh on every run: same output
        conv = ledger.conversation(
            "support-42", owner="user-7", model="gpt-4o", system="You are a helpful assistant."
        )
        conv.append({"role": "user", "content": "What's the weather in Paris right now?"})
        conv.append({"role": "assistant", "content": None, "tool_calls": [WEATHER_CALL]})
        conv.extend(
            [
                {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 18}'},
                {"role": "assistant", "content": "It's 18°C and clear in Paris."},
                {"role": "user", "content": "Thanks! Anything else I should know? 🌤️"},
            ]
        )

        print(f"conversation {conv.id!r}, owner {conv.owner!r}, {conv.model} ({conv.encoding})")
        print(f"{'seq':>4} {'round':>5} {'role':<10} {'tokens':>6} {'cum':>6}  content")
        for r in conv.records():
            content = r.message.get("content")
            shown = str(content) if content is not None else f"tool_calls={r.message['tool_calls']}"
            print(
                f"{r.seq:>4} {r.round_seq:>5} {r.role:<10} {r.tokens:>6} "
                f"{r.cumulative_tokens:>6}  {shown[:60]}"
            )
        history = conv.messages()
        stored_total = conv.count_tokens()
        recounted = cl.count_tokens(history, model="gpt-4o")
        print(f"prompt tokens of the whole history, from stored counts: {stored_total}")
        print(f"count_tokens(messages, model='gpt-4o') on the same array: {recounted}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
