"""The ``chatledger`` command: a demo, a terminal chat, and tools to inspect a ledger.

``chatledger demo`` runs offline on SQLite: a long conversation with tool calls, windowed turn
by turn, showing what is kept, dropped and summarised, with tokens and cost. The other
commands work on any database (``--db`` or ``CHATLEDGER_URL``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TextIO

from chatledger.errors import ChatLedgerError, ConversationNotFoundError
from chatledger.ledger import Ledger
from chatledger.messages import validate_messages
from chatledger.strategies import LastRounds, Summarize, TokenBudget
from chatledger.window import Strategy

__all__ = ["main"]

DEFAULT_DB = "sqlite:///chatledger.db"


def _db(args: argparse.Namespace) -> str:
    return str(args.db or os.environ.get("CHATLEDGER_URL") or DEFAULT_DB)


def _usd(micros: int | None) -> str:
    return "n/a" if micros is None else f"${Decimal(micros) / 1_000_000:.6f}"


# --- demo -------------------------------------------------------------------------------------

_CITIES = ["Lisbon", "Oslo", "Kyoto", "Lima", "Nairobi", "Quebec", "Tbilisi", "Hobart"]


def first_sentences(previous: str | None, messages: list[dict[str, Any]]) -> str:
    """An offline summarizer for the demo: the first sentence of each user request."""
    notes = [
        str(m["content"]).split(".")[0].strip()
        for m in messages
        if m.get("role") == "user" and isinstance(m.get("content"), str)
    ]
    merged = ([previous] if previous else []) + notes
    return "; ".join(merged)[-1500:]


def _demo_turn(i: int) -> tuple[str, list[dict[str, Any]]]:
    city = _CITIES[i % len(_CITIES)]
    user = (
        f"Plan day {i + 1} of my trip in {city}. I like museums, long walks and local food; "
        f"budget is moderate and I wake up early. " * 2
    ).strip()
    replies: list[dict[str, Any]] = []
    if i % 3 == 0:
        cid = f"call_{i}"
        replies.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": cid,
                        "type": "function",
                        "function": {"name": "weather", "arguments": json.dumps({"city": city})},
                    }
                ],
            }
        )
        replies.append(
            {
                "role": "tool",
                "tool_call_id": cid,
                "content": json.dumps({"city": city, "temp_c": 12 + i % 9, "rain": i % 2 == 0}),
            }
        )
    replies.append(
        {
            "role": "assistant",
            "content": (
                f"Day {i + 1} in {city}: start at 8:00 with a walk along the old town, visit the "
                f"main museum at 10:00, lunch at a market stall, an afternoon gallery, and dinner "
                f"at a family-run place near the centre. "
            )
            * 3,
        }
    )
    return user, replies


def cmd_demo(args: argparse.Namespace) -> int:
    url = args.db or "sqlite://"
    out = sys.stdout
    with Ledger(url) as ledger:
        with contextlib.suppress(ConversationNotFoundError):
            ledger.delete("demo-trip")
        conv = ledger.conversation(
            "demo-trip",
            owner="demo-user",
            model=args.model,
            system="You are a concise travel planner. Use the weather tool when it matters.",
        )
        strategy: list[Strategy] = [
            Summarize(first_sentences, trigger=args.budget // 2, keep=args.budget // 4),
            TokenBudget(args.budget, reserve=args.reserve),
        ]
        out.write(
            f"chatledger demo: {args.turns} turns, model {args.model}, budget {args.budget} "
            f"tokens ({args.reserve} reserved for the reply), offline on {url}\n\n"
        )
        out.write(
            f"{'turn':>4} {'stored':>6} {'sent':>5} {'prompt':>6}  {'summarised':<12} "
            f"{'dropped':<12} {'kept':<12} {'cost':>11}\n"
        )
        total = 0
        for i in range(args.turns):
            user, replies = _demo_turn(i)
            conv.append({"role": "user", "content": user})
            w = conv.window(strategy, explain=True)
            final = replies[-1]
            for reply in replies[:-1]:
                conv.append(reply)
            completion = {
                "id": f"demo-{i}",
                "model": args.model,
                "choices": [{"index": 0, "message": final, "finish_reason": "stop"}],
                "usage": {
                    "prompt_tokens": w.prompt_tokens,
                    "completion_tokens": conv.counter.text(final["content"]),
                },
            }
            rec = conv.record(completion)
            cost = rec.usage.cost_micros
            total += cost or 0

            def span(s: Any) -> str:
                return "-" if not s.count else f"{s.first}-{s.last}"

            out.write(
                f"{i + 1:>4} {conv.info.last_seq:>6} {len(w.messages):>5} {w.prompt_tokens:>6}  "
                f"{span(w.summarized):<12} {span(w.dropped):<12} {span(w.kept):<12} "
                f"{_usd(cost):>11}\n"
            )
        totals = conv.usage()
        out.write(
            f"\n{totals.requests} requests, {totals.prompt_tokens} prompt + "
            f"{totals.completion_tokens} completion tokens, {_usd(totals.cost_micros)} in all.\n"
        )
        out.write("\nThe last window, explained:\n")
        out.write(str(conv.window(strategy, explain=True)) + "\n")
    return 0


# --- chat -------------------------------------------------------------------------------------


def _strategy(args: argparse.Namespace, client: Any = None) -> list[Strategy]:
    chain: list[Strategy] = []
    if getattr(args, "summarize", False) and client is not None:
        from chatledger.summarizers import OpenAISummarizer

        chain.append(
            Summarize(
                OpenAISummarizer(client, args.summary_model or args.model),
                trigger=args.budget // 2,
                keep=args.budget // 4,
            )
        )
    if getattr(args, "rounds", None):
        chain.append(LastRounds(args.rounds))
    chain.append(TokenBudget(args.budget, reserve=args.reserve))
    return chain


def cmd_chat(args: argparse.Namespace, stdin: TextIO | None = None) -> int:
    import openai

    stdin = stdin or sys.stdin
    if not os.environ.get("OPENAI_API_KEY") and not os.environ.get("OPENAI_BASE_URL"):
        sys.stderr.write("set OPENAI_API_KEY (and OPENAI_BASE_URL for another server)\n")
        return 2
    client = openai.OpenAI(api_key=os.environ.get("OPENAI_API_KEY") or "none")
    with Ledger(_db(args)) as ledger:
        conv = ledger.conversation(args.id, owner=args.owner, model=args.model, system=args.system)
        strategy = _strategy(args, client)
        sys.stdout.write(
            f"conversation {conv.id} ({conv.info.message_count} messages stored); "
            "/window, /stats, /quit\n"
        )
        while True:
            sys.stdout.write("> ")
            sys.stdout.flush()
            line = stdin.readline()
            if not line or line.strip() in ("/quit", "/exit"):
                break
            text = line.strip()
            if not text:
                continue
            if text == "/window":
                sys.stdout.write(str(conv.window(strategy, explain=True)) + "\n")
                continue
            if text == "/stats":
                t = conv.usage()
                sys.stdout.write(
                    f"{t.requests} requests, {t.total_tokens} tokens, {_usd(t.cost_micros)}\n"
                )
                continue
            try:
                with conv.chat(
                    client,
                    text,
                    strategy=strategy,
                    stream=True,
                    stream_options={"include_usage": True},
                    max_tokens=args.reserve,
                ) as s:
                    for chunk in s:
                        if chunk.choices and chunk.choices[0].delta.content:
                            sys.stdout.write(chunk.choices[0].delta.content)
                            sys.stdout.flush()
                sys.stdout.write("\n")
            except (ChatLedgerError, openai.APIError) as exc:
                sys.stderr.write(f"error: {exc}\n")
    return 0


# --- inspection -------------------------------------------------------------------------------


def cmd_ls(args: argparse.Namespace) -> int:
    with Ledger(_db(args)) as ledger:
        rows = ledger.conversations(owner=args.owner, limit=args.limit)
        if args.json:
            for c in rows:
                sys.stdout.write(
                    json.dumps(
                        {
                            "id": c.id,
                            "owner": c.owner,
                            "model": c.model,
                            "messages": c.message_count,
                            "tokens": c.token_total,
                            "updated_at": c.updated_at.isoformat(),
                        }
                    )
                    + "\n"
                )
            return 0
        _table(
            [
                ("id", -34),
                ("owner", -16),
                ("model", -14),
                ("msgs", 6),
                ("tokens", 8),
                ("updated", -16),
            ],
            [
                (
                    c.id,
                    c.owner or "-",
                    c.model,
                    c.message_count,
                    c.token_total,
                    f"{c.updated_at:%Y-%m-%d %H:%M}",
                )
                for c in rows
            ],
        )
    return 0


def _table(columns: list[tuple[str, int]], rows: list[tuple[object, ...]]) -> None:
    """Plain aligned columns: a negative width aligns left."""

    def line(cells: tuple[object, ...]) -> str:
        return " ".join(
            f"{cell!s:<{-w}}" if w < 0 else f"{cell!s:>{w}}"
            for cell, (_, w) in zip(cells, columns, strict=True)
        ).rstrip()

    sys.stdout.write(line(tuple(name for name, _ in columns)) + "\n")
    for r in rows:
        sys.stdout.write(line(r) + "\n")


def cmd_show(args: argparse.Namespace) -> int:
    with Ledger(_db(args)) as ledger:
        conv = ledger.get(args.id, owner=args.owner)
        if args.json:
            sys.stdout.write(json.dumps({"messages": conv.messages()}, ensure_ascii=False) + "\n")
            return 0
        if conv.parent is not None:
            sys.stdout.write(f"forked from {conv.parent} at seq {conv.forked_at}\n")
        for r in conv.records():
            status = f" [{r.status}]" if r.status else ""
            content = r.message.get("content")
            if content is None and "tool_calls" in r.message:
                content = ", ".join(
                    f"{tc['function']['name']}({tc['function']['arguments']})"
                    for tc in r.message["tool_calls"]
                    if "function" in tc
                )
            text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
            sys.stdout.write(f"{r.seq:>5} {r.role:<9} {r.tokens:>5}t{status}  {text}\n")
    return 0


def cmd_window(args: argparse.Namespace) -> int:
    with Ledger(_db(args)) as ledger:
        conv = ledger.get(args.id, owner=args.owner)
        w = conv.window(_strategy(args), explain=True)
        sys.stdout.write(str(w) + "\n")
        if args.json:
            sys.stdout.write(json.dumps(w.messages, ensure_ascii=False) + "\n")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    since = None
    if args.days:
        since = datetime.now(UTC) - timedelta(days=args.days)
    with Ledger(_db(args)) as ledger:
        if args.id:
            t = ledger.get(args.id, owner=args.owner).usage(since=since)
        else:
            t = ledger.usage(owner=args.owner, since=since)
        convs = ledger.conversations(owner=args.owner, limit=10_000)
        drift = ledger.token_drift(since=since)
    sys.stdout.write(
        f"conversations  {len(convs)}\n"
        f"messages       {sum(c.message_count for c in convs)}\n"
        f"requests       {t.requests}\n"
        f"prompt tokens  {t.prompt_tokens} (cached {t.cached_tokens})\n"
        f"completion     {t.completion_tokens} (reasoning {t.reasoning_tokens})\n"
        f"cost           {_usd(t.cost_micros)}"
        + (f" (+{t.unpriced} requests of unpriced models)" if t.unpriced else "")
        + "\n"
    )
    if drift:
        sys.stdout.write("\ntoken counts against billed prompt tokens (error = counted - billed)\n")
        _table(
            [
                ("model", -24),
                ("feature", -16),
                ("requests", 8),
                ("exact", 7),
                ("mean", 7),
                ("worst under", 11),
            ],
            [
                (
                    d.model,
                    d.feature,
                    d.requests,
                    f"{d.exact_share:.0%}",
                    f"{d.mean_error:+.1f}",
                    d.worst_under,
                )
                for d in drift
            ],
        )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    target = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
    try:
        with Ledger(_db(args)) as ledger:
            found = ledger.conversations(owner=args.owner, limit=10_000)
            ids = [(cid, args.owner) for cid in args.ids] or [(c.id, c.owner) for c in found]
            for n, (cid, owner) in enumerate(ids, 1):
                conv = ledger.get(cid, owner=owner)
                target.write(json.dumps({"messages": conv.messages()}, ensure_ascii=False) + "\n")
                if args.output and n % 100 == 0:
                    sys.stderr.write(f"exported {n}/{len(ids)}\n")
    finally:
        if args.output:
            target.close()
    if args.output:
        sys.stderr.write(f"exported {len(ids)} conversations to {args.output}\n")
    return 0


def _lines(path: str) -> Iterator[tuple[int, str]]:
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                yield n, line


def cmd_import(args: argparse.Namespace) -> int:
    total = sum(1 for _ in _lines(args.file))
    imported = skipped = 0
    with Ledger(_db(args)) as ledger:
        for n, line in _lines(args.file):
            try:
                data = json.loads(line)
                if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
                    raise ValueError('expected an object with a "messages" list')
                messages = validate_messages(data["messages"], allow_pending_tool_calls=True)
                conv = ledger.create(
                    data.get("id") if isinstance(data.get("id"), str) else None,
                    owner=args.owner,
                    model=args.model,
                )
                conv.extend(messages)
                imported += 1
            except (ValueError, ChatLedgerError) as exc:
                if not args.skip_invalid:
                    sys.stderr.write(f"{args.file}:{n}: {exc}\n")
                    sys.stderr.write(f"imported {imported} before the error; nothing of line {n}\n")
                    return 1
                skipped += 1
                sys.stderr.write(f"{args.file}:{n}: skipped: {exc}\n")
            if n % 100 == 0 or n == total:
                sys.stderr.write(f"\rimported {imported}/{total}")
    sys.stderr.write(f"\nimported {imported} conversations, skipped {skipped}\n")
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    with Ledger(_db(args)) as ledger:
        if args.all_of_owner:
            if not args.yes:
                sys.stderr.write("this deletes every conversation of the owner: add --yes\n")
                return 2
            n = ledger.delete_owner(args.all_of_owner)
            sys.stdout.write(f"deleted {n} conversations of {args.all_of_owner!r}\n")
            return 0
        for cid in args.ids:
            ledger.delete(cid, owner=args.owner)
            sys.stdout.write(f"deleted {cid}\n")
    return 0


def cmd_pop(args: argparse.Namespace) -> int:
    with Ledger(_db(args)) as ledger:
        conv = ledger.get(args.id, owner=args.owner)
        removed = conv.rewind(args.rounds) if args.rounds else [conv.pop()]
        gone = [r for r in removed if r is not None]
        if not gone:
            sys.stdout.write(f"{args.id} has no messages: nothing removed\n")
        for r in gone:
            sys.stdout.write(f"removed seq {r.seq} ({r.role})\n")
    return 0


def cmd_fork(args: argparse.Namespace) -> int:
    with Ledger(_db(args)) as ledger:
        child = ledger.get(args.id, owner=args.owner).fork(args.new_id, at_seq=args.at)
        sys.stdout.write(
            f"forked {args.id} at seq {child.forked_at} into {child.id} "
            f"({child.info.message_count} messages)\n"
        )
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    from chatledger import migrate

    url = _db(args)
    if args.action == "upgrade":
        before = migrate.current(url)
        now = migrate.upgrade(url, args.revision)
        sys.stdout.write(f"chatledger schema: {before or 'none'} -> {now}\n")
    else:
        sys.stdout.write(
            f"chatledger schema: {migrate.current(url) or 'none'} "
            f"(this version: {', '.join(migrate.heads())})\n"
        )
    return 0


# --- parser -----------------------------------------------------------------------------------


def _window_options(p: argparse.ArgumentParser, budget: int) -> None:
    p.add_argument("--budget", type=int, default=budget, help="prompt-token budget")
    p.add_argument("--reserve", type=int, default=512, help="tokens kept for the reply")
    p.add_argument("--rounds", type=int, default=None, help="keep at most this many rounds")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chatledger", description=__doc__)
    parser.add_argument("--db", help=f"SQLAlchemy URL (default $CHATLEDGER_URL or {DEFAULT_DB})")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="offline: a long conversation windowed turn by turn")
    p.add_argument("--turns", type=int, default=16)
    p.add_argument("--model", default="gpt-4o")
    p.add_argument("--budget", type=int, default=1500)
    p.add_argument("--reserve", type=int, default=200)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("chat", help="a persistent terminal chat (OPENAI_BASE_URL/OPENAI_API_KEY)")
    p.add_argument("--id", default="terminal")
    p.add_argument("--owner", default=None)
    p.add_argument("--model", default=os.environ.get("CHATLEDGER_MODEL", "gpt-4o-mini"))
    p.add_argument("--system", default="You are a helpful assistant.")
    p.add_argument("--summarize", action="store_true", help="fold old rounds into a summary")
    p.add_argument("--summary-model", default=None)
    _window_options(p, 8000)
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("ls", help="list conversations")
    p.add_argument("--owner")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("show", help="print a conversation")
    p.add_argument("id")
    p.add_argument("--owner")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("window", help="explain the window a conversation would send")
    p.add_argument("id")
    p.add_argument("--owner")
    p.add_argument("--json", action="store_true", help="also print the messages")
    _window_options(p, 8000)
    p.set_defaults(func=cmd_window)

    p = sub.add_parser("stats", help="usage and cost")
    p.add_argument("--owner")
    p.add_argument("--id")
    p.add_argument("--days", type=int, default=None, help="only the last N days")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("export", help='JSONL, one {"messages": [...]} per conversation')
    p.add_argument("ids", nargs="*")
    p.add_argument("--owner")
    p.add_argument("-o", "--output")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("import", help='load JSONL of {"messages": [...]} (fine-tuning format)')
    p.add_argument("file")
    p.add_argument("--owner")
    p.add_argument("--model", default=None)
    p.add_argument("--skip-invalid", action="store_true")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("db", help="schema migrations: upgrade, current")
    p.add_argument("action", choices=["upgrade", "current"])
    p.add_argument("revision", nargs="?", default="head")
    p.set_defaults(func=cmd_db)

    p = sub.add_parser("rm", help="delete conversations")
    p.add_argument("ids", nargs="*")
    p.add_argument("--owner")
    p.add_argument("--all-of-owner", metavar="OWNER")
    p.add_argument("--yes", action="store_true")
    p.set_defaults(func=cmd_rm)

    p = sub.add_parser("pop", help="remove the newest message (or, with --rounds, rounds)")
    p.add_argument("id")
    p.add_argument("--owner")
    p.add_argument("--rounds", type=int, default=0, help="remove the newest N rounds instead")
    p.set_defaults(func=cmd_pop)

    p = sub.add_parser("fork", help="copy a conversation (up to --at) into a new one")
    p.add_argument("id")
    p.add_argument("new_id", nargs="?", default=None, help="default: a new random id")
    p.add_argument("--owner")
    p.add_argument("--at", type=int, default=None, help="last seq to copy (default: all)")
    p.set_defaults(func=cmd_fork)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ChatLedgerError as exc:
        sys.stderr.write(f"chatledger: {exc}\n")
        return 1
    except BrokenPipeError:  # `chatledger show ... | head`
        return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
