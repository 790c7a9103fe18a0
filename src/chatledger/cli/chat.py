"""``chatledger chat``: a persistent terminal chat over any OpenAI-compatible server."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, TextIO

from chatledger.cli.common import open_ledger
from chatledger.cli.output import note, say, usd
from chatledger.errors import ChatLedgerError
from chatledger.strategies import LastRounds, Summarize, TokenBudget
from chatledger.window import Strategy

__all__ = ["cmd_chat", "window_strategy"]


def window_strategy(args: argparse.Namespace, client: Any = None) -> list[Strategy]:
    """The chain --budget, --reserve, --rounds (and, with a client, --summarize) describe."""
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

    from chatledger.cli.parser import chat_model_default

    stdin = stdin or sys.stdin
    if not os.environ.get("OPENAI_API_KEY") and not os.environ.get("OPENAI_BASE_URL"):
        note("chatledger: set OPENAI_API_KEY (and OPENAI_BASE_URL for another server)")
        return 2
    client = openai.OpenAI(api_key=os.environ.get("OPENAI_API_KEY") or "none")
    with open_ledger(args) as ledger:
        conv = ledger.conversation(
            args.id, owner=args.owner, model=args.model or chat_model_default(), system=args.system
        )
        if args.model and conv.model != args.model:
            before = conv.model
            conv.update(model=args.model)
            say(f"model of {conv.id} changed from {before} to {conv.model} (stored)")
        args.model = conv.model
        strategy = window_strategy(args, client)
        say(
            f"conversation {conv.id} ({conv.info.message_count} messages stored, model "
            f"{conv.model}); /window, /stats, /quit"
        )
        interactive = stdin.isatty()
        while True:
            if interactive:  # no prompts in a transcript of piped input
                sys.stdout.write("> ")
                sys.stdout.flush()
            line = stdin.readline()
            if not line or line.strip() in ("/quit", "/exit"):
                break
            text = line.strip()
            if not text:
                continue
            if text == "/window":
                say(str(conv.window(strategy, explain=True)))
                continue
            if text == "/stats":
                t = conv.usage()
                say(f"{t.requests} requests, {t.total_tokens} tokens, {usd(t.cost_micros)}")
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
            except (ChatLedgerError, openai.APIError) as exc:  # the chat goes on
                note(f"chatledger: {str(exc).strip().splitlines()[0] if str(exc) else exc}")
    return 0
