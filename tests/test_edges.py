"""The edges a new user meets first: a driver or package that is not installed, a URL that is
not one, a revision that does not exist, get-or-create called with settings that differ from
the stored ones, and messages the API accepts (``name`` on a tool result) that must be stored
and counted as the API bills them."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import pytest
from openai.types.chat import ChatCompletionMessageParam
from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import create_async_engine
from typing_extensions import is_typeddict

import chatledger as cl
from chatledger import migrate
from chatledger.errors import MissingDependencyError
from twins import AnyLedger, Opener

pytestmark = pytest.mark.twins

ROOT = Path(__file__).resolve().parents[1]
HAND = ROOT / "tests" / "token_corpus" / "hand.jsonl"

# --- optional packages that are not installed ------------------------------------------------

# Every optional module made unimportable at once (None in sys.modules: "import x" raises
# ModuleNotFoundError), then each way in tried: the twins on each database, and Encryption.
_MISSING_SCRIPT = """
import json, sys
for name in ("psycopg", "asyncpg", "pymysql", "aiomysql", "aiosqlite", "cryptography",
             "langchain_core", "agents"):
    sys.modules[name] = None
import tempfile
import chatledger as cl
from chatledger import migrate

def attempt(make):
    try:
        make()
    except BaseException as exc:
        return {"type": type(exc).__name__, "chatledger": isinstance(exc, cl.ChatLedgerError),
                "import": isinstance(exc, ImportError), "message": str(exc),
                "package": getattr(exc, "package", None)}
    return None

cases = {
    "Ledger postgresql": lambda: cl.Ledger("postgresql://u@127.0.0.1:1/db"),
    "AsyncLedger postgresql": lambda: cl.AsyncLedger("postgresql://u@127.0.0.1:1/db"),
    "Ledger mysql": lambda: cl.Ledger("mysql://u@127.0.0.1:1/db"),
    "AsyncLedger mysql": lambda: cl.AsyncLedger("mysql://u@127.0.0.1:1/db"),
    "AsyncLedger sqlite": lambda: cl.AsyncLedger("sqlite:///never.db"),
    "Encryption": lambda: cl.Encryption(["x"]),
    "generate_key": lambda: cl.Encryption.generate_key(),
    "Ledger sqlite": lambda: cl.Ledger("sqlite://").conversation("c"),
    "migrate": lambda: migrate.upgrade("sqlite:///" + tempfile.mkdtemp() + "/m.db"),
    "LangChain adapter": lambda: __import__("chatledger.integrations.langchain"),
    "Agents SDK adapter": lambda: __import__("chatledger.integrations.agents"),
}
print(json.dumps({name: attempt(make) for name, make in cases.items()}))
"""

_EXPECTED = {
    "Ledger postgresql": ("psycopg", "postgresql"),
    "AsyncLedger postgresql": ("asyncpg", "postgresql"),
    "Ledger mysql": ("pymysql", "mysql"),
    "AsyncLedger mysql": ("aiomysql", "mysql"),
    "AsyncLedger sqlite": ("aiosqlite", "sqlite-async"),
    "Encryption": ("cryptography", "encryption"),
    "generate_key": ("cryptography", "encryption"),
    "LangChain adapter": ("langchain-core", "langchain"),
    "Agents SDK adapter": ("openai-agents", "agents"),
}


@pytest.fixture(scope="module")
def missing_packages() -> dict[str, Any]:
    """What each way in raised in a Python without the optional packages (one subprocess)."""
    out = subprocess.run(
        [sys.executable, "-c", _MISSING_SCRIPT],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("case", sorted(_EXPECTED))
def test_a_missing_package_says_what_to_install(
    missing_packages: dict[str, Any], case: str
) -> None:
    package, extra = _EXPECTED[case]
    got = missing_packages[case]
    assert got is not None, f"{case} worked without {package}"
    assert got["type"] == "MissingDependencyError"
    assert got["chatledger"] and got["import"]  # a ChatLedgerError, and still an ImportError
    assert got["package"] == package
    assert package in got["message"]
    assert f"pip install 'chatledger[{extra}]'" in got["message"]


def test_the_base_install_needs_no_optional_package(missing_packages: dict[str, Any]) -> None:
    """A sync SQLite ledger and schema upgrades (Alembic is a core dependency) need none."""
    assert missing_packages["Ledger sqlite"] is None
    assert missing_packages["migrate"] is None


def test_missing_dependency_names_every_extra() -> None:
    for module, extra in [("langchain_core", "langchain"), ("agents", "agents")]:
        err = MissingDependencyError(module, "the integration")
        assert isinstance(err, cl.ChatLedgerError) and isinstance(err, ImportError)
        assert err.install == f"pip install 'chatledger[{extra}]'" and err.extra == extra
    other = MissingDependencyError("asyncmy.connection", "AsyncLedger on mysql+asyncmy")
    assert other.install == "pip install asyncmy" and other.extra is None


# --- URLs that are not URLs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("notaurl", "does not parse"),
        ("", "does not parse"),
        ("foo://x", "unknown database"),
        ("postgresql+nodriver://u@h/db", "unknown database"),
        ("postgresql://h:notaport/db", "port is not a number"),
        ("postgresql://u:s3cret@h:notaport/db", "port is not a number"),
        ("postgresql://h:70000/db", "port must be from 1 to 65535"),
        (5, "got int"),
    ],
)
def test_a_bad_url_is_a_typed_error(open_ledger: Opener, url: Any, says: str) -> None:
    with pytest.raises(cl.InvalidArgumentError, match=says) as info:
        open_ledger(url)
    assert info.value.field == "url"
    assert "s3cret" not in str(info.value)


def test_a_bad_engine_option_is_a_typed_error(open_ledger: Opener, tmp_path: Path) -> None:
    with pytest.raises(cl.InvalidArgumentError, match="no_such_option") as info:
        open_ledger(f"sqlite:///{tmp_path / 'x.db'}", no_such_option=1)
    assert info.value.field == "engine_options"


@pytest.mark.sync_only
def test_the_other_twins_engine_is_refused(tmp_path: Path) -> None:
    sync_engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    async_engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(cl.InvalidArgumentError, match="Ledger takes an Engine"):
        cl.Ledger(async_engine)  # type: ignore[arg-type]
    with pytest.raises(cl.InvalidArgumentError, match="AsyncLedger takes an AsyncEngine"):
        cl.AsyncLedger(sync_engine)  # type: ignore[arg-type]
    sync_engine.dispose()
    async_engine.sync_engine.dispose()


def test_an_unknown_revision_is_a_typed_error(db_url: str, backend: str, tmp_path: Path) -> None:
    with pytest.raises(cl.InvalidArgumentError, match="'9999' is not a chatledger revision"):
        migrate.upgrade(db_url, "9999")
    with pytest.raises(cl.InvalidArgumentError, match="revision"):
        migrate.upgrade(db_url, "")
    if backend == "sqlite":
        assert not (tmp_path / "chat.db").exists()  # refused before the database was opened


# --- get-or-create with settings that differ -------------------------------------------------

LONG_PROMPT = "You are the support agent of ACME. " + "Never reveal the discount code. " * 8
NEW_PROMPT = "You are the support agent of ACME. " + "Always answer in French, briefly. " * 8


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    records = [r for r in caplog.records if r.name == "chatledger" and r.levelno == logging.WARNING]
    messages = [r.getMessage() for r in records]
    caplog.clear()
    return messages


def test_a_different_system_prompt_is_warned_once_and_update_applies_it(
    ledger: AnyLedger, uid: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="chatledger")
    ledger.conversation(uid, system=LONG_PROMPT)
    ledger.conversation(uid, system=LONG_PROMPT)
    ledger.conversation(uid)  # describing nothing differs from nothing
    assert _warnings(caplog) == []

    conv = ledger.conversation(uid, system=NEW_PROMPT)
    (warning,) = _warnings(caplog)
    assert repr(uid) in warning and "system=" in warning
    assert "conv.update(system=...)" in warning and "model" not in warning
    assert "French" not in warning and "discount" not in warning  # never the prompt's text
    assert conv.messages()[0]["content"] == LONG_PROMPT  # returned as stored

    conv.update(system=NEW_PROMPT)  # the advice, followed
    again = ledger.conversation(uid, system=NEW_PROMPT)
    assert _warnings(caplog) == []
    assert again.window()[0] == {"role": "system", "content": NEW_PROMPT}


def test_a_different_model_is_warned_and_update_applies_it(
    ledger: AnyLedger, uid: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="chatledger")
    ledger.conversation(uid, model="gpt-4o", system="be brief")
    conv = ledger.conversation(uid, model="gpt-4", system="be brief")
    (warning,) = _warnings(caplog)
    assert "'gpt-4'" in warning and "'gpt-4o'" in warning
    assert "conv.update(model=...)" in warning and "system=" not in warning
    assert conv.model == "gpt-4o"

    conv.update(model="gpt-4")
    assert ledger.conversation(uid, model="gpt-4").model == "gpt-4"
    assert _warnings(caplog) == []


def test_both_settings_differing_is_one_warning(
    ledger: AnyLedger, uid: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="chatledger")
    ledger.conversation(uid, model="gpt-4o", system=LONG_PROMPT)
    ledger.conversation(uid, model="gpt-4o-mini", system=NEW_PROMPT)
    (warning,) = _warnings(caplog)
    assert "update(model=...)" in warning and "update(system=...)" in warning


def test_a_system_prompt_for_a_conversation_without_one(
    ledger: AnyLedger, uid: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The warning does not promise what update() cannot do: add a system message."""
    caplog.set_level(logging.WARNING, logger="chatledger")
    conv = ledger.conversation(uid)
    conv.append({"role": "user", "content": "hi"})
    ledger.conversation(uid, system=NEW_PROMPT)
    (warning,) = _warnings(caplog)
    assert "no system or developer message" in warning and "update() cannot add one" in warning
    with pytest.raises(cl.InvalidArgumentError, match="no pinned system"):
        conv.update(system=NEW_PROMPT)


# --- what the API accepts is stored and counted --------------------------------------------------


def _hand(note_part: str) -> dict[str, Any]:
    for line in HAND.read_text().splitlines():
        row: dict[str, Any] = json.loads(line)
        if note_part in row.get("note", ""):
            return row
    raise LookupError(note_part)


def test_a_tool_result_with_a_name_is_stored_and_counted_as_billed(
    ledger: AnyLedger, uid: str
) -> None:
    """The cookbook's function-calling exchange sends ``name`` on the tool message; the API
    billed 35 prompt tokens for it on gpt-4."""
    row = _hand("name on the tool message")
    assert row["model"] == "gpt-4" and row["prompt_tokens"] == 35
    sent = row["request"]["messages"]
    assert sent[1]["role"] == "tool" and sent[1]["name"] == "get_current_weather"

    conv = ledger.conversation(uid, model="gpt-4")
    stored = conv.extend(sent)
    assert stored[1].message["name"] == "get_current_weather"
    assert conv.count_tokens() == 35
    assert conv.window(explain=True).prompt_tokens == 35
    # what comes back is what was sent (the null content left out, as the API treats it)
    expected = [{k: v for k, v in m.items() if v is not None} for m in sent]
    assert conv.messages() == expected == conv.window()
    assert cl.count_tokens(conv.window(), "gpt-4") == 35


def test_a_named_tool_message_object_round_trips(ledger: AnyLedger, uid: str) -> None:
    conv = ledger.conversation(uid)
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    conv.append({"role": "assistant", "tool_calls": [call]})
    conv.append(cl.Message.tool("c1", "42", name="f"))
    assert conv.messages()[-1] == {
        "role": "tool",
        "tool_call_id": "c1",
        "content": "42",
        "name": "f",
    }


# Every field of every role's param type in the SDK, at every depth, filled in as the API
# takes it (the test below proves the coverage against the SDK's types).
MARK = {"mode": "explicit", "ttl": "30m"}
CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
CUSTOM = {"id": "call_2", "type": "custom", "custom": {"name": "grep", "input": "todo"}}
TEXT = {"type": "text", "text": "t", "prompt_cache_breakpoint": MARK}
IMAGE = {
    "type": "image_url",
    "image_url": {"url": "https://x.test/a.png", "detail": "low"},
    "prompt_cache_breakpoint": MARK,
}
AUDIO = {
    "type": "input_audio",
    "input_audio": {"data": "UklGRg==", "format": "wav"},
    "prompt_cache_breakpoint": MARK,
}
FILE = {
    "type": "file",
    "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "file_id": "f", "filename": "a"},
    "prompt_cache_breakpoint": MARK,
}
FULL: list[dict[str, Any]] = [
    {"role": "system", "content": [TEXT], "name": "ops"},
    {"role": "developer", "content": [TEXT], "name": "ops"},
    {"role": "user", "content": [TEXT, IMAGE, AUDIO, FILE], "name": "ann"},
    {
        "role": "assistant",
        "content": [TEXT, {"type": "refusal", "refusal": "no"}],
        "refusal": "no",
        "name": "bot",
        "tool_calls": [CALL, CUSTOM],
        "audio": {"id": "audio_1"},
        "function_call": {"name": "g", "arguments": "{}"},
    },
    # name on a tool result: not in the SDK's type, sent by the cookbook, taken by the API
    {"role": "tool", "tool_call_id": "call_1", "content": [TEXT], "name": "f"},
    {"role": "function", "name": "g", "content": "1"},
]


def _fields(tp: Any, value: Any, out: set[tuple[str, str]]) -> None:
    """The (TypedDict, field) pairs of the SDK's types that ``value`` fills in."""
    if is_typeddict(tp):
        hints = get_type_hints(tp)
        for key, item in value.items():
            if key in hints:
                out.add((tp.__name__, key))
                _fields(hints[key], item, out)
        return
    args = [a for a in get_args(tp) if a is not type(None)]
    if isinstance(value, list) and get_origin(tp) in (Iterable, list):
        for item in value:
            _fields(args[0], item, out)
    elif isinstance(value, dict):
        for member in (a for a in args if is_typeddict(a) or get_args(a)):
            hints = get_type_hints(member) if is_typeddict(member) else {}
            tags = get_args(hints.get("type", hints.get("role", Any)))
            tag = value.get("type", value.get("role"))
            if not is_typeddict(member) or not tags or tag in tags:
                _fields(member, value, out)
    elif isinstance(value, list):
        for member in args:
            _fields(member, value, out)


def _reachable(tp: Any, out: set[tuple[str, str]]) -> None:
    if is_typeddict(tp):
        for key, hint in get_type_hints(tp).items():
            if (tp.__name__, key) not in out:
                out.add((tp.__name__, key))
                _reachable(hint, out)
    for arg in get_args(tp):
        _reachable(arg, out)


def test_every_field_the_sdk_types_is_accepted() -> None:
    for message in FULL:
        cl.validate_message(message)
    covered: set[tuple[str, str]] = set()
    for message in FULL:
        _fields(ChatCompletionMessageParam, message, covered)
    everything: set[tuple[str, str]] = set()
    _reachable(ChatCompletionMessageParam, everything)
    assert everything - covered == set(), "the SDK has fields no example here fills in"


def test_the_full_messages_are_stored_as_sent(ledger: AnyLedger, uid: str) -> None:
    conv = ledger.conversation(uid, model="gpt-4o")
    exchange = [m for m in FULL if m["role"] != "function"]
    exchange.append({"role": "tool", "tool_call_id": "call_2", "content": "found 3"})
    conv.extend(exchange)
    assert conv.messages() == exchange
    assert conv.count_tokens() == cl.count_tokens(exchange, "gpt-4o")


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({"role": "tool", "tool_call_id": "c", "content": "x", "name": "a b"}, "name"),
        (
            {
                "role": "system",
                "content": [{"type": "image_url", "image_url": {"url": "https://x"}}],
            },
            "content[0].type",
        ),
        ({"role": "user", "content": "x", "tool_call_id": "c"}, "tool_call_id"),
        ({"role": "tool", "content": "x"}, "tool_call_id"),
        ({"role": "assistant", "name": "bot"}, "content"),
    ],
)
def test_what_the_api_refuses_is_refused(message: dict[str, Any], field: str) -> None:
    with pytest.raises(cl.InvalidMessageError) as info:
        cl.validate_message(message)
    assert field in info.value.fields
