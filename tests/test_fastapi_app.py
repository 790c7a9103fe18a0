"""The FastAPI example backend (examples/fastapi_app.py), over HTTP (FastAPI's TestClient, and
uvicorn on loopback), with the real openai SDK against the fake OpenAI server (the ``server``
fixture of conftest.py), on every database backend: what a user of the example relies on."""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytest.importorskip("fastapi")

import openai
from fastapi import FastAPI
from fastapi.testclient import TestClient

import chatledger as cl
from openai_server import FakeOpenAI, Reply, Usage

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "fastapi_app.py"
MODEL = "gpt-4o-mini"  # the example's default: $0.15 / $0.60 per 1M tokens
if not EXAMPLE.exists():  # an sdist without examples/
    pytest.skip(f"{EXAMPLE} is not there", allow_module_level=True)


def _load_example() -> ModuleType:
    # examples/ is not a package: load the file the way `uvicorn examples.fastapi_app:app` would
    name = "chatledger_examples_fastapi_app"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # pydantic resolves the body models through it
    spec.loader.exec_module(module)
    return module


example = _load_example()


@contextmanager
def running(db_url: str, server: FakeOpenAI, **settings: Any) -> Iterator[TestClient]:
    """The app on ``db_url`` with a client of the fake server, started and stopped."""
    llm = openai.AsyncOpenAI(base_url=server.url, api_key="test", max_retries=0)
    app = example.create_app(db_url, llm, **settings)
    with TestClient(app) as http:
        try:
            yield http
        finally:
            assert http.portal is not None
            http.portal.call(llm.close)  # the caller owns a client it passes in


def as_user(user: str) -> dict[str, str]:
    return {"X-User-Id": user}


def create(http: TestClient, user: str, **body: Any) -> str:
    r = http.post("/conversations", json=body, headers=as_user(user))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def say(http: TestClient, user: str, cid: str, content: str, **body: Any) -> Any:
    return http.post(
        f"/conversations/{cid}/messages", json={"content": content, **body}, headers=as_user(user)
    )


def sse_events(text: str) -> list[str]:
    events = [e for e in text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events), text
    return [e.removeprefix("data: ") for e in events]


def locs(response: Any) -> list[list[Any]]:
    return [item["loc"] for item in response.json()["detail"]]


# -- tenants ---------------------------------------------------------------------------------


def test_users_are_isolated(db_url: str, server: FakeOpenAI, uid: str) -> None:
    alice, bob = f"alice-{uid}", f"bob-{uid}"
    with running(db_url, server) as http:
        cid = create(http, alice, system="Be brief.", title="Alice's")
        assert say(http, alice, cid, "hello").status_code == 200

        theirs = [
            http.get(f"/conversations/{cid}", headers=as_user(bob)),
            http.get(f"/conversations/{cid}/window", headers=as_user(bob)),
            say(http, bob, cid, "let me in"),
            http.delete(f"/conversations/{cid}", headers=as_user(bob)),
        ]
        assert [r.status_code for r in theirs] == [404] * 4
        assert all(r.json() == {"detail": "conversation not found"} for r in theirs)
        assert http.get("/conversations", headers=as_user(bob)).json() == []
        assert len(server.requests) == 1  # bob's message never reached the model

        mine = http.get("/conversations", headers=as_user(alice)).json()
        assert [(c["id"], c["title"], c["message_count"]) for c in mine] == [(cid, "Alice's", 3)]
        detail = http.get(f"/conversations/{cid}", headers=as_user(alice)).json()
        assert [m["role"] for m in detail["messages"]] == ["system", "user", "assistant"]

        missing = http.get("/conversations")
        assert missing.status_code == 400
        assert "X-User-Id" in missing.json()["detail"]
        padded = http.get("/conversations", headers=as_user(f" {alice}"))
        assert padded.status_code == 400
        assert padded.json()["detail"].startswith("X-User-Id: ")


# -- turns -----------------------------------------------------------------------------------


def test_turn_then_streamed_turn(db_url: str, server: FakeOpenAI, uid: str) -> None:
    user = f"u-{uid}"
    with running(db_url, server) as http:
        cid = create(http, user, system="You are a baseball historian.")

        server.queue(Reply(content="The Los Angeles Dodgers."))
        r = say(http, user, cid, "Who won the world series in 2020?")
        assert r.status_code == 200, r.text
        turn = r.json()
        assert turn["message"] == {"role": "assistant", "content": "The Los Angeles Dodgers."}
        assert turn["finish_reason"] == "stop"
        assert turn["seq"] == 3
        assert turn["usage"]["prompt_tokens"] > 0
        sent = server.last_request
        assert [m["role"] for m in sent["messages"]] == ["system", "user"]
        assert sent["max_tokens"] == 1000 and "stream" not in sent

        reply = "The Atlanta Braves beat the Houston Astros, four games to two. ⚾"
        server.queue(Reply(content=reply))
        r = say(http, user, cid, "And in 2021?", stream=True)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r.text)
        assert events[-1] == "[DONE]"
        deltas = [json.loads(e)["delta"] for e in events[:-1]]
        assert len(deltas) > 1  # passed through piece by piece
        assert "".join(deltas) == reply
        sent = server.last_request
        assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
        assert [m["content"] for m in sent["messages"][1:]] == [
            "Who won the world series in 2020?",
            "The Los Angeles Dodgers.",
            "And in 2021?",
        ]

        stored = http.get(f"/conversations/{cid}", headers=as_user(user)).json()
        assert stored["messages"][-1] == {"role": "assistant", "content": reply}
        assert stored["message_count"] == 5

        usage = http.get("/usage", headers=as_user(user)).json()
        assert usage["requests"] == 2  # the stream's usage chunk was recorded too
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
        assert usage["budget_usd"] is None and usage["budget_tokens"] is None


def test_usage_is_the_days_billed_tokens_and_cost(
    db_url: str, server: FakeOpenAI, uid: str
) -> None:
    user = f"u-{uid}"
    with running(db_url, server) as http:
        cid = create(http, user)
        server.queue(
            Reply(content="a", usage=Usage(prompt_tokens=1000, completion_tokens=500)),
            Reply(content="b", usage=Usage(prompt_tokens=2000, completion_tokens=100)),
        )
        assert say(http, user, cid, "one").status_code == 200
        assert say(http, user, cid, "two", stream=True).status_code == 200
        usage = http.get("/usage", headers=as_user(user)).json()
        assert (usage["requests"], usage["prompt_tokens"], usage["completion_tokens"]) == (
            2,
            3000,
            600,
        )
        # 3000 x $0.15 + 600 x $0.60 per 1M tokens
        assert Decimal(usage["cost_usd"]) == Decimal("0.00081")
        assert usage["unpriced_requests"] == 0
        assert http.get("/usage", headers=as_user(f"other-{uid}")).json()["requests"] == 0


def test_window_endpoint_explains_what_the_next_turn_sends(
    db_url: str, server: FakeOpenAI, uid: str
) -> None:
    user = f"u-{uid}"
    with running(db_url, server, budget_tokens=400, max_tokens=100) as http:
        cid = create(http, user, system="Answer in one line.")
        for i in range(6):
            words = " ".join(f"word{i}x{k}" for k in range(30))
            assert say(http, user, cid, f"question {i}: {words}").status_code == 200

        r = http.get(f"/conversations/{cid}/window", headers=as_user(user))
        assert r.status_code == 200, r.text
        w = r.json()
        assert w["model"] == MODEL
        assert w["allowed"] == 300  # the budget minus the reply's max_tokens
        assert w["prompt_tokens"] <= 300
        assert w["prompt_tokens"] == cl.count_tokens(w["messages"], MODEL)
        assert w["prefix"] == {"first": 1, "last": 1, "count": 1, "tokens": w["prefix"]["tokens"]}
        assert w["dropped"]["count"] > 0 and w["kept"]["count"] > 0
        assert w["kept"]["last"] == 13  # the newest message
        assert w["dropped"]["first"] == 2 and w["dropped"]["last"] + 1 == w["kept"]["first"]
        assert w["summarized"]["count"] == 0 and w["summary"] is None
        assert w["messages"][0] == {"role": "system", "content": "Answer in one line."}
        assert w["messages"][1]["role"] == "user"  # whole rounds only
        assert w["text"].startswith(f"window for {MODEL}:")

        assert_like_the_docs(w)

        # and the last turn sent a window within the same budget
        last = server.last_request
        assert cl.count_tokens(last["messages"], MODEL) <= 300
        assert len(last["messages"]) < 12


DOCS_PAGE = EXAMPLE.parents[1] / "docs" / "recipes" / "fastapi.md"


def _shape(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return "list"
    return type(value).__name__


def assert_like_the_docs(actual: dict[str, Any]) -> None:
    """docs/recipes/fastapi.md prints the response of this very scenario: the same fields,
    of the same types, and the same figures (its messages and text are abbreviated)."""
    page = DOCS_PAGE.read_text()
    start = page.index("```json\n", page.index("## Debugging a window")) + len("```json\n")
    documented = json.loads(page[start : page.index("```", start)])
    assert _shape(documented) == _shape(actual)
    abbreviated = {"messages", "text"}
    figures = {k: v for k, v in actual.items() if k not in abbreviated}
    assert {k: v for k, v in documented.items() if k not in abbreviated} == figures
    assert actual["text"].startswith(documented["text"].removesuffix("..."))


def test_with_a_summary_model_what_leaves_the_window_is_summarised(
    db_url: str, server: FakeOpenAI, uid: str
) -> None:
    user, summarizer = f"u-{uid}", "gpt-4.1-mini"

    def respond(body: dict[str, Any]) -> str:
        if body["model"] == summarizer:
            return f"SUMMARY after {body['messages'][1]['content'].count('user:')} questions"
        return "ok"

    server.responder = respond
    settings = {"budget_tokens": 400, "max_tokens": 100, "summary_model": summarizer}
    with running(db_url, server, **settings) as http:
        cid = create(http, user, system="Answer in one line.")
        for i in range(6):
            words = " ".join(f"word{i}x{k}" for k in range(30))
            assert say(http, user, cid, f"question {i}: {words}").status_code == 200

        folds = [r for r in server.requests if r["model"] == summarizer]
        assert folds, "no summary was written"
        last = server.last_request
        assert last["model"] == MODEL
        assert last["messages"][1]["content"].startswith("Summary of the earlier conversation:")
        assert "SUMMARY after" in last["messages"][1]["content"]
        assert cl.count_tokens(last["messages"], MODEL) <= 300

        w = http.get(f"/conversations/{cid}/window", headers=as_user(user)).json()
        assert w["summary"] is not None and w["summary"]["text"].startswith("SUMMARY after")
        assert w["summarized"]["first"] == 2 and w["summarized"]["count"] > 0
        assert w["prompt_tokens"] <= 300
        assert [m["role"] for m in w["messages"][:3]] == ["system", "system", "user"]
        # the summarizer's calls are billed too, and count against the user's budget
        assert http.get("/usage", headers=as_user(user)).json()["requests"] == 6 + len(folds)


# -- budgets ---------------------------------------------------------------------------------


def test_daily_usd_budget_refuses_before_calling_the_model(
    db_url: str, server: FakeOpenAI, uid: str
) -> None:
    alice, bob = f"alice-{uid}", f"bob-{uid}"
    with running(db_url, server, per_user_daily_usd="0.001") as http:
        cid = create(http, alice)
        # up to $0.0006 for max_tokens=1000 at $0.60/1M: allowed; it spends 615 micro-dollars
        server.queue(Reply(content="long", usage=Usage(prompt_tokens=100, completion_tokens=1000)))
        assert say(http, alice, cid, "first").status_code == 200
        assert len(server.requests) == 1

        r = say(http, alice, cid, "second")  # 615 spent + up to 600 more > 1000
        assert r.status_code == 429, r.text
        detail = r.json()["detail"]
        assert "over its budget" in detail["reason"]
        assert (detail["scope"], detail["unit"], detail["limit"]) == ("owner", "usd", 0.001)
        assert detail["used"] == 0.000615
        assert detail["used"] + detail["needed"] > detail["limit"]
        # the why, in words: what this turn may cost, what is spent, of what
        needed = f"${detail['needed']:.6f}"
        assert needed in detail["message"] and "$0.000615 of your $0.001" in detail["message"]
        assert len(server.requests) == 1  # refused before the request was sent
        r = say(http, alice, cid, "streamed", stream=True)
        assert r.status_code == 429
        assert len(server.requests) == 1
        # refused turns leave no trace: no user message without its answer
        stored = http.get(f"/conversations/{cid}", headers=as_user(alice)).json()["messages"]
        assert [m["role"] for m in stored] == ["user", "assistant"]

        usage = http.get("/usage", headers=as_user(alice)).json()
        assert Decimal(usage["budget_usd"]) == Decimal("0.001")
        assert Decimal(usage["cost_usd"]) == Decimal("0.000615")

        other = create(http, bob)  # the budget is per user
        assert say(http, bob, other, "hi").status_code == 200
        assert len(server.requests) == 2


def test_daily_token_budget(db_url: str, server: FakeOpenAI, uid: str) -> None:
    user = f"u-{uid}"
    with running(db_url, server, per_user_daily_tokens=500, max_tokens=1000) as http:
        cid = create(http, user)
        r = say(http, user, cid, "hello")  # the reply alone may take 1000 tokens
        assert r.status_code == 429
        assert "500" in r.json()["detail"]["reason"]
        assert server.requests == []
        assert http.get("/usage", headers=as_user(user)).json()["budget_tokens"] == 500
        assert http.get(f"/conversations/{cid}", headers=as_user(user)).json()["messages"] == []


def test_a_refusal_says_why_and_leaves_no_trace(db_url: str, server: FakeOpenAI, uid: str) -> None:
    """3,000 tokens a day, replies of up to 1,000: with 2,000 used, a turn whose prompt alone
    is a few tokens is refused, because the reply it may get is reserved in full. The 429
    says so with the figures, and the refused message is not stored: the next turn (here
    with no budget) sends user and assistant turns alternating."""
    user = f"u-{uid}"
    with running(db_url, server, per_user_daily_tokens=3000, max_tokens=1000) as http:
        cid = create(http, user, system="Be brief.")
        server.queue(Reply(content="hi", usage=Usage(prompt_tokens=1000, completion_tokens=1000)))
        assert say(http, user, cid, "first").status_code == 200

        r = say(http, user, cid, "second")
        assert r.status_code == 429, r.text
        detail = r.json()["detail"]
        assert (detail["unit"], detail["used"], detail["limit"]) == ("tokens", 2000, 3000)
        window = [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "hi"},
            {"role": "user", "content": "second"},
        ]
        prompt = cl.count_tokens(window, MODEL)
        assert detail["needed"] == prompt + 1000  # its prompt plus the reply's max_tokens
        assert detail["used"] + detail["needed"] > detail["limit"]
        message = detail["message"]
        assert f"up to {prompt + 1000:,} tokens" in message and "2,000 of your 3,000" in message
        assert "longest reply" in message
        assert len(server.requests) == 1
        page = DOCS_PAGE.read_text()
        start = page.index("```json\n", page.index("Three details")) + len("```json\n")
        documented = json.loads(page[start : page.index("```", start)])
        assert _shape(documented) == _shape(r.json())  # the docs show this very refusal
        assert documented["detail"]["needed"] == detail["needed"]
        assert documented["detail"]["message"] == message

        stored = http.get(f"/conversations/{cid}", headers=as_user(user)).json()
        assert [m["role"] for m in stored["messages"]] == ["system", "user", "assistant"]
        assert stored["message_count"] == 3

    with running(db_url, server) as http:  # the same conversation, no budget
        assert say(http, user, cid, "third").status_code == 200
        sent = [m["role"] for m in server.last_request["messages"]]
        assert sent == ["system", "user", "assistant", "user"]
        assert server.last_request["messages"][-1]["content"] == "third"


# -- bad input and failures ------------------------------------------------------------------


def test_bad_input_is_422_naming_the_field(db_url: str, server: FakeOpenAI, uid: str) -> None:
    user = f"u-{uid}"
    with running(db_url, server) as http:
        cid = create(http, user)
        url, headers = f"/conversations/{cid}/messages", as_user(user)

        r = http.post(url, json={}, headers=headers)
        assert r.status_code == 422 and locs(r) == [["body", "content"]]
        r = http.post(url, json={"content": ""}, headers=headers)
        assert r.status_code == 422 and locs(r) == [["body", "content"]]
        r = http.post(url, json={"content": "hi", "temperature": 2}, headers=headers)
        assert r.status_code == 422 and locs(r) == [["body", "temperature"]]
        r = http.post(url, content=b"{not json", headers={**headers, "content-type": "x/json"})
        assert r.status_code == 422
        # a lone surrogate is valid JSON but not text: refused, and the 422 still renders
        raw = b'{"content": "bad \\ud800 text"}'
        r = http.post(url, content=raw, headers={**headers, "content-type": "application/json"})
        assert r.status_code == 422 and locs(r) == [["body", "content"]]
        # chatledger's own checks: NUL is text no database stores as given
        r = http.post(url, json={"content": "bad \u0000 text"}, headers=headers)
        assert r.status_code == 422, r.text
        [problem] = r.json()["detail"]
        assert problem["type"] == "invalid_message" and problem["loc"][-1] == "content"
        assert "NUL" in problem["msg"]

        r = http.post("/conversations", json={"model": "gpt-5"}, headers=headers)
        assert r.status_code == 422 and locs(r) == [["body", "model"]]
        r = http.post("/conversations", json={"title": "t" * 1025}, headers=headers)
        assert r.status_code == 422 and locs(r) == [["body", "title"]]
        r = http.get("/conversations?limit=0", headers=headers)
        assert r.status_code == 422 and locs(r) == [["query", "limit"]]
        r = http.get("/conversations/%20padded", headers=headers)
        assert r.status_code == 422 and locs(r) == [["path", "conversation_id"]]

        # a message that can never fit the context is refused before it is stored
        r = say(http, user, cid, "word " * 20_000)
        assert r.status_code == 413
        assert r.json()["detail"]["allowed_tokens"] == 7000

        assert server.requests == []
        assert http.get(f"/conversations/{cid}", headers=headers).json()["messages"] == []


def test_provider_errors_are_502_and_the_user_message_stays(
    db_url: str, server: FakeOpenAI, uid: str
) -> None:
    user = f"u-{uid}"
    with running(db_url, server) as http:
        cid = create(http, user)
        server.queue(Reply.api_error(500, "the fake is down"))
        r = say(http, user, cid, "first try")
        assert r.status_code == 502
        assert r.json()["detail"]["upstream_status"] == 500

        # a stream that breaks: the deltas that arrived are what is stored, marked incomplete
        server.queue(Reply(content="one two three four five six seven", break_stream_after=4))
        r = say(http, user, cid, "second try", stream=True)
        assert r.status_code == 200
        events = sse_events(r.text)
        assert "[DONE]" not in events
        assert "error" in json.loads(events[-1])
        got = "".join(json.loads(e)["delta"] for e in events[:-1])
        assert got and "one two three four five six seven".startswith(got)

        messages = http.get(f"/conversations/{cid}", headers=as_user(user)).json()["messages"]
        assert messages == [
            {"role": "user", "content": "first try"},
            {"role": "user", "content": "second try"},
            {"role": "assistant", "content": got},
        ]
        assert say(http, user, cid, "third try").status_code == 200


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (cl.StorageError("database connection lost"), 503),
        (cl.ContextOverflowError(9000, 7000), 413),
        (cl.InvalidParameterError([("temperature", "must be at most 2")]), 422),
        (cl.PendingToolCallsError("c1", ("call_1",)), 409),
    ],
)
def test_other_errors_map_to_statuses(
    tmp_path: Path, server: FakeOpenAI, error: Exception, status: int
) -> None:
    llm = openai.AsyncOpenAI(base_url=server.url, api_key="test", max_retries=0)
    app: FastAPI = example.create_app(f"sqlite:///{tmp_path / 'app.db'}", llm)

    @app.get("/boom")
    async def boom() -> None:
        raise error

    with TestClient(app) as http:
        r = http.get("/boom")
        assert r.status_code == status
        if status == 503:
            assert r.headers["retry-after"] == "1"
        if status == 422:
            assert locs(r) == [["params", "temperature"]]
        assert http.portal is not None
        http.portal.call(llm.close)


# -- erasure ---------------------------------------------------------------------------------


def test_delete_and_erase_me(db_url: str, server: FakeOpenAI, uid: str) -> None:
    alice, bob = f"alice-{uid}", f"bob-{uid}"
    with running(db_url, server) as http:
        first, second, third = create(http, alice), create(http, alice), create(http, alice)
        kept = create(http, bob)
        for user, cid in [(alice, first), (alice, second), (bob, kept)]:
            assert say(http, user, cid, "hello").status_code == 200

        assert http.delete(f"/conversations/{third}", headers=as_user(alice)).status_code == 204
        assert http.get(f"/conversations/{third}", headers=as_user(alice)).status_code == 404
        assert http.delete(f"/conversations/{third}", headers=as_user(alice)).status_code == 404

        r = http.delete("/me", headers=as_user(alice))
        assert r.status_code == 200 and r.json() == {"deleted_conversations": 2}
        assert http.get("/conversations", headers=as_user(alice)).json() == []
        assert http.get(f"/conversations/{first}", headers=as_user(alice)).status_code == 404
        assert http.get("/usage", headers=as_user(alice)).json()["requests"] == 0
        assert http.delete("/me", headers=as_user(alice)).json() == {"deleted_conversations": 0}

        theirs = http.get(f"/conversations/{kept}", headers=as_user(bob)).json()
        assert len(theirs["messages"]) == 2
        assert http.get("/usage", headers=as_user(bob)).json()["requests"] == 1


# -- configuration ---------------------------------------------------------------------------


def test_defaults_come_from_the_environment(
    tmp_path: Path, server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch, uid: str
) -> None:
    url = f"sqlite:///{tmp_path / 'env.db'}"
    monkeypatch.setenv("CHATLEDGER_URL", url)
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    monkeypatch.setenv("OPENAI_API_KEY", "from-env")
    app = example.create_app()  # its own client, made at startup and closed at shutdown
    with TestClient(app) as http:
        cid = create(http, uid)
        assert say(http, uid, cid, "hi").json()["message"]["content"] == "echo: hi"
    assert server.log[-1].headers["authorization"] == "Bearer from-env"
    with cl.Ledger(url) as ledger:
        assert [c.id for c in ledger.conversations(owner=uid)] == [cid]
    assert example.app.title == "chatledger example"  # the module-level app for uvicorn


# -- a real server -----------------------------------------------------------------------------


def test_a_client_leaving_mid_stream_stops_the_model_and_keeps_what_arrived(
    tmp_path: Path, server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch, uid: str
) -> None:
    """Under uvicorn a disconnect cancels the response; the reply is still recorded."""
    uvicorn = pytest.importorskip("uvicorn")
    import httpx2

    url = f"sqlite:///{tmp_path / 'live.db'}"
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    config = uvicorn.Config(example.create_app(url), host="127.0.0.1", port=0, log_level="error")
    live = uvicorn.Server(config)
    thread = threading.Thread(target=live.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not live.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.01)
        port = live.servers[0].sockets[0].getsockname()[1]
        base, headers = f"http://127.0.0.1:{port}", as_user(uid)
        cid = httpx2.post(f"{base}/conversations", json={}, headers=headers).json()["id"]

        words = [f"w{i}" for i in range(200)]
        server.queue(Reply(content=" ".join(words), chunk_delay=0.02))
        received = []
        body = {"content": "count slowly", "stream": True}
        with httpx2.stream(
            "POST", f"{base}/conversations/{cid}/messages", json=body, headers=headers
        ) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line:
                    received.append(json.loads(line.removeprefix("data: "))["delta"])
                if len(received) == 5:
                    break  # and leave

        with cl.Ledger(url) as ledger:
            conv = ledger.get(cid, owner=uid)
            while len(conv.records()) < 2:
                assert time.monotonic() < deadline + 10, "the partial reply was not recorded"
                time.sleep(0.05)
            reply = conv.records()[-1]
            assert reply.role == "assistant" and reply.status == "incomplete"
            stored = reply.message["content"]
            assert stored.startswith("".join(received))
            assert " ".join(words).startswith(stored)
            assert len(stored.split()) < len(words) // 2  # the model's stream was stopped
            [usage] = conv.usage_records()
            assert usage.finish_reason == "incomplete"
    finally:
        live.should_exit = True
        thread.join(timeout=10)
