"""Streaming: pass a ``stream=True`` response through chunk by chunk and record what it said.

The accumulator rebuilds the message from the deltas the way the API defines them: content and
refusal are concatenated, tool calls are assembled by their ``index`` (id, type and name arrive
once, arguments in pieces), each choice separately, and the usage arrives on a last chunk with
no choices. When the stream ends early (an error, a dropped connection, the caller stops
reading) what arrived is recorded with the status ``incomplete``; tool calls whose arguments did
not finish are left out, so the stored message is always one the API accepts back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, Self

from pydantic import BaseModel
from typing_extensions import TypeVar

from chatledger.round_trip import Recorded

__all__ = ["AsyncStreamRecorder", "StreamAccumulator", "StreamRecorder"]


@dataclass
class _Choice:
    content: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    finish_reason: str | None = None


class StreamAccumulator:
    """Folds ``chat.completion.chunk`` objects (or dicts) into one ``chat.completion`` dict."""

    def __init__(self) -> None:
        self.choices: dict[int, _Choice] = {}
        self.id: str | None = None
        self.model: str | None = None
        self.system_fingerprint: str | None = None
        self.usage: dict[str, Any] | None = None
        self.chunks = 0

    def add(self, chunk: object) -> None:
        data = (
            chunk.model_dump(mode="json", exclude_none=True, warnings=False)
            if isinstance(chunk, BaseModel)
            else dict(chunk)  # type: ignore[call-overload]
        )
        self.chunks += 1
        self.id = self.id or data.get("id")
        self.model = self.model or data.get("model")
        self.system_fingerprint = self.system_fingerprint or data.get("system_fingerprint")
        if data.get("usage"):
            self.usage = data["usage"]
        for c in data.get("choices") or []:
            state = self.choices.setdefault(int(c.get("index", 0)), _Choice())
            delta = c.get("delta") or {}
            if isinstance(delta.get("content"), str):
                state.content.append(delta["content"])
            if isinstance(delta.get("refusal"), str):
                state.refusal.append(delta["refusal"])
            for tc in delta.get("tool_calls") or []:
                call = state.calls.setdefault(
                    int(tc.get("index", 0)),
                    {"id": None, "type": "function", "name": "", "arguments": []},
                )
                if tc.get("id"):
                    call["id"] = tc["id"]
                if tc.get("type"):
                    call["type"] = tc["type"]
                fn = tc.get("function") or {}
                if fn.get("name"):
                    call["name"] += fn["name"]
                if isinstance(fn.get("arguments"), str):
                    call["arguments"].append(fn["arguments"])
            if c.get("finish_reason"):
                state.finish_reason = c["finish_reason"]

    def text(self, choice: int = 0) -> str:
        """The content received so far for one choice."""
        state = self.choices.get(choice)
        return "".join(state.content) if state else ""

    def completion(self, *, broken: bool = False) -> dict[str, Any]:
        """The response as a ``chat.completion`` dict; a broken stream's choices get no finish
        reason other than ``incomplete``."""
        choices = []
        for index in sorted(self.choices):
            state = self.choices[index]
            message: dict[str, Any] = {"role": "assistant"}
            if state.content:
                message["content"] = "".join(state.content)
            if state.refusal:
                message["refusal"] = "".join(state.refusal)
            if state.calls:
                message["tool_calls"] = [
                    {
                        "id": call["id"],
                        "type": call["type"],
                        "function": {"name": call["name"], "arguments": "".join(call["arguments"])},
                    }
                    for _, call in sorted(state.calls.items())
                ]
            finish = state.finish_reason
            if broken and finish is None:
                finish = "incomplete"
            choices.append({"index": index, "message": message, "finish_reason": finish})
        out: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion",
            "model": self.model or "",
            "choices": choices,
        }
        if self.system_fingerprint:
            out["system_fingerprint"] = self.system_fingerprint
        if self.usage:
            out["usage"] = self.usage
        return out


#: records the completion a stream added up to (and whether it broke); None: nothing stored
Finish = Callable[[dict[str, Any], bool], Recorded | None]
#: the chunks a recorder passes on: ``ChatCompletionChunk`` for the openai SDK's streams
ChunkT = TypeVar("ChunkT", default=Any)


class _Recorder:
    """What both recorders hold: what arrived, and what was recorded."""

    def __init__(self) -> None:
        self.accumulator = StreamAccumulator()
        self.finished = False
        #: the stored reply and its usage once the stream ended (None before, or if nothing
        #: arrived)
        self.record: Recorded | None = None
        self.error: BaseException | None = None


class StreamRecorder(_Recorder, Generic[ChunkT]):
    """Iterate it to pass the chunks on; when the stream ends the reply is recorded.

    Use it as a context manager (``with conv.stream(...) as s: for chunk in s: ...``) so
    that a stream the caller abandons is closed and what arrived is still recorded.
    ``record`` holds the stored message afterwards (None when nothing arrived).
    """

    def __init__(self, stream: Iterable[ChunkT], finish: Finish) -> None:
        super().__init__()
        self._stream = stream
        self._finish = finish

    def _done(self, broken: bool) -> None:
        if self.finished:
            return
        self.finished = True
        self.record = self._finish(self.accumulator.completion(broken=broken), broken)

    def __iter__(self) -> Iterator[ChunkT]:
        try:
            for chunk in self._stream:
                self.accumulator.add(chunk)
                yield chunk
        except BaseException as exc:
            self.error = exc
            self._done(broken=True)
            raise
        self._done(broken=False)

    def close(self) -> None:
        """Stop reading; record what arrived if the stream had not ended."""
        if not self.finished:
            close = getattr(self._stream, "close", None)
            if callable(close):
                close()
            self._done(broken=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


AsyncFinish = Callable[[dict[str, Any], bool], Awaitable[Recorded | None]]


class AsyncStreamRecorder(_Recorder, Generic[ChunkT]):
    """The async twin of :class:`StreamRecorder` (``async with`` / ``async for``)."""

    def __init__(self, stream: AsyncIterable[ChunkT], finish: AsyncFinish) -> None:
        super().__init__()
        self._stream = stream
        self._finish = finish

    async def _done(self, broken: bool) -> None:
        if self.finished:
            return
        self.finished = True
        # a cancelled response (the client went away) must not cancel the write that records
        # what arrived: it runs on in its own task while the cancellation propagates
        self._recording = asyncio.ensure_future(
            self._finish(self.accumulator.completion(broken=broken), broken)
        )
        self.record = await asyncio.shield(self._recording)

    async def __aiter__(self) -> AsyncIterator[ChunkT]:
        try:
            async for chunk in self._stream:
                self.accumulator.add(chunk)
                yield chunk
        except BaseException as exc:
            self.error = exc
            await self._done(broken=True)
            raise
        await self._done(broken=False)

    async def close(self) -> None:
        """Stop reading; record what arrived if the stream had not ended."""
        if not self.finished:
            close = getattr(self._stream, "close", None) or getattr(self._stream, "aclose", None)
            if callable(close):
                result = close()
                if hasattr(result, "__await__"):
                    await result
            await self._done(broken=True)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
