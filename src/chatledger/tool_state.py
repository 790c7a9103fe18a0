"""The tool calls a conversation still owes results for, kept between writes.

The API answers 400 when a tool message answers no open call, or when another message comes
while calls are unanswered. :class:`ToolCallState` follows that pairing message by message, so
an append is checked against the stored history without reading it back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from chatledger.errors import Problem

__all__ = ["ToolCallState"]


@dataclass
class ToolCallState:
    """The tool calls still waiting for results after the newest assistant ``tool_calls``.

    A conversation keeps this between writes so that each append is checked against what came
    before without reading the history: a tool message must answer one of ``calls``, and no
    other message may come while some are unanswered.
    """

    calls: list[str] = field(default_factory=list)
    answered: list[str] = field(default_factory=list)
    #: where the assistant message is: its index in the array being checked, or None if stored
    assistant_index: int | None = None
    #: its seq when it is a stored message
    assistant_seq: int | None = None
    #: the called functions' names, parallel to ``calls`` (a tool result is counted under it)
    names: list[str] = field(default_factory=list)

    @property
    def pending(self) -> list[str]:
        done = set(self.answered)
        return [c for c in self.calls if c not in done]

    def to_json(self) -> str | None:
        if not self.calls:
            return None
        return json.dumps(
            {
                "calls": self.calls,
                "names": self.names,
                "answered": self.answered,
                "seq": self.assistant_seq,
            },
            separators=(",", ":"),
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, text: str | None) -> ToolCallState:
        if not text:
            return cls()
        data = json.loads(text)
        return cls(
            list(data["calls"]),
            list(data["answered"]),
            None,
            data.get("seq"),
            list(data.get("names") or ()),
        )

    def assistant_stub(self) -> dict[str, Any] | None:
        """The open assistant message as far as counting its tool results needs it."""
        if not self.calls:
            return None
        return {
            "role": "assistant",
            "tool_calls": [
                {"id": cid, "type": "function", "function": {"name": name, "arguments": "{}"}}
                for cid, name in zip(self.calls, self.names or [""] * len(self.calls), strict=False)
            ],
        }

    def _origin(self) -> str:
        if self.assistant_index is not None:
            return f"messages[{self.assistant_index}]"
        if self.assistant_seq is not None:
            return f"the stored assistant message seq {self.assistant_seq}"
        return "the assistant message"

    def feed(
        self,
        msg: Mapping[str, Any],
        index: int | None,
        problems: list[Problem],
        seq: int | None = None,
    ) -> None:
        """Advance over one message, reporting where it breaks the pairing rules."""
        role = msg.get("role")
        if role == "tool":
            cid = msg.get("tool_call_id")
            if not isinstance(cid, str):
                return
            if not self.calls:
                problems.append(
                    Problem(
                        index,
                        "tool_call_id",
                        f"answers no tool call: a tool message must follow an assistant message "
                        f"whose tool_calls include {cid!r}",
                    )
                )
            elif cid in self.answered:
                problems.append(
                    Problem(index, "tool_call_id", f"duplicates the result for tool call {cid!r}")
                )
            elif cid not in self.calls:
                expected = ", ".join(map(repr, self.pending or self.calls))
                problems.append(
                    Problem(
                        index,
                        "tool_call_id",
                        f"{cid!r} matches no tool_calls id of {self._origin()} "
                        f"(expected one of {expected})",
                    )
                )
            else:
                self.answered.append(cid)
            return
        missing = self.pending
        if missing:
            ids = ", ".join(map(repr, missing))
            if self.assistant_index is not None:
                problems.append(
                    Problem(
                        self.assistant_index,
                        "tool_calls",
                        f"tool call(s) {ids} have no tool result before messages[{index}] "
                        "(every tool call must be answered before the next non-tool message)",
                    )
                )
            else:
                problems.append(
                    Problem(
                        index,
                        "role",
                        f"a {role} message cannot come while tool call(s) {ids} of "
                        f"{self._origin()} have no result: append their tool messages first",
                    )
                )
        self.calls, self.answered, self.names = [], [], []
        self.assistant_index, self.assistant_seq = None, None
        calls = msg.get("tool_calls") if role == "assistant" else None
        if calls:
            for tc in calls:
                if isinstance(tc, Mapping) and isinstance(tc.get("id"), str):
                    self.calls.append(tc["id"])
                    self.names.append(_call_name(tc))
            self.assistant_index, self.assistant_seq = index, seq

    def finish(self, problems: list[Problem]) -> None:
        """Report calls left unanswered at the end of a request."""
        missing = self.pending
        if missing:
            problems.append(
                Problem(
                    self.assistant_index,
                    "tool_calls",
                    f"tool call(s) {', '.join(map(repr, missing))} have no tool result "
                    "(every tool call must be answered before the next non-tool message)",
                )
            )


def _call_name(tc: Mapping[str, Any]) -> str:
    body = tc.get("function") if tc.get("type") != "custom" else tc.get("custom")
    name = body.get("name") if isinstance(body, Mapping) else None
    return name if isinstance(name, str) else ""
