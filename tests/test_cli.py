"""The ``chatledger`` command, run as a user runs it (a subprocess), and in-process for chat."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import chatledger as cl
from chatledger import cli
from openai_server import FakeOpenAI, Reply


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chatledger", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_demo_runs_offline_and_windows_turn_by_turn() -> None:
    done = run("demo", "--turns", "12", "--budget", "1200")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    rows = [line.split() for line in lines if line[:4].strip().isdigit()]
    assert len(rows) == 12
    prompts = [int(r[3]) for r in rows]
    assert max(prompts) <= 1200 - 200  # the budget, minus the reserve, held every turn
    assert any(r[4] != "-" for r in rows)  # something was summarised
    assert "The last window, explained" in done.stdout and "summary" in done.stdout
    assert "$" in lines[-20:][0] or any("$" in line for line in lines)


def test_inspection_commands(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    with cl.Ledger(url) as led:
        conv = led.conversation("c1", owner="ann", model="gpt-4o", system="sys")
        conv.extend(
            [
                {"role": "user", "content": "hello"},
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "t",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "t", "content": "42"},
                {"role": "assistant", "content": "the answer is 42"},
            ]
        )
        led.conversation("c2", owner="bob").append({"role": "user", "content": "yo"})
    ls = run("--db", url, "ls", "--owner", "ann")
    assert ls.returncode == 0 and "c1" in ls.stdout and "c2" not in ls.stdout
    show = run("--db", url, "show", "c1", "--owner", "ann")  # a conversation is (owner, id)
    assert "f({})" in show.stdout and "the answer is 42" in show.stdout
    window = run("--db", url, "window", "c1", "--owner", "ann", "--budget", "60", "--reserve", "0")
    assert window.returncode == 0 and "kept" in window.stdout
    stats = run("--db", url, "stats")
    assert "conversations  2" in stats.stdout
    missing = run("--db", url, "show", "nope")
    assert missing.returncode == 1 and "not found" in missing.stderr

    exported = tmp_path / "out.jsonl"
    assert run("--db", url, "export", "-o", str(exported)).returncode == 0
    rows = [json.loads(line) for line in exported.read_text().splitlines()]
    assert sorted(len(r["messages"]) for r in rows) == [1, 5]

    url2 = f"sqlite:///{tmp_path / 'copy.db'}"
    imported = run("--db", url2, "import", str(exported), "--owner", "carol")
    assert imported.returncode == 0, imported.stderr
    assert "imported 2 conversations" in imported.stderr
    with cl.Ledger(url2) as led:
        copies = led.conversations(owner="carol")
        assert sorted(c.message_count for c in copies) == [1, 5]
        got = sorted(json.dumps(led.get(c.id, owner="carol").messages()) for c in copies)
        assert got == sorted(json.dumps(r["messages"]) for r in rows)

    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"messages": [{"role": "user", "content": "ok"}]}\n{"messages": [{"role": "x"}]}\n'
    )
    failed = run("--db", url2, "import", str(bad))
    assert failed.returncode == 1 and "bad.jsonl:2" in failed.stderr and "role" in failed.stderr
    skipped = run("--db", url2, "import", str(bad), "--skip-invalid")
    assert skipped.returncode == 0 and "skipped 1" in skipped.stderr

    assert run("--db", url, "rm", "--all-of-owner", "ann").returncode == 2  # needs --yes
    assert run("--db", url, "rm", "--all-of-owner", "ann", "--yes").returncode == 0
    assert "c1" not in run("--db", url, "ls").stdout


def test_terminal_chat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'chat.db'}"
    with FakeOpenAI() as server:
        server.queue(Reply(content="Hello from the model."), Reply(content="Second answer."))
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        monkeypatch.setenv("OPENAI_API_KEY", "test")
        stdin = io.StringIO("hi there\n/window\nanother\n/stats\n/quit\n")
        args = cli.build_parser().parse_args(
            ["--db", url, "chat", "--id", "t1", "--budget", "2000"]
        )
        assert cli.cmd_chat(args, stdin=stdin) == 0
    out = capsys.readouterr().out
    assert "Hello from the model." in out and "Second answer." in out
    assert "prompt tokens" in out and "2 requests" in out
    assert server.requests[1]["messages"][-3:] == [
        {"role": "user", "content": "hi there"},
        {"role": "assistant", "content": "Hello from the model."},
        {"role": "user", "content": "another"},
    ]
    with cl.Ledger(url) as led:
        assert len(led.get("t1").messages()) == 5


def test_history_commands(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    with cl.Ledger(url) as led:
        conv = led.conversation("c", owner="o", system="sys")
        conv.extend([{"role": "user", "content": f"q{i}"} for i in range(4)])
    popped = run("--db", url, "pop", "c", "--owner", "o")
    assert popped.returncode == 0 and "removed seq 5 (user)" in popped.stdout
    forked = run("--db", url, "fork", "c", "c2", "--owner", "o", "--at", "2")
    assert forked.returncode == 0 and "into c2 (2 messages)" in forked.stdout
    shown = run("--db", url, "show", "c2", "--owner", "o")
    assert shown.stdout.splitlines()[0] == "forked from c at seq 2"
    rounds = run("--db", url, "pop", "c", "--owner", "o", "--rounds", "9")
    assert rounds.returncode == 0 and rounds.stdout.count("removed seq") == 3
    empty = run("--db", url, "pop", "c2", "--owner", "o", "--rounds", "5")
    assert "removed seq 2 (user)" in empty.stdout
    with cl.Ledger(url) as led:
        assert led.get("c", owner="o").messages() == [{"role": "system", "content": "sys"}]
