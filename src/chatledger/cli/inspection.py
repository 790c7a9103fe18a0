"""Reading a ledger: ``ls``, ``show``, ``window`` and ``stats``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from chatledger.cli.chat import window_strategy
from chatledger.cli.common import open_ledger
from chatledger.cli.output import Column, emit_json, emit_json_line, note, say, table, usd
from chatledger.errors import InvalidArgumentError
from chatledger.ledger import Ledger
from chatledger.rows import ConversationInfo, StoredMessage

__all__ = ["cmd_ls", "cmd_show", "cmd_stats", "cmd_window", "conversation_json"]

_PAGE = 10_000  # the most one listing call returns


def conversation_json(c: ConversationInfo) -> dict[str, Any]:
    return {
        "id": c.id,
        "owner": c.owner,
        "title": c.title,
        "model": c.model,
        "messages": c.message_count,
        "tokens": c.token_total,
        "parent": c.parent,
        "forked_at": c.forked_at,
        "created_at": c.created_at.isoformat(),
        "updated_at": c.updated_at.isoformat(),
    }


def all_conversations(ledger: Ledger, owner: str | None) -> Iterator[ConversationInfo]:
    """Every conversation (of ``owner``), page by page: no cap."""
    offset = 0
    while True:
        page = ledger.conversations(owner=owner, limit=_PAGE, offset=offset)
        yield from page
        if len(page) < _PAGE:
            return
        offset += _PAGE


def cmd_ls(args: argparse.Namespace) -> int:
    with open_ledger(args) as ledger:
        rows = ledger.conversations(owner=args.owner, limit=args.limit, offset=args.offset)
        more = len(rows) == args.limit and bool(
            ledger.conversations(owner=args.owner, limit=1, offset=args.offset + args.limit)
        )
    if args.json:
        for c in rows:
            emit_json_line(conversation_json(c))
    else:
        table(
            [
                Column("id", key=True, style="cyan"),
                Column("owner"),
                Column("title"),
                Column("model"),
                Column("msgs", right=True),
                Column("tokens", right=True),
                Column("updated (UTC)"),
            ],
            [
                (
                    c.id,
                    c.owner or "-",
                    c.title or "-",
                    c.model,
                    c.message_count,
                    c.token_total,
                    f"{c.updated_at:%Y-%m-%d %H:%M}",
                )
                for c in rows
            ],
        )
    if more:
        note(
            f"chatledger: listed {len(rows)} conversations; there are more: "
            f"--offset {args.offset + len(rows)} lists the next, --limit N lists up to N"
        )
    elif not rows:
        note("chatledger: no conversations" + (f" of owner {args.owner!r}" if args.owner else ""))
    return 0


def _tool_calls(message: dict[str, Any]) -> list[dict[str, Any]]:
    calls = message.get("tool_calls") or []
    return [c for c in calls if isinstance(c, dict)]


def _text(r: StoredMessage) -> str:
    message = r.message
    parts: list[str] = []
    content = message.get("content")
    if content is not None:
        parts.append(
            content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
        )
    for call in _tool_calls(message):
        fn = call.get("function") or {}
        parts.append(f"-> {fn.get('name', '?')}({fn.get('arguments', '')}) [{call.get('id', '')}]")
    if r.role == "tool":
        parts.insert(0, f"<- result of {message.get('tool_call_id', '?')}:")
    return " ".join(parts)


def cmd_show(args: argparse.Namespace) -> int:
    with open_ledger(args) as ledger:
        conv = ledger.get(args.id, owner=args.owner)
        records = conv.records()
        info = conv.info
    if args.json:
        emit_json(
            {
                **conversation_json(info),
                "records": [
                    {"seq": r.seq, "tokens": r.tokens, "status": r.status, "message": r.message}
                    for r in records
                ],
                "messages": [r.message for r in records],
            }
        )
        return 0
    if info.parent is not None:
        say(f"forked from {info.parent} at seq {info.forked_at}")
    title = f" {info.title!r}" if info.title else ""
    say(f"{info.id}{title}: {info.message_count} messages, {info.token_total} tokens, {info.model}")
    table(
        [
            Column("seq", right=True),
            Column("role"),
            Column("tokens", right=True),
            Column("message"),
        ],
        [
            (r.seq, r.role + (f" [{r.status}]" if r.status else ""), r.tokens, _text(r))
            for r in records
        ],
    )
    if info.pending_tool_calls:
        say(f"awaiting tool results: {', '.join(info.pending_tool_calls)}")
    return 0


def cmd_window(args: argparse.Namespace) -> int:
    with open_ledger(args) as ledger:
        w = ledger.get(args.id, owner=args.owner).window(window_strategy(args), explain=True)
    if not args.json:
        say(str(w))
        return 0

    def span(s: Any) -> dict[str, Any] | None:
        return {"first": s.first, "last": s.last, "count": s.count} if s.count else None

    emit_json(
        {
            "model": w.model,
            "prompt_tokens": w.prompt_tokens,
            "allowed": w.allowed,
            "prefix": span(w.prefix),
            "summarized": span(w.summarized),
            "dropped": span(w.dropped),
            "kept": span(w.kept),
            "steps": list(w.steps),
            "messages": w.messages,
        }
    )
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    if args.days is not None and args.days < 0:
        raise InvalidArgumentError("--days", "must be 0 or more")
    now = datetime.now(UTC)
    since = None if args.days is None else now - timedelta(days=args.days)
    with open_ledger(args) as ledger:
        if args.id:
            conv = ledger.get(args.id, owner=args.owner)
            t = conv.usage(since=since, until=now)
            convs = [conv.info]
            drift = []  # recorded per model, not per conversation
        else:
            t = ledger.usage(owner=args.owner, since=since, until=now)
            convs = list(all_conversations(ledger, args.owner))
            drift = ledger.token_drift(since=since) if args.days != 0 else []
    period = "all time" if args.days is None else f"the last {args.days} days"
    scope = (
        f"conversation {args.id}" if args.id else (f"owner {args.owner}" if args.owner else "all")
    )
    if args.json:
        emit_json(
            {
                "scope": scope,
                "since": None if since is None else since.isoformat(),
                "conversations": len(convs),
                "messages": sum(c.message_count for c in convs),
                "requests": t.requests,
                "prompt_tokens": t.prompt_tokens,
                "cached_tokens": t.cached_tokens,
                "completion_tokens": t.completion_tokens,
                "reasoning_tokens": t.reasoning_tokens,
                "cost_micros": t.cost_micros,
                "unpriced_requests": t.unpriced,
                "drift": [
                    {
                        "model": d.model,
                        "feature": d.feature,
                        "requests": d.requests,
                        "exact_share": d.exact_share,
                        "mean_error": d.mean_error,
                        "worst_under": d.worst_under,
                    }
                    for d in drift
                ],
            }
        )
        return 0
    say(
        f"scope          {scope}\n"
        f"conversations  {len(convs)} (stored now)\n"
        f"messages       {sum(c.message_count for c in convs)} (stored now)\n"
        f"period         {period}\n"
        f"requests       {t.requests}\n"
        f"prompt tokens  {t.prompt_tokens} (cached {t.cached_tokens})\n"
        f"completion     {t.completion_tokens} (reasoning {t.reasoning_tokens})\n"
        f"cost           {usd(t.cost_micros)}"
        + (f" (+{t.unpriced} requests of unpriced models)" if t.unpriced else "")
    )
    if drift:
        say("\ntoken counts against billed prompt tokens (error = counted - billed)")
        table(
            [
                Column("model"),
                Column("feature"),
                Column("requests", right=True),
                Column("exact", right=True),
                Column("mean", right=True),
                Column("worst under", right=True),
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
