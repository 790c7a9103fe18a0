"""Repairing histories other tools left API-invalid, before they are imported.

Pure: a list of message dicts in, the messages kept (with where each came from) and a sentence
per change out. Two faults are repaired, the two the API answers 400 for:

- a tool result that answers no open call (no such call, a call of an older assistant
  message, a second result for one call) is dropped;
- tool calls left unanswered when another non-tool message comes are closed by dropping those
  calls from the assistant message; when none of its calls is left and it says nothing else
  (no content, refusal or audio), the assistant message itself is dropped.

Dropping the unanswered calls, rather than inventing results for them, keeps only what was
really said: a made-up tool result would put words in a tool's mouth. Calls still open at the
very end of a history are not a fault (a stored conversation may wait for its tool results)
and stay open.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Repaired", "repair_history"]


@dataclass(frozen=True, slots=True)
class Repaired:
    """What :func:`repair_history` kept: ``(index in the input, message)``, in order, and one
    sentence per change (positions are 1-based, as seqs are)."""

    kept: list[tuple[int, dict[str, Any]]]
    changes: list[str]


def _says_something(msg: Mapping[str, Any]) -> bool:
    content = msg.get("content")
    has_content = content not in (None, "", [])
    return has_content or any(msg.get(k) for k in ("refusal", "audio", "function_call"))


def _call_id(tc: object) -> str | None:
    cid = tc.get("id") if isinstance(tc, Mapping) else None
    return cid if isinstance(cid, str) else None


class _Repairer:
    def __init__(self) -> None:
        self.kept: list[tuple[int, dict[str, Any]]] = []
        self.changes: list[str] = []
        self.open_at: int | None = None  # index into ``kept`` of the assistant with open calls
        self.calls: list[str] = []
        self.answered: set[str] = set()

    def tool(self, i: int, msg: dict[str, Any]) -> None:
        cid = msg.get("tool_call_id")
        if isinstance(cid, str) and cid in self.calls and cid not in self.answered:
            self.answered.add(cid)
            self.kept.append((i, msg))
            return
        why = "a second result for that call" if cid in self.answered else "it answers no call"
        self.changes.append(
            f"seq {i + 1}: dropped the tool result for {cid!r} ({why} of the assistant message "
            "before it)"
        )

    def close(self, i: int) -> None:
        """Drop the calls of the open assistant message that no result answered."""
        missing = [c for c in self.calls if c not in self.answered]
        at = self.open_at
        self.open_at, self.calls, self.answered = None, [], set()
        if not missing or at is None:
            return
        index, msg = self.kept[at]
        left = [tc for tc in msg.get("tool_calls") or () if _call_id(tc) not in missing]
        ids = ", ".join(map(repr, missing))
        fixed = {k: v for k, v in msg.items() if k != "tool_calls"}
        if left:
            fixed["tool_calls"] = left
        if left or _says_something(fixed):
            self.kept[at] = (index, fixed)
            self.changes.append(
                f"seq {index + 1}: dropped unanswered tool call(s) {ids} (no result came before "
                f"seq {i + 1})"
            )
        else:
            del self.kept[at]
            self.changes.append(
                f"seq {index + 1}: dropped the assistant message: its tool call(s) {ids} were "
                f"never answered (before seq {i + 1}) and it says nothing else"
            )

    def other(self, i: int, msg: dict[str, Any]) -> None:
        self.close(i)
        self.kept.append((i, msg))
        calls = msg.get("tool_calls") if msg.get("role") == "assistant" else None
        if isinstance(calls, list) and calls:
            self.open_at = len(self.kept) - 1
            self.calls = [c for c in map(_call_id, calls) if c is not None]


def repair_history(messages: Sequence[Mapping[str, Any]]) -> Repaired:
    """``messages`` with orphan tool results dropped and unanswered tool calls closed (see the
    module doc); messages of any other shape pass through, for validation to judge."""
    r = _Repairer()
    for i, raw in enumerate(messages):
        msg = dict(raw)
        if msg.get("role") == "tool":
            r.tool(i, msg)
        else:
            r.other(i, msg)
    return Repaired(r.kept, r.changes)
