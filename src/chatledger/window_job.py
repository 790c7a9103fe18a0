"""One window being built: the chain (resolved for the model, with room for the reply), what
to read for it, and the :class:`~chatledger.window.Window` made from the plan.

Rewriting strategies apply here, to the final tail, and the prompt-cache prediction is made
here, from the plan and the counts of what is sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chatledger.errors import PendingToolCallsError
from chatledger.rows import Lookback, Snapshot, StoredMessage
from chatledger.tokens import TokenCounter, system_text
from chatledger.window import (
    ChainKinds,
    Plan,
    Span,
    Strategy,
    StrategyArg,
    Window,
    WindowView,
    chain_of,
    combined_lookback,
    for_model,
    with_reserve,
)

__all__ = ["WindowJob"]


@dataclass
class WindowJob:
    """One window being built: the chain, what to read, and how to turn the plan into a result."""

    chain: list[Strategy]
    lookback: Lookback | None
    with_summary: bool
    counter: TokenCounter
    tools: Sequence[Mapping[str, Any]] | None
    tool_choice: Any
    kinds: ChainKinds

    @classmethod
    def start(
        cls,
        strategy: StrategyArg,
        counter: TokenCounter,
        tools: Sequence[Mapping[str, Any]] | None,
        tool_choice: Any,
        reserve: int = 0,
    ) -> WindowJob:
        chain = [for_model(s, counter.model) for s in chain_of(strategy)]
        if reserve:
            chain = [with_reserve(s, reserve) for s in chain]
        kinds = ChainKinds.of(chain)
        folds = kinds.folder is not None
        return cls(chain, combined_lookback(chain), folds, counter, tools, tool_choice, kinds)

    def view(self, snap: Snapshot, conversation_id: str) -> WindowView:
        """What the strategies see, from what the store read; refuses open tool calls."""
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
            anchor=info.window_start,
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
        sent, sent_tokens, rewritten = self._rewrite(tail)
        tail_tokens = sum(sent_tokens)
        messages.extend(sent)
        overhead = self.counter.priming + self.counter.tools(
            self.tools, system=system_text(messages), tool_choice=self.tool_choice
        )
        prefix_tokens = snap.prefix[-1].cumulative_tokens if snap.prefix else 0
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
        stored_tail = sum(r.tokens for r in tail)
        dropped_tokens = None if after_summary is None else after_summary - stored_tail
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
            rewritten=rewritten,
            anchored=self.kinds.anchored,
            held=plan.held,
            predicted_cached_tokens=self._predicted_cache(
                plan, overhead, prefix_tokens, summary_tokens, tail, sent_tokens
            ),
            records=(*snap.prefix, *tail),
        )

    def _predicted_cache(
        self,
        plan: Plan,
        overhead: int,
        prefix_tokens: int,
        summary_tokens: int,
        tail: list[StoredMessage],
        sent_tokens: list[int],
    ) -> int:
        """What OpenAI's cache should serve: the beginning unchanged since the last request."""
        shared = overhead - self.counter.priming + prefix_tokens
        summary = plan.summary
        if summary is not None and not summary.created:
            shared += summary_tokens
        if plan.held and (summary is None or not summary.created):
            users = [i for i, r in enumerate(tail) if r.role == "user"]
            newest = users[-1] if users else len(tail)
            shared += sum(sent_tokens[:newest])
        return (shared // 128) * 128 if shared >= 1024 else 0

    def _rewrite(
        self, tail: list[StoredMessage]
    ) -> tuple[list[dict[str, Any]], list[int], tuple[int, ...]]:
        """The tail as sent, each message's tokens, and the seqs a rewriting strategy replaced (only
        where the replacement costs fewer tokens than the stored message)."""
        sent = [r.message for r in tail]
        tokens = [r.tokens for r in tail]
        done: list[int] = []
        index = {r.seq: i for i, r in enumerate(tail)}
        rewriters = self.kinds.rewriters
        # a tool result is counted under the call it answers, which a window always carries
        calls = {
            c["id"]: r.message
            for r in (tail if rewriters else ())
            for c in r.message.get("tool_calls") or ()
            if isinstance(c, Mapping) and isinstance(c.get("id"), str)
        }
        for rw in rewriters:
            for seq, msg in rw.rewrite(tail).items():
                i = index.get(seq)
                if i is None:
                    continue
                cost = self.counter.message(msg, answering=calls.get(msg.get("tool_call_id")))
                if cost < tokens[i]:
                    sent[i], tokens[i] = msg, cost
                    done.append(seq)
        return sent, tokens, tuple(sorted(set(done)))
