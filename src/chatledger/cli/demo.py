"""``chatledger demo``: offline, on the command's database, a long trip-planning conversation
with tool calls, windowed turn by turn. The budget drops old rounds until the summary
catches up and folds them, so both show; the closing account is the window of the last turn."""

from __future__ import annotations

import argparse
import contextlib
import json
from typing import Any

from chatledger.cli.common import db_url, open_ledger
from chatledger.cli.output import Column, emit_json_line, say, table, usd
from chatledger.errors import ConversationNotFoundError
from chatledger.strategies import Summarize, TokenBudget
from chatledger.window import Span, Strategy, Window

__all__ = ["cmd_demo", "first_sentences"]

_CITIES = ["Lisbon", "Oslo", "Kyoto", "Lima", "Nairobi", "Quebec", "Tbilisi", "Hobart"]

LEGEND = """\
columns: turn; stored = messages stored after the turn; sent = messages in the window sent;
prompt = its prompt tokens; summarized / dropped / kept = the seqs folded into the summary,
left out for the budget, and sent as they are; tools = the tool calls of the turn; cost =
the request's cost at list prices."""


def first_sentences(previous: str | None, messages: list[dict[str, Any]]) -> str:
    """An offline summarizer for the demo: the first sentence of each user request."""
    notes = [
        str(m["content"]).split(".")[0].strip()
        for m in messages
        if m.get("role") == "user" and isinstance(m.get("content"), str)
    ]
    merged = ([previous] if previous else []) + notes
    return "; ".join(merged)[-1500:]


def demo_turn(i: int) -> tuple[str, list[dict[str, Any]]]:
    """Turn ``i``: the user's request and the replies (a weather call every third turn)."""
    city = _CITIES[i % len(_CITIES)]
    user = (
        f"Plan day {i + 1} of my trip in {city}. I like museums, long walks and local food; "
        f"budget is moderate and I wake up early. " * 2
    ).strip()
    replies: list[dict[str, Any]] = []
    if i % 3 == 0:
        cid = f"call_{i}"
        arguments = json.dumps({"city": city})
        call = {
            "id": cid,
            "type": "function",
            "function": {"name": "weather", "arguments": arguments},
        }
        result = json.dumps({"city": city, "temp_c": 12 + i % 9, "rain": i % 2 == 0})
        replies.append({"role": "assistant", "content": None, "tool_calls": [call]})
        replies.append({"role": "tool", "tool_call_id": cid, "content": result})
    text = (
        f"Day {i + 1} in {city}: start at 8:00 with a walk along the old town, visit the "
        f"main museum at 10:00, lunch at a market stall, an afternoon gallery, and dinner "
        f"at a family-run place near the centre. "
    ) * 3
    replies.append({"role": "assistant", "content": text})
    return user, replies


def _span(s: Span) -> str:
    return "-" if not s.count else f"{s.first}-{s.last}"


def _calls(reply: dict[str, Any]) -> list[str]:
    return [
        f"{c['function']['name']}({c['function']['arguments']})"
        for c in reply.get("tool_calls") or []
    ]


def _tools(replies: list[dict[str, Any]]) -> str:
    return ", ".join(c for r in replies for c in _calls(r)) or "-"


def _strategy(args: argparse.Namespace) -> list[Strategy]:
    # the summary triggers late, so the budget has to drop rounds first
    return [
        Summarize(first_sentences, trigger=args.budget * 2, keep=args.budget // 3),
        TokenBudget(args.budget, reserve=args.reserve),
    ]


def cmd_demo(args: argparse.Namespace) -> int:
    url = db_url(args)
    owner = args.owner
    rows: list[tuple[object, ...]] = []
    last: Window | None = None
    with open_ledger(args) as ledger:
        with contextlib.suppress(ConversationNotFoundError):
            ledger.delete(args.id, owner=owner)
        conv = ledger.conversation(
            args.id,
            owner=owner,
            model=args.model,
            title="demo: a trip planned day by day",
            system="You are a concise travel planner. Use the weather tool when it matters.",
        )
        strategy = _strategy(args)
        if not args.json:
            say(
                f"chatledger demo: {args.turns} turns, model {args.model}, budget {args.budget} "
                f"tokens ({args.reserve} reserved for the reply), offline, written to {url}\n"
            )
        for i in range(args.turns):
            user, replies = demo_turn(i)
            conv.append({"role": "user", "content": user})
            for reply in replies[:-1]:  # the tool call and its result, then the final answer
                conv.append(reply)
            last = w = conv.window(strategy, explain=True)
            final = replies[-1]
            completion = {
                "id": f"demo-{i}",
                "model": args.model,
                "choices": [{"index": 0, "message": final, "finish_reason": "stop"}],
                "usage": {
                    "prompt_tokens": w.prompt_tokens,
                    "completion_tokens": conv.counter.text(final["content"]),
                },
            }
            cost = conv.record(completion).usage.cost_micros
            row = (
                i + 1,
                conv.info.last_seq,
                len(w.messages),
                w.prompt_tokens,
                _span(w.summarized),
                _span(w.dropped),
                _span(w.kept),
                _tools(replies),
                usd(cost),
            )
            if args.json:
                keys = ("turn", "stored", "sent", "prompt_tokens", "summarized", "dropped", "kept")
                record = {k: None if v == "-" else v for k, v in zip(keys, row, strict=False)}
                emit_json_line(
                    {
                        **record,
                        "tools": [c for r in replies for c in _calls(r)],
                        "cost_micros": cost,
                    }
                )
            rows.append(row)
        totals = conv.usage()
    if args.json:
        emit_json_line(
            {
                "db": url,
                "id": args.id,
                "owner": owner,
                "requests": totals.requests,
                "prompt_tokens": totals.prompt_tokens,
                "completion_tokens": totals.completion_tokens,
                "cost_micros": totals.cost_micros,
            }
        )
        return 0
    names = ["turn", "stored", "sent", "prompt", "summarized", "dropped", "kept", "tools", "cost"]
    right = {"turn", "stored", "sent", "prompt", "cost"}
    table([Column(n, right=n in right) for n in names], rows)
    say(LEGEND)
    say(
        f"\n{totals.requests} requests, {totals.prompt_tokens} prompt + "
        f"{totals.completion_tokens} completion tokens, {usd(totals.cost_micros)} in all."
    )
    if last is not None:
        say("\nThe window sent on the last turn, explained:")
        say(str(last))
    where = f" --db {url}" if url != db_url(argparse.Namespace()) else ""
    who = f" --owner {owner}" if owner else ""
    say(f"\nStored as {args.id!r} in {url}: see it with 'chatledger{where} show {args.id}{who}'.")
    return 0
