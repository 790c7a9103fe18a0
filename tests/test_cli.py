"""The ``chatledger`` command. Exit statuses, one-line errors, JSON-only output, signals and
pipes are tested as a user meets them (a subprocess, on SQLite); what each command prints is
tested in-process through ``main([...])``, on every backend."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import chatledger as cl
from chatledger.cli import build_parser, main
from openai_server import FakeOpenAI, Reply

TOOL_HISTORY: list[dict[str, Any]] = [
    {"role": "user", "content": "hello"},
    {
        "role": "assistant",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "lookup", "arguments": '{"q": "answer"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "forty-two"},
    {"role": "assistant", "content": "the answer is 42"},
]


def run(
    *args: str,
    cwd: Path | None = None,
    stdin: bytes | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "chatledger", *args],
        capture_output=True,
        input=stdin,
        timeout=120,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


def one_line_error(done: subprocess.CompletedProcess[str], *words: str) -> None:
    """Failed, with exactly one line on stderr (naming ``words``) and nothing on stdout."""
    assert done.returncode != 0, done
    assert done.stdout == "", done.stdout
    assert done.stderr.startswith("chatledger: ") and done.stderr.count("\n") == 1, done.stderr
    for word in words:
        assert word in done.stderr, done.stderr


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


@dataclass(frozen=True)
class Sample:
    """c1 of ann (a tool exchange, a title), c2 of bob; owners of this test alone, since the
    server databases are shared by every test of a run."""

    url: str
    ann: str
    bob: str


@pytest.fixture
def sample(db_url: str, uid: str) -> Sample:
    ann, bob = f"ann-{uid}", f"bob-{uid}"
    with cl.Ledger(db_url) as led:
        conv = led.conversation("c1", owner=ann, model="gpt-4o", system="sys", title="Trip")
        conv.extend(TOOL_HISTORY)
        led.conversation("c2", owner=bob).append({"role": "user", "content": "yo"})
    return Sample(db_url, ann, bob)


# --- as a user runs it: subprocesses on SQLite ------------------------------------------------


def test_demo_writes_where_ls_looks(tmp_path: Path) -> None:
    done = run("demo", "--turns", "16", "--budget", "1500", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "\x1b[" not in done.stdout  # piped: no colour codes
    lines = done.stdout.splitlines()
    rows = [line.split() for line in lines if line[:4].strip().isdigit()]
    assert len(rows) == 16
    assert max(int(r[3]) for r in rows) <= 1500 - 200  # the budget, minus the reserve
    assert any(r[4] != "-" for r in rows) and any(r[5] != "-" for r in rows)  # folded, dropped
    assert 'weather({"city":' in done.stdout  # the tool calls of each turn
    assert "columns:" in done.stdout  # the legend
    assert "summarised" not in done.stdout and "summarized" in done.stdout
    # the closing account is the window of the last turn, not a later one
    explained = done.stdout[done.stdout.index("window sent on the last turn") :]
    last = rows[-1]
    assert f"{last[2]} messages, {last[3]} prompt tokens" in explained
    assert "demo-trip" in lines[-1] and "chatledger.db" in lines[-1]
    listed = run("ls", cwd=tmp_path)
    assert listed.returncode == 0 and "demo-trip" in listed.stdout
    assert "demo: a trip planned day by day" in listed.stdout  # titles are listed


def test_failures_are_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'e.db'}"
    one_line_error(run("--db", "foo://x", "ls"), "foo")
    one_line_error(run("ls", "--db", "mysql+mysqldb://u@127.0.0.1/x"), "pip install")
    one_line_error(run("import", "-", "--db", url, stdin=b"\xff\xfe\n"), "UTF-8")
    upgraded = run("db", "upgrade", "--db", url)
    assert upgraded.returncode == 0 and "->" in upgraded.stdout, upgraded.stderr


def test_more_failures_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The same handlers, without a process each."""
    url = f"sqlite:///{tmp_path / 'e.db'}"
    for args, word in [
        (["ls", "--db", "notaurl"], "URL"),
        (["import", str(tmp_path / "missing.jsonl"), "--db", url], "missing.jsonl"),
        (["show", "nope", "--db", url, "--json"], "not found"),
        (["db", "upgrade", "9999", "--db", url], "9999"),
        (["stats", "--days", "-1", "--db", url], "--days"),
    ]:
        status, out, err = cli(capsys, *args)
        assert status == 1 and out == "", args
        assert err.startswith("chatledger: ") and err.count("\n") == 1 and word in err, err
    status, _, err = cli(capsys, "ls", "--no-such-option")
    assert status == 2 and "usage:" in err


def test_interrupt_exits_130_with_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "OPENAI_API_KEY": "x"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "chatledger", "chat", "--db", f"sqlite:///{tmp_path / 'i.db'}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith(b"conversation ")  # then it waits for input
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err.decode() == "chatledger: interrupted\n"


def on_terminal(*args: str) -> bytes:
    """What the command writes to a (pseudo-)terminal 60 columns wide, stdout and stderr."""
    import pty

    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "chatledger", *args],
        stdout=follower,
        stderr=follower,
        env={**os.environ, "COLUMNS": "60", "TERM": "xterm-256color"},
    )
    os.close(follower)
    seen = b""
    with contextlib.suppress(OSError):  # EIO once the command has exited and all is read
        while chunk := os.read(leader, 65536):
            seen += chunk
    os.close(leader)
    assert proc.wait(timeout=120) == 0, seen
    return seen


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_a_terminal_gets_colour_whole_ids_and_progress(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 't.db'}"
    long_id = "conversation-" + "x" * 60
    with cl.Ledger(url) as led:
        led.conversation(long_id, title="a title long enough to need wrapping " * 3)
    listed = on_terminal("ls", "--db", url)
    assert b"\x1b[" in listed, listed  # styled
    assert long_id.encode() in listed  # never cut, however narrow the terminal
    dump = tmp_path / "dump.jsonl"
    subprocess.run(  # the export's progress went to a pipe: none drawn
        [sys.executable, "-m", "chatledger", "export", "-o", str(dump), "--db", url], check=True
    )
    imported = on_terminal("import", str(dump), "--db", f"sqlite:///{tmp_path / 'copy.db'}")
    assert b"importing" in imported and b"imported 1 conversations" in imported


def test_broken_pipe_is_silent(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    with cl.Ledger(url) as led:
        led.conversation("big").extend(
            {"role": "user", "content": f"{i} " + "word " * 200} for i in range(300)
        )
    proc = subprocess.Popen(
        [sys.executable, "-m", "chatledger", "show", "big", "--db", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()  # `| head -1`
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0
    assert err == b""


def test_json_is_json_only_and_globals_follow_the_command(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'j.db'}"
    with cl.Ledger(url) as led:
        led.conversation("c1", owner="ann", title="T").extend(TOOL_HISTORY)
        led.conversation("c2", owner="ann").append({"role": "user", "content": "x"})
    listed = run("ls", "--json", "--limit", "1", "--db", url, "--owner", "ann")
    assert listed.returncode == 0
    assert [json.loads(line)["owner"] for line in listed.stdout.splitlines()] == ["ann"]
    assert "--offset 1" in listed.stderr  # the cap is said, on stderr
    shown = run("show", "c1", "--json", "--owner", "ann", "--db", url)
    assert json.loads(shown.stdout)["messages"][1]["tool_calls"][0]["id"] == "call_1"


def test_export_then_import_into_a_fresh_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, copy = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    with cl.Ledger(source) as led:
        led.conversation("c1", owner="ann", title="T").extend(TOOL_HISTORY)
        led.conversation("c2").append({"role": "user", "content": "x"})
    dump = tmp_path / "dump.jsonl"
    exported = run("export", "-o", str(dump), "--db", source)
    assert exported.returncode == 0 and "exported 2" in exported.stderr, exported.stderr
    first = run("import", str(dump), "--db", copy)
    assert first.returncode == 0 and "imported 2" in first.stderr, first.stderr
    assert first.stderr.count("\n") == 1 and "\x1b" not in first.stderr  # no bar when piped
    again = run("import", "-", "--db", copy, "--json", stdin=dump.read_bytes())
    assert again.returncode == 0
    assert json.loads(again.stdout)["unchanged"] == 2  # stdout holds the report, only
    with cl.Ledger(copy) as led:
        assert led.get("c1", owner="ann").messages() == TOOL_HISTORY
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "ok"}]}\n{"messages": [{"x": 1}]}\n')
    assert main(["import", str(bad), "--format", "finetune", "--db", copy]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:2: refused" in err and "imported 1" in err


# --- what the commands print: in-process, every backend ---------------------------------------


def test_show_prints_tool_calls_results_and_lineage(
    sample: Sample, capsys: pytest.CaptureFixture[str]
) -> None:
    g = ("--owner", sample.ann, "--db", sample.url)
    status, out, _ = cli(capsys, "show", "c1", *g)
    assert status == 0
    assert 'lookup({"q": "answer"})' in out and "call_1" in out
    assert "result of call_1" in out and "forty-two" in out and "the answer is 42" in out
    assert cli(capsys, "fork", "c1", "c1b", "--at", "3", *g)[0] == 0
    _, out, _ = cli(capsys, "show", "c1b", *g)
    assert out.splitlines()[0] == "forked from c1 at seq 3"


def test_ls_titles_owners_and_limits(sample: Sample, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = cli(capsys, "ls", "--limit", "10000", "--db", sample.url)
    assert status == 0 and sample.ann in out and sample.bob in out and "Trip" in out
    _, out, _ = cli(capsys, "ls", "--owner", sample.ann, "--json", "--db", sample.url)
    assert [(c["id"], c["title"]) for c in map(json.loads, out.splitlines())] == [("c1", "Trip")]
    with cl.Ledger(sample.url) as led:
        led.conversation("c3", owner=sample.ann).append({"role": "user", "content": "x"})
    _, out, err = cli(capsys, "ls", "--limit", "1", "--owner", sample.ann, "--db", sample.url)
    assert len([line for line in out.splitlines()[1:] if line.strip()]) == 1
    assert "there are more" in err and "--limit" in err and "--offset 1" in err
    _, out, err = cli(capsys, "ls", "--owner", f"{sample.ann}-nobody", "--db", sample.url)
    assert "no conversations" in err


def test_stats_scope_and_days(sample: Sample, capsys: pytest.CaptureFixture[str]) -> None:
    with cl.Ledger(sample.url) as led:
        conv = led.get("c1", owner=sample.ann)
        conv.append({"role": "user", "content": "again"})
        conv.record(
            {
                "id": "r1",
                "model": "gpt-4o",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 2},
            }
        )
        led.conversation("c2", owner=sample.ann).append({"role": "user", "content": "yo"})

    def stats(*args: str) -> dict[str, Any]:
        status, out, _ = cli(capsys, "stats", "--json", "--owner", sample.ann, *args)
        assert status == 0
        found: dict[str, Any] = json.loads(out)
        return found

    everything = stats("--db", sample.url)
    assert everything["conversations"] == 2 and everything["requests"] == 1
    scoped = stats("--id", "c2", "--db", sample.url)
    assert scoped["conversations"] == 1 and scoped["messages"] == 1 and scoped["requests"] == 0
    assert stats("--days", "0", "--db", sample.url)["requests"] == 0  # zero days: nothing
    assert stats("--days", "1", "--db", sample.url)["requests"] == 1
    _, out, _ = cli(capsys, "stats", "--owner", sample.ann, "--db", sample.url)
    assert "requests       1" in out and "conversations  2" in out


def test_window_json_is_one_document(sample: Sample, capsys: pytest.CaptureFixture[str]) -> None:
    args = ("window", "c1", "--owner", sample.ann, "--budget", "60", "--reserve", "0")
    status, out, _ = cli(capsys, *args, "--db", sample.url)
    assert status == 0 and "kept" in out
    _, out, _ = cli(capsys, *args, "--json", "--db", sample.url)
    doc = json.loads(out)
    assert doc["messages"][0] == {"role": "system", "content": "sys"} and "kept" in doc


def test_history_commands(db_url: str, uid: str, capsys: pytest.CaptureFixture[str]) -> None:
    with cl.Ledger(db_url) as led:
        conv = led.conversation("c", owner=uid, system="sys")
        conv.extend([{"role": "user", "content": f"q{i}"} for i in range(4)])
    g = ("--owner", uid, "--db", db_url)
    assert "removed seq 5 (user)" in cli(capsys, "pop", "c", *g)[1]
    _, out, _ = cli(capsys, "fork", "c", "c2", "--at", "2", *g)
    assert "into c2 (2 messages)" in out
    _, out, _ = cli(capsys, "truncate", "c", "3", "--json", *g)
    assert [r["seq"] for r in json.loads(out)["removed"]] == [4]
    _, out, _ = cli(capsys, "rewind", "c", *g)
    assert "removed seq 3 (user)" in out
    status, out, _ = cli(capsys, "edit", "c", "2", "first, edited", *g)
    assert status == 0 and "replaced seq 2" in out
    assert cli(capsys, "pop", "c", "--rounds", "9", *g)[1].count("removed seq") == 1
    status, out, err = cli(capsys, "pop", "c", *g)  # only the system prompt is left
    assert status == 0 and "removed seq 1" in out
    status, out, err = cli(capsys, "pop", "c", *g)
    assert status == 0 and out == "" and "nothing to remove" in err
    with cl.Ledger(db_url) as led:
        assert led.get("c", owner=uid).messages() == []
        assert led.get("c2", owner=uid).messages()[-1] == {"role": "user", "content": "q0"}


def test_rm_and_delete_idle(sample: Sample, capsys: pytest.CaptureFixture[str]) -> None:
    db = ("--db", sample.url)
    status, _, err = cli(capsys, "rm", *db)
    assert status == 2 and "nothing to delete" in err
    assert cli(capsys, "rm", "--all-of-owner", sample.ann, *db)[0] == 2  # needs --yes
    status, out, _ = cli(capsys, "rm", "--all-of-owner", sample.ann, "--yes", *db)
    assert status == 0 and "deleted 1" in out
    status, _, err = cli(capsys, "rm", "--all-of-owner", sample.ann, "--yes", *db)
    assert status == 0 and "nothing to delete" in err
    assert cli(capsys, "rm", "nope", *db)[0] == 1
    idle = ("delete-idle", "--owner", sample.bob, *db)
    status, _, err = cli(capsys, *idle, "--days", "30")
    assert status == 0 and "nothing to delete" in err  # c2 is fresh
    time.sleep(1.1)  # MariaDB keeps whole seconds
    status, out, _ = cli(capsys, *idle, "--days", "0.00001", "--json")
    assert json.loads(out)["deleted"] == 1
    assert cli(capsys, *idle, "--days", "0")[0] == 1


def test_chat_continues_and_changes_the_model(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeOpenAI() as server:
        server.queue(Reply(content="Hello from the model."), Reply(content="Second answer."))
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        monkeypatch.setenv("OPENAI_API_KEY", "test")
        monkeypatch.setattr(sys, "stdin", io.StringIO("hi there\n/window\nanother\n/stats\n"))
        assert main(["--db", db_url, "chat", "--id", "t1", "--budget", "2000"]) == 0
        out = capsys.readouterr().out
        assert "Hello from the model." in out and "Second answer." in out
        assert "prompt tokens" in out and "2 requests" in out
        assert server.requests[1]["messages"][-3:] == [
            {"role": "user", "content": "hi there"},
            {"role": "assistant", "content": "Hello from the model."},
            {"role": "user", "content": "another"},
        ]
        monkeypatch.setattr(sys, "stdin", io.StringIO("/quit\n"))
        assert main(["chat", "--id", "t1", "--model", "gpt-4.1", "--db", db_url]) == 0
        assert "changed from gpt-4o-mini to gpt-4.1" in capsys.readouterr().out
    with cl.Ledger(db_url) as led:
        stored = led.get("t1")
        assert len(stored.messages()) == 5 and stored.model == "gpt-4.1"


def test_encrypt_and_rotate_keys_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """SQLite only: encrypting marks the whole database, and the server databases are shared
    by every test of a run."""
    url = f"sqlite:///{tmp_path / 'secret.db'}"
    with cl.Ledger(url) as led:
        led.conversation("a").append({"role": "user", "content": "secret words"})
    old, new = cl.Encryption.generate_key(), cl.Encryption.generate_key()
    status, _, err = cli(capsys, "db", "encrypt", "--db", url)
    assert status == 1 and "CHATLEDGER_KEYS" in err
    monkeypatch.setenv("CHATLEDGER_KEYS", old)
    assert cli(capsys, "db", "encrypt", "--db", url)[0] == 0
    assert b"secret words" not in (tmp_path / "secret.db").read_bytes()
    monkeypatch.setenv("CHATLEDGER_KEYS", f"{new},{old}")
    status, out, _ = cli(capsys, "db", "rotate-keys", "--json", "--db", url)
    assert status == 0 and json.loads(out)["tables"]["messages"]["rotated"] == 1
    monkeypatch.setenv("CHATLEDGER_KEYS", new)
    monkeypatch.setenv("CHATLEDGER_HASH_KEY", old)
    assert "secret words" in cli(capsys, "show", "a", "--db", url)[1]
    monkeypatch.delenv("CHATLEDGER_KEYS")
    status, _, err = cli(capsys, "ls", "--db", url)
    assert status == 1 and "encrypted" in err and err.count("\n") == 1


def test_the_last_resort_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A failure no handler expected (here a command that breaks) still prints one line,
    naming its type, and exits 1."""
    from chatledger.cli import inspection

    def broken(args: argparse.Namespace) -> int:
        raise RuntimeError("something\nwent wrong")

    monkeypatch.setattr(inspection, "cmd_ls", broken)
    status, out, err = cli(capsys, "ls", "--db", f"sqlite:///{tmp_path / 'x.db'}")
    assert status == 1 and out == ""
    assert err == "chatledger: unexpected RuntimeError: something; went wrong\n"


def test_every_option_is_explained() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in [("chatledger", parser), *sub.choices.items()]:
        text = command.format_help()
        assert "``" not in text and ":class:" not in text and ":meth:" not in text, name
        for action in command._actions:
            if not isinstance(action, argparse._SubParsersAction):
                assert action.help, f"{name} {action.dest} has no help"
        if name in ("chat", "window", "demo"):
            assert "(default: 512)" in text or "(default: 200)" in text, name


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("chatledger ")
