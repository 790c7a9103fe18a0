"""Prompt caching: long conversations replayed through each window under a simulated cache.

    .venv/bin/python benchmarks/bench_cache.py [--turns 300] [--budget 8000] [--chart FILE]

Each conversation has ``--turns`` rounds (a user message, a reply; about every 10th round a
tool call and its result) and is replayed turn by turn: the window is built by ``request()``
(so ``StablePrefix`` remembers its start), sent to the simulated cache, and the reply stored.

The cache is OpenAI's rule, simulated exactly on the messages: a request is served from cache
for the longest run of leading messages it shares with one of the last 8 requests of the same
conversation (the same ``prompt_cache_key``), counted in the model's real tokens, if at least
1,024 tokens, rounded down to a multiple of 128. (A partly shared message is not counted: the
simulation errs low for every window alike.) Peers: LangChain's ``trim_messages`` (strategy
"last", the same token budget, counted by chatledger) and the OpenAI Agents SDK's session
trimmed to the same budget by dropping its oldest items, as its docs suggest.
"""

from __future__ import annotations

import argparse
import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import chatledger as cl
from chatledger.pricing import PriceTable

WORDS = [
    "the",
    "account",
    "order",
    "shipping",
    "window",
    "budget",
    "token",
    "cache",
    "prefix",
    "model",
    "reply",
    "question",
    "refund",
    "invoice",
    "customer",
    "status",
    "delivery",
    "address",
    "policy",
    "product",
    "warranty",
    "return",
]
MODELS = ("gpt-4o", "gpt-4.1", "gpt-5")
RECENT = 8


def text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def conversation(turns: int, seed: int) -> list[list[dict[str, Any]]]:
    """The rounds to replay: each a list of messages ending with the assistant's reply."""
    rng = random.Random(seed)
    out = []
    for i in range(turns):
        user = {"role": "user", "content": f"[{i}] " + text(rng, rng.randint(30, 120))}
        reply = {"role": "assistant", "content": text(rng, rng.randint(80, 260))}
        if i % 10 == 9:
            call = {
                "id": f"call_{i}",
                "type": "function",
                "function": {"name": "lookup", "arguments": f'{{"q": "{text(rng, 4)}"}}'},
            }
            result = {"role": "tool", "tool_call_id": f"call_{i}", "content": text(rng, 400)}
            out.append(
                [user, {"role": "assistant", "content": "", "tool_calls": [call]}, result, reply]
            )
        else:
            out.append([user, reply])
    return out


class SimulatedCache:
    """OpenAI's prompt-cache rule over whole messages (see the module doc)."""

    def __init__(self, model: str) -> None:
        self.counter = cl.TokenCounter(model)
        self.recent: list[tuple[list[dict[str, Any]], list[int]]] = []

    def send(self, messages: list[dict[str, Any]]) -> tuple[int, int]:
        """(prompt tokens, cached tokens) of one request."""
        counts = self.counter.messages(messages)
        prompt = sum(counts) + self.counter.priming
        best = 0
        for old, old_counts in self.recent:
            shared = 0
            for a, b, n in zip(old, messages, old_counts, strict=False):
                if a != b:
                    break
                shared += n
            best = max(best, shared)
        self.recent = [*self.recent[-(RECENT - 1) :], (messages, counts)]
        cached = (best // 128) * 128 if best >= 1024 else 0
        return prompt, min(cached, prompt)


@dataclass
class Result:
    name: str
    prompt: list[int] = field(default_factory=list)
    cached: list[int] = field(default_factory=list)
    summaries: int = 0

    @property
    def cached_share(self) -> float:
        return sum(self.cached) / sum(self.prompt)

    def cost(self, table: PriceTable, model: str) -> Decimal:
        price = table.price(model)
        assert price is not None
        cached_rate = price.cached_input if price.cached_input is not None else price.input
        fresh = sum(self.prompt) - sum(self.cached)
        return (fresh * price.input + sum(self.cached) * cached_rate) / 1_000_000


def summarizer(counter: list[int]) -> Callable[[str | None, list[dict[str, Any]]], str]:
    def summarize(previous: str | None, messages: list[dict[str, Any]]) -> str:
        counter[0] += 1
        return f"Summary {counter[0]}: " + " ".join(WORDS[: 20 + counter[0] % 5]) * 6

    return summarize


def replay_chatledger(name: str, make: Callable[[list[int]], Any], rounds: Any) -> Result:
    calls = [0]
    strategy = make(calls)
    result = Result(name)
    cache = SimulatedCache("gpt-4o")
    with cl.Ledger("sqlite://") as ledger:
        conv = ledger.conversation("bench", model="gpt-4o", system="You are a support agent.")
        for r in rounds:
            *asked, reply = r
            conv.extend(asked)
            kwargs = conv.request(strategy)
            prompt, cached = cache.send(kwargs["messages"])
            result.prompt.append(prompt)
            result.cached.append(cached)
            conv.append(reply)
    result.summaries = calls[0]
    return result


def replay_langchain(budget: int, rounds: Any) -> Result | None:
    try:
        from langchain_core.messages import convert_to_messages, convert_to_openai_messages
        from langchain_core.messages.utils import trim_messages
    except ImportError:
        return None
    result = Result("LangChain trim_messages")
    cache = SimulatedCache("gpt-4o")
    history: list[dict[str, Any]] = [{"role": "system", "content": "You are a support agent."}]

    def tokens(msgs: list[Any]) -> int:
        return cl.count_tokens(convert_to_openai_messages(msgs), "gpt-4o")

    for r in rounds:
        *asked, reply = r
        history += asked
        trimmed = trim_messages(
            convert_to_messages(history),
            max_tokens=budget,
            token_counter=tokens,
            strategy="last",
            include_system=True,
            start_on="human",
        )
        prompt, cached = cache.send(convert_to_openai_messages(trimmed))
        result.prompt.append(prompt)
        result.cached.append(cached)
        history.append(reply)
    return result


def replay_agents_trimmed(budget: int, rounds: Any) -> Result:
    """The Agents SDK's session pattern: items in order, the oldest dropped (whole turns, from
    a user message) until the input fits, as its session-trimming examples do."""
    result = Result("Agents SDK session, trimmed")
    cache = SimulatedCache("gpt-4o")
    system = {"role": "system", "content": "You are a support agent."}
    items: list[dict[str, Any]] = []
    for r in rounds:
        *asked, reply = r
        items += asked
        while cl.count_tokens([system, *items], "gpt-4o") > budget:
            items = items[1:]
            while items and items[0]["role"] != "user":
                items = items[1:]
        prompt, cached = cache.send([system, *items])
        result.prompt.append(prompt)
        result.cached.append(cached)
        items.append(reply)
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--turns", type=int, default=300)
    ap.add_argument("--budget", type=int, default=8000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--chart", default=None, help="write a PNG chart here (needs matplotlib)")
    args = ap.parse_args()
    budget = args.budget
    rounds = conversation(args.turns, args.seed)

    def summ(calls: list[int]) -> cl.Summarize:
        return cl.Summarize(summarizer(calls), trigger=budget * 3 // 4, keep=budget // 2)

    windows: list[tuple[str, Callable[[list[int]], Any]]] = [
        ("TokenBudget", lambda c: cl.TokenBudget(budget)),
        ("StablePrefix(TokenBudget)", lambda c: cl.StablePrefix(cl.TokenBudget(budget))),
        ("Summarize + TokenBudget", lambda c: [summ(c), cl.TokenBudget(budget)]),
        (
            "StablePrefix(Summarize + TokenBudget)",
            lambda c: cl.StablePrefix([summ(c), cl.TokenBudget(budget)]),
        ),
        (
            "ClearToolResults + StablePrefix(TokenBudget)",
            lambda c: [cl.ClearToolResults(keep=2), cl.StablePrefix(cl.TokenBudget(budget))],
        ),
    ]
    results = [replay_chatledger(name, make, rounds) for name, make in windows]
    lc = replay_langchain(budget, rounds)
    results += [r for r in (lc, replay_agents_trimmed(budget, rounds)) if r is not None]

    table = PriceTable.default()
    base = results[0]
    print(f"{args.turns} turns, budget {budget} tokens, seed {args.seed}\n")
    header = "| window | cached share | " + " | ".join(
        f"input cost {m} (vs TokenBudget)" for m in MODELS
    )
    print(header + " | avg prompt tokens (vs TokenBudget) | summarizer calls |")
    print("| --- | ---: |" + " ---: |" * len(MODELS) + " ---: | ---: |")
    for r in results:
        costs = " | ".join(
            f"${r.cost(table, m):.4f} ({r.cost(table, m) / base.cost(table, m):.2f}x)"
            for m in MODELS
        )
        avg = statistics.fmean(r.prompt)
        print(
            f"| {r.name} | {100 * r.cached_share:.1f}% | {costs} | "
            f"{avg:.0f} ({avg / statistics.fmean(base.prompt):.2f}x) | {r.summaries} |"
        )
    if args.chart:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 4))
        names = [r.name for r in results]
        ax.barh(names, [100 * r.cached_share for r in results])
        ax.set_xlabel(f"cached share of input tokens (%), {args.turns} turns, budget {budget}")
        ax.invert_yaxis()
        fig.tight_layout()
        fig.savefig(args.chart, dpi=100)


if __name__ == "__main__":
    main()
