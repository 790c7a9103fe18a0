r"""A chat backend on FastAPI: per-user conversations stored by chatledger, one model call a turn.

Run it (SQLite file ``chatledger-app.db`` by default; ``CHATLEDGER_URL`` for PostgreSQL or
MariaDB; the OpenAI client reads ``OPENAI_API_KEY`` and ``OPENAI_BASE_URL``)::

    pip install 'chatledger[sqlite-async]' fastapi uvicorn
    OPENAI_API_KEY=sk-... uvicorn examples.fastapi_app:app

    curl -s -XPOST localhost:8000/conversations -H 'X-User-Id: alice' \
        -H 'Content-Type: application/json' -d '{"system": "Be brief."}'
    curl -s -XPOST localhost:8000/conversations/ID/messages -H 'X-User-Id: alice' \
        -H 'Content-Type: application/json' -d '{"content": "Hello!", "stream": true}'

Other settings for the module-level ``app``: ``CHATLEDGER_MODEL`` (default ``gpt-4o-mini``),
``CHATLEDGER_CONTEXT_TOKENS`` (the window's token budget, prompt plus reply, default 8000),
``CHATLEDGER_DAILY_USD`` and ``CHATLEDGER_DAILY_TOKENS`` (a per-user daily ceiling),
``CHATLEDGER_SUMMARY_MODEL`` (summarise what leaves the window with that model).

The user is whoever the ``X-User-Id`` header names. **That is a stand-in for authentication**:
a real application derives the user from a verified session or token in :func:`current_user`
and never trusts a client-supplied id. Everything else (tenant isolation, budgets, erasure)
follows from that one value, passed to chatledger as the conversation ``owner``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

import openai
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.background import BackgroundTask

import chatledger as cl
from chatledger.messages import to_api_dict
from chatledger.strategies import Strategy
from chatledger.streaming import AsyncStreamRecorder

__all__ = ["app", "create_app"]

log = logging.getLogger("chatledger.example")

DEFAULT_DATABASE_URL = "sqlite:///chatledger-app.db"
DEFAULT_MODEL = "gpt-4o-mini"
SHUTDOWN_GRACE_SECONDS = 10.0


# --- request and response bodies --------------------------------------------------------------


class NewConversation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    system: str | None = Field(None, description="the system prompt, pinned in every window")
    model: str | None = Field(None, description="one of the models the server allows")
    title: str | None = None


class NewMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content: str = Field(min_length=1, max_length=100_000)
    stream: bool = False


class ConversationOut(BaseModel):
    id: str
    title: str | None
    model: str
    created_at: datetime
    updated_at: datetime
    message_count: int
    token_total: int

    @classmethod
    def of(cls, info: cl.ConversationInfo) -> ConversationOut:
        return cls(
            id=info.id,
            title=info.title,
            model=info.model,
            created_at=info.created_at,
            updated_at=info.updated_at,
            message_count=info.message_count,
            token_total=info.token_total,
        )


class ConversationDetail(ConversationOut):
    messages: list[dict[str, Any]]


class TurnOut(BaseModel):
    message: dict[str, Any]
    finish_reason: str | None
    usage: dict[str, Any] | None
    seq: int


class UsageOut(BaseModel):
    since: datetime
    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_usd: Decimal
    unpriced_requests: int
    budget_usd: Decimal | None
    budget_tokens: int | None


# --- errors -----------------------------------------------------------------------------------


class UpstreamReplyError(Exception):
    """The model's reply could not be stored (chatledger refused it): the upstream's fault."""


def _error(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _problem(kind: str, loc: Sequence[str | int], msg: str) -> dict[str, Any]:
    """One 422 entry, shaped like FastAPI's own validation errors."""
    return {"type": kind, "loc": list(loc), "msg": msg}


class SafeJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped: a 422 may echo input that is not valid UTF-8 (a lone
    surrogate sent as ``"\\ud800"``), which the default rendering cannot encode."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, allow_nan=False, separators=(",", ":")).encode("ascii")


def budget_refusal(exc: cl.BudgetExceededError) -> dict[str, Any]:
    """Why a turn was refused, in words and figures: what is ``used`` (spent today plus what
    turns in flight hold), what this turn ``needed`` at most (its prompt plus the longest reply
    it may get, ``max_tokens``), and the ``limit`` the sum would pass. Token ceilings are
    integers, money ceilings dollars (fractions of a cent, so six decimals)."""
    tokens = isinstance(exc.limit, int)
    unit = "tokens" if tokens else "usd"
    if tokens:
        message = (
            f"this turn needs up to {exc.needed:,} tokens (its prompt plus the longest reply "
            f"allowed), and {exc.used:,} of your {exc.limit:,} tokens are used; "
            "try a new conversation or again tomorrow (UTC)"
        )
    else:
        message = (
            f"this turn may cost up to ${exc.needed:.6f} (its prompt plus the longest reply "
            f"allowed), and ${exc.used:.6f} of your ${exc.limit:g} are spent; "
            "try again tomorrow (UTC)"
        )
    return {
        "message": message,
        "reason": str(exc),
        "scope": exc.scope,
        "unit": unit,
        "limit": exc.limit,
        "used": exc.used,
        "needed": exc.needed,
    }


def install_error_handlers(app: FastAPI) -> None:
    """Map chatledger's typed errors (and the SDK's) to HTTP statuses; no message parsing."""

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return SafeJSONResponse({"detail": jsonable_encoder(exc.errors())}, status_code=422)

    @app.exception_handler(cl.InvalidMessageError)
    async def invalid_message(request: Request, exc: cl.InvalidMessageError) -> JSONResponse:
        problems = []
        for p in exc.problems:
            loc: list[str | int] = ["message"] if p.index is None else ["messages", p.index]
            loc += [part for part in p.field.split(".") if part]
            problems.append(_problem("invalid_message", loc, p.rule))
        return _error(422, problems)

    @app.exception_handler(cl.InvalidParameterError)
    async def invalid_parameter(request: Request, exc: cl.InvalidParameterError) -> JSONResponse:
        return _error(
            422, [_problem("invalid_parameter", ["params", p], r) for p, r in exc.problems]
        )

    @app.exception_handler(cl.InvalidArgumentError)
    async def invalid_argument(request: Request, exc: cl.InvalidArgumentError) -> JSONResponse:
        if exc.field == "owner":  # the owner comes from the header, nowhere else
            return _error(400, f"X-User-Id: {exc.rule}")
        loc = ["path", "conversation_id"] if exc.field == "id" else ["body", exc.field]
        return _error(422, [_problem("invalid_argument", loc, exc.rule)])

    @app.exception_handler(cl.ConversationNotFoundError)
    async def not_found(request: Request, exc: cl.ConversationNotFoundError) -> JSONResponse:
        # also another user's conversation: its existence is not revealed
        return _error(404, "conversation not found")

    @app.exception_handler(cl.BudgetExceededError)
    async def over_budget(request: Request, exc: cl.BudgetExceededError) -> JSONResponse:
        return _error(429, budget_refusal(exc))

    @app.exception_handler(cl.ContextOverflowError)
    async def overflow(request: Request, exc: cl.ContextOverflowError) -> JSONResponse:
        return _error(
            413,
            {
                "message": "the message is too long for the model's context",
                "needed_tokens": exc.needed,
                "allowed_tokens": exc.allowed,
            },
        )

    @app.exception_handler(cl.PendingToolCallsError)
    async def pending(request: Request, exc: cl.PendingToolCallsError) -> JSONResponse:
        return _error(409, {"message": str(exc), "pending": list(exc.pending)})

    @app.exception_handler(cl.StorageError)
    async def storage(request: Request, exc: cl.StorageError) -> JSONResponse:
        return _error(503, "the database is unavailable; retry", {"Retry-After": "1"})

    @app.exception_handler(openai.APIError)
    async def upstream(request: Request, exc: openai.APIError) -> JSONResponse:
        detail: dict[str, Any] = {"message": "the model provider failed", "error": exc.message}
        if isinstance(exc, openai.APIStatusError):
            detail["upstream_status"] = exc.status_code
        return _error(502, detail)

    @app.exception_handler(UpstreamReplyError)
    async def bad_reply(request: Request, exc: UpstreamReplyError) -> JSONResponse:
        return _error(502, {"message": "the model's reply was invalid", "error": str(exc)})


# --- the app ----------------------------------------------------------------------------------


@dataclasses.dataclass
class Settings:
    database_url: str
    model: str
    models: frozenset[str]
    context_tokens: int
    max_tokens: int
    budgets: tuple[cl.Budget, ...]
    summary_model: str | None

    def strategy(self, client: openai.AsyncOpenAI) -> list[Strategy]:
        """The window: the newest rounds that fit ``context_tokens`` with the reply's
        ``max_tokens`` (chat() reserves it); with a summary model, the rounds that fall out
        are folded into a stored running summary first."""
        chain: list[Strategy] = []
        if self.summary_model is not None:
            trigger = (self.context_tokens - self.max_tokens) * 3 // 4
            summarizer = cl.OpenAISummarizer(client, self.summary_model, max_tokens=400)
            chain.append(cl.Summarize(summarizer, trigger=trigger, keep=trigger // 2))
        chain.append(cl.TokenBudget(self.context_tokens))
        return chain


@dataclasses.dataclass
class Services:
    """What the lifespan opens: one ledger and one client for every request."""

    ledger: cl.AsyncLedger | None = None
    client: openai.AsyncOpenAI | None = None
    pumps: set[asyncio.Task[None]] = dataclasses.field(default_factory=set)

    def get(self) -> tuple[cl.AsyncLedger, openai.AsyncOpenAI]:
        if self.ledger is None or self.client is None:
            raise RuntimeError("the app is not started (run it under its lifespan)")
        return self.ledger, self.client


def current_user(x_user_id: Annotated[str | None, Header()] = None) -> str:
    """The authenticated user. A stand-in: a real app verifies a session or token here and
    returns the user id it proves, never a value the client merely asserts."""
    if x_user_id is None:
        raise HTTPException(400, "the X-User-Id header is required")
    return x_user_id


CurrentUser = Annotated[str, Depends(current_user)]


def _start_of_day() -> datetime:
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _sse(data: object) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def create_app(
    database_url: str | None = None,
    client: openai.AsyncOpenAI | None = None,
    *,
    budget_tokens: int = 8000,
    per_user_daily_usd: Decimal | str | float | None = None,
    per_user_daily_tokens: int | None = None,
    model: str = DEFAULT_MODEL,
    models: Collection[str] | None = None,
    max_tokens: int = 1000,
    summary_model: str | None = None,
) -> FastAPI:
    """Build the app.

    ``database_url``: any SQLAlchemy URL (``CHATLEDGER_URL``, else a SQLite file).
    ``client``: an ``openai.AsyncOpenAI`` (the caller keeps ownership and closes it); by
    default one is made from ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL`` at startup and closed at
    shutdown. ``budget_tokens``: the context window a turn may use, prompt and reply together.
    ``per_user_daily_usd`` / ``per_user_daily_tokens``: a ceiling per user and UTC day, checked
    before each model call. ``model``: for new conversations; ``models``: which a client may
    choose (default: only ``model``). ``max_tokens``: the longest reply. ``summary_model``:
    keep a running summary of what leaves the window, written by that model through the same
    client (its calls are not counted in the users' usage or budgets).
    """
    budgets: list[cl.Budget] = []
    if per_user_daily_usd is not None or per_user_daily_tokens is not None:
        budgets.append(
            cl.Budget(
                usd=per_user_daily_usd,
                tokens=per_user_daily_tokens,
                scope="owner",
                period="day",
            )
        )
    if max_tokens >= budget_tokens:
        raise ValueError("max_tokens must be smaller than budget_tokens")
    settings = Settings(
        database_url=database_url or os.environ.get("CHATLEDGER_URL") or DEFAULT_DATABASE_URL,
        model=model,
        models=frozenset(models) if models is not None else frozenset({model}),
        context_tokens=budget_tokens,
        max_tokens=max_tokens,
        budgets=tuple(budgets),
        summary_model=summary_model,
    )
    services = Services()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ledger = cl.AsyncLedger(settings.database_url, default_model=settings.model)
        own_client = client is None
        llm = client if client is not None else openai.AsyncOpenAI()
        try:
            await ledger.conversations(limit=1)  # connect and create tables now, not later
            services.ledger, services.client = ledger, llm
            yield
        finally:
            if services.pumps:  # streams still being read: let them finish and record
                _, late = await asyncio.wait(services.pumps, timeout=SHUTDOWN_GRACE_SECONDS)
                for task in late:
                    task.cancel()
                await asyncio.gather(*late, return_exceptions=True)
            services.ledger = services.client = None
            await ledger.close()
            if own_client:
                await llm.close()

    app = FastAPI(title="chatledger example", lifespan=lifespan)
    install_error_handlers(app)

    @app.post("/conversations", status_code=201)
    async def create_conversation(body: NewConversation, user: CurrentUser) -> ConversationOut:
        ledger, _ = services.get()
        chosen = body.model or settings.model
        if chosen not in settings.models:
            raise cl.InvalidArgumentError("model", f"must be one of {sorted(settings.models)}")
        conv = await ledger.create(owner=user, model=chosen, system=body.system, title=body.title)
        return ConversationOut.of(conv.info)

    @app.get("/conversations")
    async def list_conversations(
        user: CurrentUser,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> list[ConversationOut]:
        ledger, _ = services.get()
        infos = await ledger.conversations(owner=user, limit=limit, offset=offset)
        return [ConversationOut.of(info) for info in infos]

    @app.get("/conversations/{conversation_id}")
    async def get_conversation(conversation_id: str, user: CurrentUser) -> ConversationDetail:
        ledger, _ = services.get()
        conv = await ledger.get(conversation_id, owner=user)  # another user's: 404
        messages = await conv.messages()
        return ConversationDetail(**ConversationOut.of(conv.info).model_dump(), messages=messages)

    # --8<-- [start:turn]
    @app.post("/conversations/{conversation_id}/messages", response_model=None)
    async def send_message(
        conversation_id: str, body: NewMessage, user: CurrentUser
    ) -> TurnOut | StreamingResponse:
        """One turn. A turn refused before the model is called (413, 429) leaves no trace:
        chat() takes the user's message back. After the model was called (502, 503) it stays, as
        in most chat UIs; the next message follows it."""
        ledger, llm = services.get()
        conv = await ledger.get(conversation_id, owner=user)
        message = {"role": "user", "content": body.content}
        # a message that could never fit is refused before it is stored (the window check in
        # chat() catches the rest: a long system prompt plus this message, say)
        needed = conv.counter.message(message) + conv.counter.priming
        allowed = settings.context_tokens - settings.max_tokens
        if needed > allowed:
            raise cl.ContextOverflowError(needed, allowed, "the new message alone")
        cl.validate_messages([message])  # a bad message is the client's: 422 names the problem
        params: dict[str, Any] = {"max_tokens": settings.max_tokens}
        if body.stream:
            params.update(stream=True, stream_options={"include_usage": True})
        try:
            # chat() stores the message, and takes it back if the turn is refused before the
            # model is called (a budget, a window that cannot fit)
            result = await conv.chat(
                llm, message, strategy=settings.strategy(llm), budget=settings.budgets, **params
            )
        except cl.InvalidMessageError as exc:  # the reply broke a rule, not the request
            raise UpstreamReplyError(str(exc)) from exc
        if body.stream:
            return _stream(result, services.pumps)
        choice = result.choices[0]
        usage = result.usage.model_dump(exclude_none=True) if result.usage else None
        return TurnOut(
            message=to_api_dict(choice.message),
            finish_reason=choice.finish_reason,
            usage=usage,
            seq=conv.info.last_seq,
        )

    # --8<-- [end:turn]

    @app.get("/conversations/{conversation_id}/window")
    async def window(conversation_id: str, user: CurrentUser) -> dict[str, Any]:
        """What the next turn would send (before its new message) and why: the stored history
        split into prefix / summarized / dropped / kept spans with their token counts."""
        ledger, llm = services.get()
        conv = await ledger.get(conversation_id, owner=user)
        strategy = settings.strategy(llm)
        w = await conv.window(strategy, reserve=settings.max_tokens, explain=True)
        return window_body(w)

    @app.get("/usage")
    async def usage(user: CurrentUser) -> UsageOut:
        ledger, _ = services.get()
        since = _start_of_day()
        t = await ledger.usage(owner=user, since=since)
        day = settings.budgets[0] if settings.budgets else None
        return UsageOut(
            since=since,
            requests=t.requests,
            prompt_tokens=t.prompt_tokens,
            completion_tokens=t.completion_tokens,
            total_tokens=t.total_tokens,
            cost_usd=t.cost_usd,
            unpriced_requests=t.unpriced,
            budget_usd=Decimal(str(day.usd)) if day and day.usd is not None else None,
            budget_tokens=day.tokens if day else None,
        )

    @app.delete("/conversations/{conversation_id}", status_code=204)
    async def delete_conversation(conversation_id: str, user: CurrentUser) -> Response:
        ledger, _ = services.get()
        await ledger.delete(conversation_id, owner=user)
        return Response(status_code=204)

    @app.delete("/me")
    async def erase_me(user: CurrentUser) -> dict[str, int]:
        """Erase every conversation of the user, with messages, summaries and usage rows."""
        ledger, _ = services.get()
        return {"deleted_conversations": await ledger.delete_owner(user)}

    return app


def window_body(w: cl.Window) -> dict[str, Any]:
    """The ``/window`` response: what the next turn sends and why (docs/recipes/fastapi.md
    shows one). The spans and the summary as plain JSON; the stored records the window read
    are left out (their metadata is the application's, not the client's)."""
    summary = None
    if w.summary is not None:
        summary = {
            "upto_seq": w.summary.upto_seq,
            "tokens": w.summary.tokens,
            "text": w.summary.text,
            "created": w.summary.created,
        }
    return {
        "messages": w.messages,
        "prompt_tokens": w.prompt_tokens,
        "model": w.model,
        "allowed": w.allowed,
        "overhead_tokens": w.overhead_tokens,
        "prefix": dataclasses.asdict(w.prefix),
        "summary": summary,
        "summary_dropped": w.summary_dropped,
        "summary_failed": w.summary_failed,
        "summarized": dataclasses.asdict(w.summarized),
        "dropped": dataclasses.asdict(w.dropped),
        "kept": dataclasses.asdict(w.kept),
        "steps": list(w.steps),
        "rows_read": w.rows_read,
        "text": str(w),
    }


# --8<-- [start:stream]
def _stream(recorder: AsyncStreamRecorder, pumps: set[asyncio.Task[None]]) -> StreamingResponse:
    """Server-sent events: ``data: {"delta": "..."}`` per piece of text, then ``data: [DONE]``
    (or ``data: {"error": ...}`` when the provider or the database fails mid-stream).

    The recorder passes the model's chunks through and stores the reply when the stream ends;
    when it breaks, what arrived is stored, marked incomplete. The model's stream is read by a
    task of its own (the pump), not by the response: a client that disconnects cancels the
    response, and a cancelled task could not finish writing the reply to the database. The
    pump notices the departure at the next chunk, stops reading (no more tokens are paid for)
    and stores what arrived.
    """
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    gone = asyncio.Event()  # the client disconnected
    started = False

    async def pump() -> None:
        try:
            async with recorder:  # on leaving: the upstream is closed, the reply recorded
                async for chunk in recorder:
                    for choice in chunk.choices:
                        if choice.index == 0 and choice.delta.content:
                            queue.put_nowait(_sse({"delta": choice.delta.content}))
                    if gone.is_set():
                        break
            queue.put_nowait("data: [DONE]\n\n")
        except openai.APIError as exc:
            queue.put_nowait(_sse({"error": {"message": "the model provider failed"}}))
            log.warning("stream from the model provider failed: %s", exc)
        except cl.ChatLedgerError as exc:
            queue.put_nowait(_sse({"error": {"message": "the reply could not be stored"}}))
            log.error("recording a streamed reply failed: %s", exc)
        except Exception:
            queue.put_nowait(_sse({"error": {"message": "internal error"}}))
            log.exception("streaming a reply failed")
        finally:
            queue.put_nowait(None)

    async def events() -> AsyncIterator[str]:
        nonlocal started
        started = True
        task = asyncio.create_task(pump())
        pumps.add(task)  # a strong reference until it is done; the lifespan waits for it
        task.add_done_callback(pumps.discard)
        try:
            while (event := await queue.get()) is not None:
                yield event
        finally:
            gone.set()

    async def never_started() -> None:
        if not started:  # the client left before the body began: release the upstream
            await recorder.close()

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        background=BackgroundTask(never_started),
    )


# --8<-- [end:stream]


def _env_int(name: str, default: int | None) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else default


app = create_app(
    budget_tokens=_env_int("CHATLEDGER_CONTEXT_TOKENS", 8000) or 8000,
    per_user_daily_usd=os.environ.get("CHATLEDGER_DAILY_USD") or None,
    per_user_daily_tokens=_env_int("CHATLEDGER_DAILY_TOKENS", None),
    model=os.environ.get("CHATLEDGER_MODEL") or DEFAULT_MODEL,
    summary_model=os.environ.get("CHATLEDGER_SUMMARY_MODEL") or None,
)
