"""The I/O-free halves of ``Conversation.window``, shared by the sync and async twins."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from chatledger.errors import (
    InvalidArgumentError,
    InvalidParameterError,
    PendingToolCallsError,
)
from chatledger.records import StoredMessage
from chatledger.store.ops import Snapshot
from chatledger.strategies.base import Lookback, Strategy, WindowView
from chatledger.strategies.summarize import Summarize
from chatledger.strategies.token_budget import TokenBudget
from chatledger.tokens import TokenCounter, system_text
from chatledger.window import FoldRequest, Plan, Span, Window, chain_of, combined_lookback

__all__ = ["WindowJob", "call_summarizer", "call_summarizer_async", "logger"]

logger = logging.getLogger("chatledger")


@dataclass
class WindowJob:
    """One window being built: the chain, what to read, and how to turn the plan into a result."""

    chain: list[Strategy]
    lookback: Lookback | None
    with_summary: bool
    counter: TokenCounter
    tools: Sequence[Mapping[str, Any]] | None
    tool_choice: Any

    @classmethod
    def start(
        cls,
        strategy: Strategy | Sequence[Strategy] | None,
        counter: TokenCounter,
        tools: Sequence[Mapping[str, Any]] | None,
        tool_choice: Any,
        reserve: int = 0,
    ) -> WindowJob:
        chain = chain_of(strategy)
        if reserve:
            chain = [_with_reserve(s, reserve) for s in chain]
        return cls(
            chain,
            combined_lookback(chain),
            any(isinstance(s, Summarize) for s in chain),
            counter,
            tools,
            tool_choice,
        )

    def view(self, snap: Snapshot, conversation_id: str) -> WindowView:
        info = snap.loaded.info
        if info.pending_tool_calls:
            raise PendingToolCallsError(conversation_id, info.pending_tool_calls)
        prefix_msgs = [r.message for r in snap.prefix]
        system = system_text(prefix_msgs)
        # with no system text in the prefix the definitions may join a later message, which
        # costs less: plan with the dearer figure, report the exact one
        overhead = self.counter.priming + self.counter.tools(
            self.tools, system=system, tool_choice=self.tool_choice
        )
        return WindowView(
            model=self.counter.model,
            last_seq=info.last_seq,
            prefix_tokens=snap.prefix[-1].cumulative_tokens if snap.prefix else 0,
            overhead_tokens=overhead,
            summary_tokens=0,
            summary_upto=0,
            start=snap.start,
            entries=snap.entries,
            start_tokens=snap.start_tokens,
        )

    def result(
        self,
        snap: Snapshot,
        view: WindowView,
        plan: Plan,
        tail: list[StoredMessage],
        rows_read: int,
    ) -> Window:
        info = snap.loaded.info
        messages = [r.message for r in snap.prefix]
        summary = plan.summary
        if summary is not None and not plan.summary_dropped:
            messages.append(summary.message)
        messages.extend(r.message for r in tail)
        overhead = self.counter.priming + self.counter.tools(
            self.tools, system=system_text(messages), tool_choice=self.tool_choice
        )
        prefix_tokens = snap.prefix[-1].cumulative_tokens if snap.prefix else 0
        tail_tokens = sum(r.tokens for r in tail)
        summary_tokens = summary.tokens if summary and not plan.summary_dropped else 0
        covered = summary.upto_seq if summary is not None else info.prefix_seq
        first_after = info.prefix_seq + 1

        def tokens_from(seq: int) -> int | None:
            if seq == first_after:
                return info.token_total - prefix_tokens
            if seq == snap.start:
                return snap.start_tokens
            try:
                return view.tail_tokens(seq)
            except ValueError:
                return None

        after_summary = tokens_from(covered + 1)
        summarized_tokens = (
            None if after_summary is None else info.token_total - prefix_tokens - after_summary
        )
        dropped_tokens = None if after_summary is None else after_summary - tail_tokens
        return Window(
            messages=messages,
            prompt_tokens=prefix_tokens + summary_tokens + tail_tokens + overhead,
            model=self.counter.model,
            allowed=plan.allowed,
            overhead_tokens=overhead,
            prefix=Span.of(1, info.prefix_seq, prefix_tokens),
            summary=summary,
            summary_dropped=plan.summary_dropped,
            summary_failed=plan.summary_failed,
            summarized=Span.of(first_after, covered, summarized_tokens),
            dropped=Span.of(max(first_after, covered + 1), plan.start - 1, dropped_tokens),
            kept=Span.of(plan.start, info.last_seq, tail_tokens),
            steps=tuple(plan.steps),
            rows_read=rows_read,
            records=(*snap.prefix, *tail),
        )


def _with_reserve(strategy: Strategy, reserve: int) -> Strategy:
    """A token budget that also leaves ``reserve`` tokens for the completion."""
    if not isinstance(strategy, TokenBudget) or strategy.reserve >= reserve:
        return strategy
    if reserve >= strategy.limit:
        raise InvalidParameterError(
            [
                (
                    "max_tokens",
                    f"{reserve} leaves no room for the prompt within {strategy!r}: lower it "
                    "or raise the budget",
                )
            ]
        )
    return TokenBudget(strategy.limit, reserve=reserve)


def _failed(req: FoldRequest, cid: str, why: object) -> None:
    logger.warning(
        "summarizer failed for conversation %r (seq %d-%d): %s; those rounds are dropped this "
        "turn and summarised on a later one",
        cid,
        req.from_seq,
        req.upto_seq,
        why,
    )


def _summary_text(value: object) -> str | None:
    if isinstance(value, str) and value.strip() and "\x00" not in value:
        return value.strip()
    return None


def _is_async(fn: Any) -> bool:
    return bool(
        inspect.iscoroutinefunction(fn)
        or inspect.iscoroutinefunction(getattr(fn, "__call__", None))  # noqa: B004
        or getattr(fn, "is_async", False)
    )


def call_summarizer(req: FoldRequest, messages: list[dict[str, Any]], cid: str) -> str | None:
    """Run a sync summarizer with the strategy's timeout; None (and a warning) on failure."""
    fn = req.strategy.summarizer
    if _is_async(fn):
        raise InvalidArgumentError(
            "summarizer", "is async: use it with AsyncLedger, or give a sync summarizer"
        )
    try:
        if req.strategy.timeout is None:
            value = fn(req.previous, messages)
        else:
            pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chatledger-summary")
            try:
                value = pool.submit(fn, req.previous, messages).result(req.strategy.timeout)
            finally:
                pool.shutdown(wait=False)
    except Exception as exc:
        _failed(req, cid, repr(exc))
        return None
    if inspect.isawaitable(value):
        if inspect.iscoroutine(value):
            value.close()
        raise InvalidArgumentError("summarizer", "returned an awaitable: use it with AsyncLedger")
    text = _summary_text(value)
    if text is None:
        _failed(req, cid, "it returned no text")
    return text


async def call_summarizer_async(
    req: FoldRequest, messages: list[dict[str, Any]], cid: str
) -> str | None:
    """Run a summarizer (async, or sync in a thread) with the timeout; None on failure."""
    fn = req.strategy.summarizer
    try:
        if _is_async(fn):
            pending: Any = fn(req.previous, messages)
        else:
            pending = asyncio.to_thread(fn, req.previous, messages)
        value = await asyncio.wait_for(pending, req.strategy.timeout)
    except Exception as exc:
        _failed(req, cid, repr(exc))
        return None
    text = _summary_text(value)
    if text is None:
        _failed(req, cid, "it returned no text")
    return text
