"""Summarizers: turn the rounds leaving the window into running-summary text.

A summarizer is any callable ``(previous_summary, messages) -> str``, or one returning an
awaitable of ``str`` for async code. :class:`OpenAISummarizer` calls any OpenAI-compatible chat
endpoint through the official SDK, with the client the caller already configured.

A summarizer that can say what a call was billed offers ``take_usage(messages)``: the response
to the call that was given that very ``messages`` list (or None). The ledger then records it as
a usage row of the conversation, in the transaction that stores the summary, so it counts
against budgets like any request. :class:`OpenAISummarizer` does.
"""

from __future__ import annotations

import inspect
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import openai

__all__ = ["DEFAULT_PROMPT", "AnySummarizer", "OpenAISummarizer", "render_transcript"]

#: ``(previous_summary, messages) -> str`` or its async twin
AnySummarizer = Callable[[str | None, list[dict[str, Any]]], str | Awaitable[str]]

DEFAULT_PROMPT = (
    "You maintain the running summary of a conversation between a user and an assistant, so "
    "the assistant can continue it after older messages are removed from its context.\n"
    "Merge the previous summary (if any) with the new messages into one updated summary.\n"
    "Keep: the user's goals and constraints, facts and names established, decisions made, "
    "tool calls made and what they returned (briefly), open questions and commitments.\n"
    "Drop: pleasantries, repetition, and wording that does not change meaning.\n"
    "Write in the third person, in the conversation's language, as compact plain text, "
    "at most {max_words} words. Output only the summary."
)

_MAX_PART_CHARS = 4000
_KEPT = 64  # responses kept for take_usage


def _text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        out = []
        for part in content:
            if not isinstance(part, Mapping):
                continue
            kind = part.get("type")
            if kind == "text":
                out.append(str(part.get("text", "")))
            elif kind == "refusal":
                out.append(f"(refused: {part.get('refusal', '')})")
            else:
                out.append(f"[{kind}]")
        return " ".join(out)
    return str(content)


def _clip(text: str) -> str:
    if len(text) <= _MAX_PART_CHARS:
        return text
    return text[:_MAX_PART_CHARS] + f" [... {len(text) - _MAX_PART_CHARS} more characters]"


def render_transcript(messages: Sequence[Mapping[str, Any]]) -> str:
    """Messages as a plain transcript for a summarizing model; long parts are clipped."""
    lines = []
    for msg in messages:
        role = msg.get("role", "?")
        who = f"{role} ({msg['name']})" if msg.get("name") else str(role)
        text = _text_of(msg.get("content"))
        if msg.get("refusal"):
            text = (text + f" (refused: {msg['refusal']})").strip()
        if role == "tool":
            who = f"tool result [{msg.get('tool_call_id', '')}]"
        calls = msg.get("tool_calls") or []
        rendered = []
        for tc in calls:
            body = tc.get("function") or tc.get("custom") or {}
            args = body.get("arguments", body.get("input", ""))
            rendered.append(f"{body.get('name', '?')}({args}) [{tc.get('id', '')}]")
        if msg.get("function_call"):
            fc = msg["function_call"]
            rendered.append(f"{fc.get('name', '?')}({fc.get('arguments', '')})")
        if rendered:
            text = (text + " calls " + "; ".join(rendered)).strip()
        lines.append(f"{who}: {_clip(text)}")
    return "\n".join(lines)


class OpenAISummarizer:
    """Summarise with any OpenAI-compatible chat endpoint.

    Pass an ``openai.OpenAI`` client for sync use or an ``openai.AsyncOpenAI`` one for async
    use (the call then returns an awaitable). Any server that speaks the Chat Completions API
    works: OpenAI, Azure, vLLM, llama.cpp, Ollama, through the client's ``base_url``.
    """

    def __init__(
        self,
        client: Any,
        model: str,
        *,
        prompt: str = DEFAULT_PROMPT,
        max_words: int = 250,
        max_tokens: int = 600,
        temperature: float | None = 0.2,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        (
            self.client,
            self.model,
            self.prompt,
            self.max_words,
            self.max_tokens,
            self.temperature,
            self.extra,
        ) = (client, model, prompt, max_words, max_tokens, temperature, dict(extra or {}))
        create = client.chat.completions.create
        self.is_async = isinstance(client, openai.AsyncOpenAI) or inspect.iscoroutinefunction(
            inspect.unwrap(create)
        )
        #: the newest response's ``usage`` (what the summarizer was billed), None before any
        self.last_usage: Any = None
        # responses by the identity of the messages list they summarised, for take_usage:
        # a summarizer shared by threads or tasks still gives each fold its own response
        self._responses: OrderedDict[int, tuple[list[Any], Any]] = OrderedDict()
        self._lock = threading.Lock()

    def request(self, previous: str | None, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """The chat completion request this summarizer sends."""
        parts = []
        if previous:
            parts.append(f"Previous summary:\n{previous}")
        parts.append(f"New messages:\n{render_transcript(messages)}")
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": [
                {
                    "role": "system",
                    "content": self.prompt.replace("{max_words}", str(self.max_words)),
                },
                {"role": "user", "content": "\n\n".join(parts)},
            ],
            "max_tokens": self.max_tokens,
            **self.extra,
        }
        if self.temperature is not None:
            kwargs["temperature"] = self.temperature
        return kwargs

    @staticmethod
    def _text(completion: Any) -> str:
        choices = getattr(completion, "choices", None) or []
        if not choices:
            return ""
        content = choices[0].message.content
        return content.strip() if isinstance(content, str) else ""

    def _keep(self, messages: list[Any], completion: Any) -> None:
        self.last_usage = getattr(completion, "usage", None)
        with self._lock:
            self._responses[id(messages)] = (messages, completion)  # the list keeps its id
            while len(self._responses) > _KEPT:  # calls whose fold gave up (a timeout)
                self._responses.popitem(last=False)

    def take_usage(self, messages: list[Any]) -> Any:
        """The response to the call that summarised ``messages`` (this very list), once: the
        ledger records its usage as a usage row of the conversation. None if there was none."""
        with self._lock:
            kept = self._responses.pop(id(messages), None)
        return None if kept is None or kept[0] is not messages else kept[1]

    def __call__(self, previous: str | None, messages: list[dict[str, Any]]) -> Any:
        kwargs = self.request(previous, messages)
        if self.is_async:
            return self._acall(kwargs, messages)
        completion = self.client.chat.completions.create(**kwargs)
        self._keep(messages, completion)
        return self._text(completion)

    async def _acall(self, kwargs: dict[str, Any], messages: list[Any]) -> str:
        completion = await self.client.chat.completions.create(**kwargs)
        self._keep(messages, completion)
        return self._text(completion)

    def __repr__(self) -> str:
        return f"OpenAISummarizer(model={self.model!r}, async={self.is_async})"
