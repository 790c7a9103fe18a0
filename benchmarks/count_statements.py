"""What each operation costs the database: statements, transactions and round trips.

    .venv/bin/python benchmarks/count_statements.py [--url URL] [--sql]

Counted on a real engine with SQLAlchemy's events (``before_cursor_execute`` for statements,
``begin``/``commit``/``rollback`` for transactions, the pool's ``checkout`` for the liveness
ping that ``pool_pre_ping`` sends), each operation on a warm handle unless its name says
otherwise. Round trips, as psycopg 3 makes them on PostgreSQL: the ping, ``BEGIN`` (sent
before the first statement), each statement, and ``COMMIT`` or ``ROLLBACK``. ``--sql`` prints
each statement, and whether Citus could route it to one shard under the layout of
docs/scaling.md (conversation-keyed tables by ``conversation_pk``, billing tables by
``owner``): a statement of a distributed table that names neither fans out to every shard.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event

import chatledger as cl

PG = "postgresql://postgres@127.0.0.1:5432/test"

# the distribution column of each distributed table in docs/scaling.md's Citus layout
ROUTING = {
    "chatledger_conversations": r"\bpk\b",
    "chatledger_messages": r"conversation_pk",
    "chatledger_summaries": r"conversation_pk",
    "chatledger_completions": r"\bowner\b",
    "chatledger_reservations": r"\bowner\b",
    "chatledger_budget_locks": r"\bowner\b",
}
_TABLE = re.compile(r"\b(chatledger_\w+)")


def routing(statement: str) -> str:
    """``one shard``, ``all shards`` (a distributed table, filtered by neither key) or
    ``coordinator`` (reference tables, settings, ``SET``/``BEGIN``). An INSERT is routed by
    the value of the distribution column it carries."""
    tables = [t for t in dict.fromkeys(_TABLE.findall(statement)) if t in ROUTING]
    if not tables:
        return "coordinator"
    if statement.lstrip().upper().startswith("INSERT"):
        return "one shard"
    where = statement.upper().find("WHERE")
    tail = statement[where:] if where >= 0 else ""
    return "one shard" if re.search(ROUTING[tables[0]], tail) else "all shards"


@dataclass
class Cost:
    """What one operation sent."""

    statements: list[str] = field(default_factory=list)
    transactions: int = 0
    checkouts: int = 0
    ends: int = 0  # COMMIT or ROLLBACK

    @property
    def round_trips(self) -> int:
        return self.checkouts + self.transactions + len(self.statements) + self.ends

    @property
    def fan_outs(self) -> int:
        return sum(routing(s) == "all shards" for s in self.statements)


class Meter:
    """Listens on an engine; :meth:`measure` collects what a block sends."""

    def __init__(self, engine: Engine) -> None:
        self.cost: Cost | None = None
        self.pings = True  # each checkout sends a liveness ping (pool_pre_ping)
        event.listen(engine, "before_cursor_execute", self._statement)
        event.listen(engine, "begin", self._begin)
        event.listen(engine, "commit", self._end)
        event.listen(engine, "rollback", self._end)
        event.listen(engine.pool, "checkout", self._checkout)

    def _statement(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if self.cost is not None:
            self.cost.statements.append(" ".join(statement.split()))

    def _begin(self, _conn: Any) -> None:
        if self.cost is not None:
            self.cost.transactions += 1

    def _end(self, _conn: Any) -> None:
        if self.cost is not None:
            self.cost.ends += 1

    def _checkout(self, *_args: Any) -> None:
        if self.cost is not None and self.pings:
            self.cost.checkouts += 1

    @contextmanager
    def measure(self) -> Iterator[Cost]:
        self.cost = cost = Cost()
        try:
            yield cost
        finally:
            self.cost = None


def _completion(text: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": 0,
        "model": "gpt-4o",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": text},
            }
        ],
        "usage": {"prompt_tokens": 120, "completion_tokens": 8, "total_tokens": 128},
    }


def measure_operations(url: str) -> dict[str, Cost]:
    """Each operation's cost on a ledger at ``url`` (the tables are created if missing)."""
    costs: dict[str, Cost] = {}
    with cl.Ledger(url) as ledger:
        owner = f"owner-{uuid.uuid4().hex[:8]}"
        ledger.conversations(owner=owner)  # the ledger's first call checks the schema
        meter = Meter(ledger.engine)
        meter.pings = ledger.engine.dialect.name != "sqlite"  # chatledger's pool_pre_ping
        history = []
        for i in range(20):
            history += [
                {"role": "user", "content": f"question {i} " * 10},
                {"role": "assistant", "content": f"answer {i} " * 10},
            ]

        def run(name: str, call: Callable[[], object]) -> None:
            with meter.measure() as cost:
                call()
            costs[name] = cost

        cid = uuid.uuid4().hex
        run("create", lambda: ledger.create(cid, owner=owner, system="Be brief."))
        run("get (open a handle)", lambda: ledger.get(cid, owner=owner))
        conv = ledger.get(cid, owner=owner)
        conv.extend(history)
        user = {"role": "user", "content": "one more question"}
        run("append", lambda: conv.append(user))
        run("extend (10 messages)", lambda: conv.extend([user] * 10))
        other = ledger.get(cid, owner=owner)
        other.append(user)  # another worker wrote: conv's handle is stale
        run("append (handle stale)", lambda: conv.append(user))
        run("window TokenBudget", lambda: conv.window(cl.TokenBudget(800)))
        run("window LastRounds", lambda: conv.window(cl.LastRounds(3)))
        run(
            "window StablePrefix",
            lambda: conv.window(cl.StablePrefix(cl.TokenBudget(800))),
        )
        run("request", lambda: conv.request(cl.TokenBudget(2000), max_tokens=50))
        run("record", lambda: conv.record(_completion("an answer")))
        conv.append(user)
        guard = cl.Budget(tokens=10_000_000, scope="owner")
        run(
            "request (owner budget)",
            lambda: conv.request(cl.TokenBudget(2000), budget=guard, max_tokens=50),
        )
        run("record (settles it)", lambda: conv.record(_completion("another answer")))
        run("fork", lambda: conv.fork(f"{cid}-fork", at_seq=20))
        run("truncate", lambda: conv.truncate(30))
        run("delete", lambda: conv.delete())
        ledger.get(f"{cid}-fork", owner=owner).delete()
        ledger.delete_owner(owner)
    return costs


def table(costs: dict[str, Cost]) -> str:
    rows = [
        "| operation | statements | transactions | round trips | fan-outs |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, c in costs.items():
        rows.append(
            f"| {name} | {len(c.statements)} | {c.transactions} | {c.round_trips} | {c.fan_outs} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=PG, help="a database URL (default: the test server)")
    parser.add_argument("--sqlite", action="store_true", help="a fresh SQLite file instead")
    parser.add_argument("--sql", action="store_true", help="print every statement")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'count.db'}" if args.sqlite else args.url
        costs = measure_operations(url)
    print(table(costs))
    if args.sql:
        for name, c in costs.items():
            print(f"\n{name}:")
            for s in c.statements:
                print(f"  [{routing(s)}] {s[:160]}")


if __name__ == "__main__":
    main()
